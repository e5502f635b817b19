"""The graph under the recorder: parts, types, edges, options, secrets (README, "The graph")."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components.builders.dns_records import txt_value
from mailctl.plan import SECRET, UNKNOWN_TEXT, Plan
from mailctl.recorder import record
from mailctl.render import render_mermaid, render_text
from mailctl.stackfile import SECURE_PLACEHOLDER
from tests.conftest import one

COMPONENT_TYPES = {
    "ceres-mail:index:Platform",
    "ceres-mail:mail:Vm",
    "ceres-mail:mail:Dns",
    "ceres-mail:mail:Server",
    "ceres-mail:ceres:Smtp",
    "ceres-mail:keycloak:Smtp",
}
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
COMMAND = "command:remote:Command"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
K8S_SECRET = "kubernetes:core/v1:Secret"
REALM = "keycloak:index/realm:Realm"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"


def descendants(plan: Plan, urn: str) -> set[str]:
    out: set[str] = set()
    for child in plan.children(urn):
        out |= {child.urn} | descendants(plan, child.urn)
    return out


def reachable(plan: Plan, urn: str) -> set[str]:
    """Everything `urn` waits for, directly or through others."""
    by_urn, seen, todo = plan.by_urn(), set(), [urn]
    while todo:
        for dependency in by_urn[todo.pop()].dependencies:
            if dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return seen


@pytest.fixture(scope="module")
def applied():
    """prod recorded as after an apply (mock providers return real keys and a password), plus every
    resource's inputs before redaction, to compare secret values across resources."""
    raw: dict[str, dict] = {}
    plan = record(
        __import__("tests.conftest", fromlist=["PROJECT_DIR"]).PROJECT_DIR,
        "prod",
        known_outputs=True,
        raw_inputs_hook=lambda urn, type_, inputs: raw.__setitem__(urn, inputs),
    )
    return plan, raw


# --- parts and types -------------------------------------------------------------------------------


def test_every_part_is_a_component_with_its_stable_type(prod_plan):
    """The stack's parts are exactly the documented components, each under its stable type token."""
    assert {r.type for r in prod_plan.resources if not r.custom} == COMPONENT_TYPES


@pytest.mark.parametrize(
    "component_type, child_types",
    [
        ("ceres-mail:mail:Vm", {"proxmoxve:download/file:File", "proxmoxve:index/fileLegacy:FileLegacy", VM,
                                "proxmoxve:firewall/optionsLegacy:OptionsLegacy", "proxmoxve:firewall/rulesLegacy:RulesLegacy"}),
        ("ceres-mail:mail:Dns", {DNS_RECORD}),
        # the install commands, and the native stack's generated Roundcube des_key
        ("ceres-mail:mail:Server", {COMMAND, "random:index/randomPassword:RandomPassword"}),
        ("ceres-mail:ceres:Smtp", {K8S_SECRET}),
        ("ceres-mail:keycloak:Smtp", {REALM}),
    ],
)
def test_each_component_owns_real_resources_named_after_it(prod_plan, component_type, child_types):
    """Each component owns just the cloud resources it documents, each named with the component's name in front."""
    parent = one(prod_plan, component_type)
    children = prod_plan.children(parent.urn)
    assert {c.type for c in children} == child_types, parent.urn
    assert all(c.name.startswith(parent.name + "-") for c in children), [c.name for c in children]


def test_platform_owns_the_keys_and_password(prod_plan):
    """The platform owns the mailbox and backup passwords and four keys: RSA 2048 for DKIM, ed25519 for SSH."""
    platform = one(prod_plan, "ceres-mail:index:Platform")
    types = sorted(c.type for c in prod_plan.children(platform.urn) if c.custom)
    # the mailbox's and the backup repository's passwords; the host, deploy, DKIM and backup SSH keys
    assert types == sorted(["random:index/randomPassword:RandomPassword"] * 2 + [PRIVATE_KEY] * 4)
    algorithms = sorted(r.inputs.get("algorithm") + str(r.inputs.get("rsaBits", "")) for r in prod_plan.of_type(PRIVATE_KEY))
    assert algorithms == ["ED25519", "ED25519", "ED25519", "RSA2048"]


@pytest.mark.parametrize("address, nodes", [
    ("", None),
    ("10.0.0.2", [{"address": "10.0.0.2", "name": "pve1"}]),
    ("PVE1.lan", [{"address": "pve1.lan", "name": "pve1"}]),
])
def test_the_proxmox_provider_dials_the_ssh_address_the_deploy_pins(scratch_project, address, nodes):
    """proxmoxSshAddress, when set, is the address of proxmoxNode the snippet upload connects to; empty
    leaves it to what the Proxmox API reports."""
    from tests.conftest import stack_config

    config = {**stack_config("prod"), **({"ceres-mail:proxmoxSshAddress": address} if address else {})}
    plan = record(scratch_project("ssh", config), "ssh")
    [provider] = [r for r in plan.resources if r.type == "pulumi:providers:proxmoxve"]
    ssh = json.loads(provider.inputs["ssh"])
    assert (ssh.get("nodes"), ssh["agent"], ssh["username"]) == (nodes, True, "root")


def test_explicit_providers_sit_at_the_top_of_the_stack(prod_plan):
    """The engine steps providers in every operation, --target or not: under a component that a targeted
    operation does not create, they would refer to a parent missing from the state."""
    providers = [r for r in prod_plan.resources if r.type.startswith("pulumi:providers:")]
    assert len(providers) == 4
    assert all(r.parent is None for r in providers), [r.urn for r in providers]


@pytest.mark.parametrize(
    "prefix, package",
    [("proxmoxve:", "proxmoxve"), ("cloudflare:", "cloudflare"), ("kubernetes:", "kubernetes"), ("keycloak:", "keycloak")],
)
def test_cloud_resources_use_the_explicit_provider_of_their_cloud(prod_plan, prefix, package):
    """Every Proxmox, Cloudflare, Kubernetes and Keycloak resource goes through the stack's own provider, no default."""
    for resource in prod_plan.resources:
        if resource.type.startswith(prefix):
            assert resource.options["provider"] and resource.options["provider"].endswith(
                f"pulumi:providers:{package}::ceres-mail-provider-{package.removesuffix('ve')}"
            ), resource.urn


# --- edges -----------------------------------------------------------------------------------------


def test_dns_has_no_dependency_path_to_the_vm(prod_plan):
    """DNS needs only the address and the DKIM key: it runs in parallel with the VM."""
    vm_part = descendants(prod_plan, one(prod_plan, "ceres-mail:mail:Vm").urn)
    for record_ in prod_plan.of_type(DNS_RECORD):
        assert not reachable(prod_plan, record_.urn) & vm_part, record_.urn


def test_install_stages_run_in_order_after_the_vm_and_cloud_init(prod_plan):
    """wait-cloud-init -> access -> packages -> tls -> mail, each on the VM (data edge through its address)."""
    order = ["-wait-cloud-init", "-install-access", "-install-packages", "-install-tls", "-install-mail"]
    for before, after in zip(order, order[1:]):
        assert one(prod_plan, COMMAND, before).urn in one(prod_plan, COMMAND, after).dependencies, after
    for command in prod_plan.of_type(COMMAND):
        assert one(prod_plan, VM).urn in command.dependencies, command.urn


@pytest.mark.parametrize("type_", [K8S_SECRET, REALM])
def test_ceres_and_keycloak_wait_for_the_mailbox(prod_plan, type_):
    """CERES and Keycloak are switched to the mailbox only once the install created it."""
    assert one(prod_plan, COMMAND, "-install-mail").urn in one(prod_plan, type_).dependencies


def test_every_install_command_is_replaced_with_its_vm(prod_plan, mailcow_plan):
    """A replaced VM is a new, empty host at the same address: every command must run on it again."""
    for plan in (prod_plan, mailcow_plan):
        vm = one(plan, VM).urn
        commands = plan.of_type(COMMAND)
        assert commands and all(c.options["replaceWith"] == [vm] for c in commands)
    assert "[replaced with ceres-mail-vm-vm]" in render_text(prod_plan)


def test_a_vm_is_deleted_before_its_replacement_and_takes_its_firewall_along(prod_plan):
    """Two VMs cannot hold one static address: the old goes first, or the install would reach it. Proxmox
    removes a VM's firewall with the VM, so the firewall is created again for the new one."""
    vm = one(prod_plan, VM)
    assert vm.options["deleteBeforeReplace"] is True
    firewall = [r for r in prod_plan.resources if r.type.startswith("proxmoxve:firewall/")]
    assert len(firewall) == 2 and all(r.options["replaceWith"] == [vm.urn] for r in firewall)
    assert "deleteBeforeReplace" in render_text(prod_plan)


def dns_waited_for(plan: Plan) -> dict[str, set[tuple[str, str]]]:
    """resource name -> the (type, name) of the DNS records it waits for."""
    dns = {r.urn: (r.inputs["type"], r.inputs["name"]) for r in plan.of_type(DNS_RECORD)}
    return {r.name: {dns[d] for d in r.dependencies if d in dns} for r in plan.resources if set(r.dependencies) & set(dns)}


def test_only_the_certificate_stage_waits_for_the_names_it_certifies(multi_plan):
    """The http-01 challenge looks up the mail host and every mta-sts host: the stage that asks for the
    certificate waits for exactly those records, and nothing else waits for DNS."""
    assert dns_waited_for(multi_plan) == {
        "ceres-mail-server-install-tls": {
            ("A", "mail.example.com"), ("AAAA", "mail.example.com"),
            ("CNAME", "mta-sts.example.com"), ("CNAME", "mta-sts.example.org"),
        },
    }


def test_mailcow_asks_for_its_certificate_once_its_names_resolve(mailcow_plan):
    """On mailcow, only the mailcow stage waits for DNS: the records of the mail host and its mta-sts name."""
    [(stage, names)] = dns_waited_for(mailcow_plan).items()
    assert stage == "ceres-mail-server-install-mailcow"
    assert {name for _, name in names} == {"mail.example.com", "mta-sts.example.com"}


# --- inputs that matter to the operator --------------------------------------------------------------


def records(plan: Plan) -> dict[tuple[str, str], dict]:
    return {(r.inputs["type"], r.inputs["name"]): r.inputs for r in plan.of_type(DNS_RECORD)}


def test_prod_domain_gets_the_minimal_records(prod_plan):
    """The minimal records: A, MX 10, SPF `v=spf1 mx -all`, DKIM, DMARC p=none with rua/ruf and fo=1."""
    got = records(prod_plan)
    assert got[("A", "mail.example.com")]["content"] == "203.0.113.25"
    assert got[("AAAA", "mail.example.com")]["content"] == "2001:db8:25::25"
    assert got[("MX", "example.com")]["content"] == "mail.example.com"
    assert got[("MX", "example.com")]["priority"] == 10
    assert got[("TXT", "example.com")]["content"] == '"v=spf1 mx -all"'
    assert txt_value(got[("TXT", "_dmarc.example.com")]["content"]) == (
        "v=DMARC1; p=none; rua=mailto:dmarc@example.com; ruf=mailto:dmarc@example.com; fo=1"
    )
    assert got[("TXT", "ceres._domainkey.example.com")]["content"] == UNKNOWN_TEXT
    assert all(r["proxied"] is False for r in got.values())
    assert all(r["comment"] for r in got.values()), "every record says why it exists"


def test_staging_without_ipv6_has_no_aaaa(plans):
    """A stack without an IPv6 address, like staging, publishes no AAAA record."""
    assert not any(type_ == "AAAA" for type_, _ in records(plans["staging"]))


def test_dkim_record_publishes_the_stacks_rsa_2048_key(applied):
    """The DKIM record publishes the stack's own key: v=DKIM1, k=rsa, an RSA 2048 public key (RFC 6376 3.6.1)."""
    plan, _ = applied
    content = txt_value(records(plan)[("TXT", "ceres._domainkey.example.com")]["content"])
    tags = dict(part.strip().split("=", 1) for part in content.split(";"))
    assert tags["v"] == "DKIM1" and tags["k"] == "rsa"
    key = serialization.load_der_public_key(base64.b64decode(tags["p"]))
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048


def test_vm_is_sized_addressed_and_protected(prod_plan, plans):
    """The VM has its size, a mail data disk, static addresses, firewall and start on boot; only prod's is protected."""
    vm = one(prod_plan, VM).inputs
    assert vm["cpu"]["cores"] == 2 and vm["memory"]["dedicated"] == 2048
    assert [d["interface"] for d in vm["disks"]] == ["scsi0", "scsi1"], "mail data on its own disk"
    ip = vm["initialization"]["ipConfigs"][0]
    assert ip["ipv4"] == {"address": "203.0.113.25/24", "gateway": "203.0.113.1"}
    assert ip["ipv6"] == {"address": "2001:db8:25::25/64", "gateway": "2001:db8:25::1"}
    assert vm["onBoot"] is True and vm["agent"]["enabled"] is True
    assert vm["networkDevices"] == [{"bridge": "vmbr0", "firewall": True, "model": "virtio"}]
    assert vm["protection"] is True and one(prod_plan, VM).options["protect"] is True
    staging_vm = one(plans["staging"], VM)
    assert staging_vm.inputs["protection"] is False and staging_vm.options["protect"] is False


def test_ceres_secret_carries_the_ceres_variables_exactly(applied):
    """CERES's variables: names and value forms, CERES_MAIL_MODE=external; the password from the stack."""
    plan, raw = applied
    data = raw[one(plan, K8S_SECRET).urn]["stringData"]
    password = raw[one(plan, REALM).urn]["smtpServer"]["auth"]["password"]
    assert data == {
        "CERES_SMTP_HOST": "mail.example.com",
        "CERES_SMTP_PORT": "587",
        "CERES_SMTP_USER": "no-reply@example.com",
        "CERES_SMTP_PASS": password,
        "CERES_SMTP_STARTTLS": "true",
        "CERES_SMTP_TLS": "false",
        "CERES_MAIL_FROM": "no-reply@example.com",
        "CERES_MAIL_MODE": "external",
    }
    assert len(password) >= 32


def test_keycloak_realm_smtp_matches_ceres(applied):
    """Keycloak sends as CERES does: same host, port 587 with STARTTLS, sender and user; the password stays secret."""
    plan, _ = applied
    smtp = one(plan, REALM).inputs["smtpServer"]
    assert smtp["host"] == "mail.example.com" and smtp["port"] == "587"
    assert smtp["starttls"] is True and smtp["ssl"] is False
    assert smtp["from"] == "no-reply@example.com"
    assert smtp["auth"] == {"username": "no-reply@example.com", "password": SECRET}


def test_keycloak_realm_is_adopted_protected_and_only_smtp_is_owned(prod_plan):
    """The realm is CERES's: imported not created, protected, kept on delete, other fields ignored."""
    realm = one(prod_plan, REALM)
    assert realm.inputs["realm"] == "ceres"
    options = realm.options
    assert options["importId"] == "ceres"
    assert options["protect"] is True and options["retainOnDelete"] is True
    ignored = set(options["ignoreChanges"])
    assert {"displayName", "enabled", "loginTheme", "internationalization", "attributes"} <= ignored
    assert not ignored & {"smtpServer", "realm"}
    assert set(realm.inputs) - {"smtpServer", "realm"} == set(), "the realm declares nothing but SMTP"


def test_an_unprotected_stack_can_be_destroyed_and_still_keeps_the_realm(plans):
    """staging protects nothing (so `pulumi destroy` runs), yet destroying it never deletes CERES's realm."""
    options = one(plans["staging"], REALM).options
    assert options["protect"] is False and options["retainOnDelete"] is True


def test_ssh_connection_pins_the_host_key_planted_by_cloud_init(applied):
    """The install step trusts only the stack's own host key, the one cloud-init installs on the VM."""
    plan, raw = applied
    user_data = yaml.safe_load(raw[one(plan, "proxmoxve:index/fileLegacy:FileLegacy", "-user-data").urn]["sourceRaw"]["data"])
    vendor_data = yaml.safe_load(raw[one(plan, "proxmoxve:index/fileLegacy:FileLegacy", "-vendor-data").urn]["sourceRaw"]["data"])
    planted_private = serialization.load_ssh_private_key(vendor_data["ssh_keys"]["ed25519_private"].encode(), None)
    planted_public = planted_private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    assert vendor_data["ssh_keys"]["ed25519_public"] == planted_public, "one key pair, both halves"
    assert user_data["ssh_genkeytypes"] == ["ed25519"] and user_data["ssh_deletekeys"] is True
    for command in plan.of_type(COMMAND):
        connection = raw[command.urn]["connection"]
        assert connection["hostKey"].strip() == planted_public, command.urn
        assert connection["host"] == "203.0.113.25" and connection["user"] == "ceres"
        deploy_public = serialization.load_ssh_private_key(connection["privateKey"].encode(), None).public_key()
        assert deploy_public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode() in user_data["users"][0]["ssh_authorized_keys"], "the deploy key can log in"


def test_install_command_lines_hold_no_secret(applied):
    """No install command line holds a secret: passwords and keys go on stdin, and only to the stages needing them."""
    plan, raw = applied
    for command in plan.of_type(COMMAND):
        assert "stdin" not in raw[command.urn] or command.name.endswith(("-install-mail", "-install-access",
                                                                         "-install-webmail", "-install-backup")), \
            "secrets go to the mail, webmail and backup stages only"
    webmail = raw[one(plan, COMMAND, "-install-webmail").urn]
    assert [line.split("=", 1)[0] for line in webmail["stdin"].splitlines()] == ["ROUNDCUBE_DES_KEY"]
    backup = raw[one(plan, COMMAND, "-install-backup").urn]
    assert sorted(dict(line.split("=", 1) for line in backup["stdin"].splitlines())) == [
        "BACKUP_PASSWORD", "BACKUP_SSH_KEY", "BACKUP_TOOL_PROGRAM"]
    assert "PRIVATE KEY" not in backup["create"]
    access = dict(line.split("=", 1) for line in raw[one(plan, COMMAND, "-install-access").urn]["stdin"].splitlines())
    assert list(access) == ["DEPLOY_PUBLIC_KEY"], "the access stage reads the deploy key, nothing secret"
    install = raw[one(plan, COMMAND, "-install-mail").urn]
    password = raw[one(plan, REALM).urn]["smtpServer"]["auth"]["password"]
    assert password not in install["create"]
    assert "PRIVATE KEY" not in install["create"]
    assert base64.b64encode(password.encode()).decode() in install["stdin"], "secrets travel on stdin"


# --- secrets ---------------------------------------------------------------------------------------


def secret_values(plan: Plan, raw: dict[str, dict]) -> list[str]:
    """Every secret value the applied stack holds: password, private keys, tokens, user-data."""
    values = [raw[one(plan, REALM).urn]["smtpServer"]["auth"]["password"]]
    values += [raw[c.urn]["connection"]["privateKey"] for c in plan.of_type(COMMAND)]
    values += [raw[one(plan, COMMAND, suffix).urn]["stdin"] for suffix in ("-install-mail", "-install-backup")]
    values += [base64.b64decode(line.split("=", 1)[1]).decode()
               for line in raw[one(plan, COMMAND, "-install-backup").urn]["stdin"].splitlines()
               if line.startswith(("BACKUP_PASSWORD=", "BACKUP_SSH_KEY="))]
    values += [raw[one(plan, "proxmoxve:index/fileLegacy:FileLegacy", "-vendor-data").urn]["sourceRaw"]["data"]]
    values.append(SECURE_PLACEHOLDER)
    return values


def test_applied_secrets_never_appear_in_any_plan_form(applied):
    """No secret of an applied stack (password, keys, user-data) shows in the plan, as JSON, text or Mermaid."""
    plan, raw = applied
    forms = {"json": plan.to_json(), "text": render_text(plan), "mermaid": render_mermaid(plan)}
    for secret in secret_values(plan, raw):
        fragments = {secret, secret[:40], secret.strip().splitlines()[1] if "\n" in secret.strip() else secret}
        for form, text in forms.items():
            assert not any(f in text for f in fragments), f"a secret value leaked into the {form} plan"


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_config_secrets_show_as_secret_only(plans, stack):
    """The stack's secret config (API tokens, kubeconfig, client secret) shows in the plan only as a secret."""
    plan = plans[stack]
    text = plan.to_json() + render_text(plan)
    assert SECURE_PLACEHOLDER not in text
    providers = {r.type: r.inputs for r in plan.resources if r.type.startswith("pulumi:providers:")}
    assert providers["pulumi:providers:proxmoxve"]["apiToken"] == SECRET
    assert providers["pulumi:providers:cloudflare"]["apiToken"] == SECRET
    assert providers["pulumi:providers:kubernetes"]["kubeconfig"] == SECRET
    assert providers["pulumi:providers:keycloak"]["clientSecret"] == SECRET


def test_stack_outputs_export_no_secret_in_clear(applied):
    """The stack outputs hold no secret in clear, and the CERES SMTP output leaves the password out."""
    plan, raw = applied
    exported = json.dumps(plan.outputs)
    assert not any(secret[:40] in exported for secret in secret_values(plan, raw))
    assert "CERES_SMTP_PASS" not in plan.outputs["ceresSmtp"]


# --- determinism -----------------------------------------------------------------------------------


HASH_SEEDS = ("0", "4242")
# what `mailctl plan` prints in each of its forms (--json, text, --mermaid), from one recording, as JSON
PLAN_FORMS = """\
import json, sys
from pathlib import Path
from mailctl.recorder import record
from mailctl.render import render_mermaid, render_text
plan = record(Path(sys.argv[1]), sys.argv[2])
sys.stdout.write(json.dumps({"--json": plan.to_json(), "text": render_text(plan), "--mermaid": render_mermaid(plan)}))
"""
FORMS = ("--json", "text", "--mermaid")


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_plan_is_byte_identical_across_processes(stack):
    """Same stack, same bytes, in processes whose string hashing differs (so set and dict order may):
    a no-change `pulumi up` shows no diff. In one process, hash order could never change."""
    from tests.conftest import PROJECT_DIR

    runs = {
        seed: subprocess.Popen([sys.executable, "-c", PLAN_FORMS, str(PROJECT_DIR), stack],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": seed})
        for seed in HASH_SEEDS
    }
    outputs = {}
    for seed, process in runs.items():
        out, err = process.communicate()
        assert process.returncode == 0, err.decode()[-2000:]
        outputs[seed] = json.loads(out)
    for form in FORMS:
        first, second = (outputs[seed][form] for seed in HASH_SEEDS)
        assert first and first == second, f"mailctl plan {form} differs between hash seeds"


# --- DNS across zones, adoption, exports -------------------------------------------------------------


@pytest.fixture(scope="module")
def multi_project(tmp_path_factory):
    from tests.conftest import PROJECT_DIR, stack_config

    project = tmp_path_factory.mktemp("multi")
    (project / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    config = stack_config("prod")
    config["ceres-mail:extraDomains"] = ["example.org=11111111111111111111111111111111"]
    config["ceres-mail:dnsImportIds"] = ["mx-example.org=372e67954025e0ba6aaa6d586b9e0b59",
                                         "txt-ceres._domainkey.example.org=9f3c1a7e5b2d4c6e8a0b1c2d3e4f5a6b"]
    (project / "Pulumi.multi.yaml").write_text(yaml.safe_dump({"config": config}))
    return project


@pytest.fixture(scope="module")
def multi_plan(multi_project):
    return record(multi_project, "multi")


@pytest.fixture(scope="module")
def mailcow_plan(tmp_path_factory):
    from tests.conftest import PROJECT_DIR, stack_config

    project = tmp_path_factory.mktemp("mailcow")
    (project / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    config = {**stack_config("prod"), "ceres-mail:mailStack": "mailcow", "ceres-mail:ipv6Address": "",
              "ceres-mail:ipv6Gateway": ""}
    (project / "Pulumi.mailcow.yaml").write_text(yaml.safe_dump({"config": config}))
    return record(project, "mailcow")


def test_each_domains_records_go_to_its_own_zone(multi_plan):
    """Each mail domain's records, DKIM, DMARC and MTA-STS too, go to its own zone; the host's A/AAAA only once."""
    zones = {"example.com": "023e105f4ecef8ad9ca31a8372d0c353", "example.org": "11111111111111111111111111111111"}
    for resource in multi_plan.of_type(DNS_RECORD):
        name = resource.inputs["name"]
        owner = "example.org" if name == "example.org" or name.endswith(".example.org") else "example.com"
        assert resource.inputs["zoneId"] == zones[owner], resource.urn
    names = {r.inputs["name"] for r in multi_plan.of_type(DNS_RECORD)}
    assert {"ceres._domainkey.example.org", "_dmarc.example.org", "_mta-sts.example.org", "example.org._report._dmarc.example.com"} <= names
    assert sum(r.inputs["type"] in ("A", "AAAA") for r in multi_plan.of_type(DNS_RECORD)) == 2, "host records once"


def test_existing_records_are_adopted_by_id_not_duplicated(multi_plan):
    """A DKIM record too: the settings check an import's key against the records MailDns declares."""
    adopted = [r for r in multi_plan.of_type(DNS_RECORD) if r.options["importId"]]
    # sorted: the SDK registers resources from executor threads, so their order in a recording is not fixed
    assert sorted((r.name, r.options["importId"]) for r in adopted) == [
        ("ceres-mail-dns-mx-example.org", "11111111111111111111111111111111/372e67954025e0ba6aaa6d586b9e0b59"),
        ("ceres-mail-dns-txt-ceres._domainkey.example.org",
         "11111111111111111111111111111111/9f3c1a7e5b2d4c6e8a0b1c2d3e4f5a6b"),
    ]


def test_every_record_resource_is_named_by_its_builder_record_key(multi_project, multi_plan):
    """One record-key format (dns_records.record_key), the same for the plan, dnsImportIds and the builder."""
    from components.builders.dns_records import build_records, dkim_records
    from mailctl.zone import stack_settings

    inputs = stack_settings(multi_project, "multi").dns_inputs
    built = [*build_records(inputs), *dkim_records(inputs)]
    assert sorted(r.name for r in multi_plan.of_type(DNS_RECORD)) == sorted(f"ceres-mail-dns-{r.key}" for r in built)


def test_every_record_is_explicit_unproxied_and_commented(prod_plan):
    """Every DNS record is unproxied, has the stack's explicit TTL and a comment saying why it exists."""
    for resource in prod_plan.of_type(DNS_RECORD):
        assert resource.inputs["proxied"] is False and resource.inputs["ttl"] == 3600 and resource.inputs["comment"], resource.urn


def test_outputs_give_ptr_mta_sts_policy_and_dkim_value(applied, prod_plan):
    """The outputs give the PTR lines for the IP provider, the MTA-STS policy and the DKIM value and key."""
    plan, raw = applied
    outputs = plan.outputs
    assert outputs["ptrRecords"] == [
        "25.113.0.203.in-addr.arpa. 3600 IN PTR mail.example.com.",
        "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.2.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 3600 IN PTR mail.example.com.",
    ]
    assert outputs["mtaStsPolicy"] == "version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 604800\n"
    dkim = records(plan)[("TXT", "ceres._domainkey.example.com")]["content"]
    assert outputs["dkimTxt"] == txt_value(dkim)
    assert outputs["dkimPublicKeyPem"].startswith("-----BEGIN PUBLIC KEY-----"), "for mailctl zone and verify"
    assert outputs["dmarcExternalAuthorizations"] == []
    assert prod_plan.outputs["dkimTxt"] == UNKNOWN_TEXT


# --- DNSSEC -------------------------------------------------------------------------------------------


ZONE_DNSSEC = "cloudflare:index/zoneDnssec:ZoneDnssec"
#: the multi-domain stack's zones, by mail domain
MULTI_ZONES = {"example.com": "023e105f4ecef8ad9ca31a8372d0c353", "example.org": "11111111111111111111111111111111"}


def dnssec_stack(tmp_path_factory, base: str = "prod", **keys) -> tuple:
    """(project, stack name) of `base` with two mail domains and dnssec on, `keys` set too."""
    from tests.conftest import PROJECT_DIR, stack_config

    project = tmp_path_factory.mktemp("dnssec")
    (project / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    config = {**stack_config(base), "ceres-mail:dnssec": True,
              "ceres-mail:extraDomains": ["example.org=11111111111111111111111111111111"], **keys}
    (project / f"Pulumi.{base}.yaml").write_text(yaml.safe_dump({"config": config}))
    return project, base


@pytest.fixture(scope="module")
def dnssec_plan(tmp_path_factory):
    return record(*dnssec_stack(tmp_path_factory))


def test_with_dnssec_each_mail_domain_gets_one_protected_zone_dnssec(dnssec_plan):
    """dnssec signs every mail domain's zone: one protected ZoneDnssec each, in MailDns, DS exported once applied."""
    dns_component = one(dnssec_plan, "ceres-mail:mail:Dns")
    signed = {r.name: r for r in dnssec_plan.of_type(ZONE_DNSSEC)}
    assert sorted(signed) == ["ceres-mail-dns-dnssec-example.com", "ceres-mail-dns-dnssec-example.org"]
    for domain, zone_id in MULTI_ZONES.items():
        resource = signed[f"ceres-mail-dns-dnssec-{domain}"]
        assert resource.inputs == {"zoneId": zone_id, "status": "active"}
        assert resource.parent == dns_component.urn and resource.options["protect"] is True
        assert resource.options["provider"].endswith("pulumi:providers:cloudflare::ceres-mail-provider-cloudflare")
    assert dnssec_plan.outputs["dsRecords"] == UNKNOWN_TEXT, "Cloudflare makes the key at apply"


def test_without_dnssec_no_zone_is_signed_and_no_ds_is_exported(plans, multi_plan):
    """Without dnssec (the default) no zone is signed and no dsRecords is exported: such stacks plan as before."""
    for plan in (*plans.values(), multi_plan):
        assert plan.of_type(ZONE_DNSSEC) == [] and "dsRecords" not in plan.outputs, plan.stack


def test_an_unprotected_stack_signs_its_zones_unprotected(tmp_path_factory):
    """staging (protect: false) can still be torn down with dnssec on: its ZoneDnssec are not protected."""
    plan = record(*dnssec_stack(tmp_path_factory, "staging"))
    assert [r.options["protect"] for r in plan.of_type(ZONE_DNSSEC)] == [False, False]


def test_applied_dnssec_exports_each_domains_ds_for_its_registrar(tmp_path_factory):
    """Once applied, dsRecords gives each mail domain's DS as {ds, keyTag, algorithm, digestType, digest}, the same every time."""
    project, stack = dnssec_stack(tmp_path_factory)
    exported = [record(project, stack, known_outputs=True).outputs["dsRecords"] for _ in range(2)]
    assert exported[0] == exported[1]
    assert sorted(exported[0]) == sorted(MULTI_ZONES)
    for domain, entry in exported[0].items():
        assert sorted(entry) == ["algorithm", "digest", "digestType", "ds", "keyTag"]
        assert (entry["algorithm"], entry["digestType"], len(entry["digest"])) == (13, 2, 64)
        assert entry["ds"] == f"{domain}. 3600 IN DS {entry['keyTag']} 13 2 {entry['digest']}"


def test_a_new_mail_password_changes_only_what_carries_it(project_dir):
    """Rotate the mailbox password: the realm changes its SMTP auth only (never replaced), CERES gets
    the new password, the mail stage re-runs with it; nothing else changes."""
    runs = []
    for password in ("first-password-0123456789abcdef", "second-password-0123456789abcde"):
        raw: dict = {}
        record(project_dir, "prod", known_outputs=True, raw_inputs_hook=lambda urn, t, i: raw.__setitem__(urn, i),
               mock_overrides={"ceres-mail-mailbox-password": {"result": password},
                               "ceres-mail-backup-password": {"result": "the-backups-password-stays-the-same"},
                               "ceres-mail-server-native-roundcube-des-key": {"result": "the-des-key-stays-24-char"}})
        runs.append(raw)
    changed = sorted(urn.rsplit("::", 1)[1] for urn in runs[0] if runs[0][urn] != runs[1][urn])
    assert changed == ["ceres-mail-ceres-secret", "ceres-mail-keycloak-realm", "ceres-mail-server-install-mail"]
    realm_urn = next(urn for urn in runs[0] if urn.endswith("::ceres-mail-keycloak-realm"))
    before, after = runs[0][realm_urn], runs[1][realm_urn]
    assert {k: v for k, v in before.items() if k != "smtpServer"} == {k: v for k, v in after.items() if k != "smtpServer"}
    assert before["smtpServer"]["auth"]["password"] != after["smtpServer"]["auth"]["password"]
    assert {**before["smtpServer"], "auth": None} == {**after["smtpServer"], "auth": None}


def test_ceres_deployment_rolls_when_its_smtp_settings_change(scratch_project, project_dir):
    """With ceresDeployment set, a checksum of the Secret's content sits on the pod template."""
    from tests.conftest import stack_config

    config = stack_config("prod")
    config["ceres-mail:ceresDeployment"] = "ceres-ui"
    plan = record(scratch_project("roll", config), "roll")
    [patch] = plan.of_type("kubernetes:apps/v1:DeploymentPatch")
    assert patch.inputs["metadata"]["name"] == "ceres-ui" and patch.inputs["metadata"]["namespace"] == "ceres"
    assert patch.inputs["spec"]["template"]["metadata"]["annotations"] == {"ceres-mail/smtp-checksum": SECRET}
    assert one(plan, K8S_SECRET).urn in patch.dependencies
    assert record(project_dir, "prod").of_type("kubernetes:apps/v1:DeploymentPatch") == [], "off by default"


def test_env_file_export_for_ceres_own_install(applied):
    """For CERES's own env-file install, an output gives the CERES_ lines without the password, and how to add it."""
    plan, _ = applied
    lines = plan.outputs["ceresEnvFile"].splitlines()
    assert "CERES_MAIL_MODE=external" in lines and "CERES_SMTP_PORT=587" in lines
    assert not any(line.startswith("CERES_SMTP_PASS") for line in lines)
    assert plan.outputs["ceresSmtpPass"] == SECRET
    assert "--show-secrets" in plan.outputs["ceresEnvPassCommand"]
