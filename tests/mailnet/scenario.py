"""What the end-to-end tests deploy: a stack of this project, recorded, and everything taken from its plan.

The commands, their standard input, the SSH connection (user, deploy key, pinned host key), the cloud-init
snippets and the CERES Secret all come from the recorder's plan of a real stack file, so the tests run
exactly what the graph declares, not a parallel copy. The zones the test DNS serves are the plan's own
Cloudflare records (DKIM included, with the stack's key), read as Cloudflare would serve them.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization

from components.builders.dns_records import Record, reverse_records
from components.builders.dnssec import RESOURCE_INFIX
from components.builders.zone_file import render_zone
from mailctl.plan import Plan
from mailctl.recorder import record
from mailctl.zone import stack_settings
from tests.conftest import PROJECT_DIR, one, split_secrets, stack_config

PREFIX = 24
ADDRESSES = {
    "mail": "203.0.113.25",  # the stack's mail host (prod's address)
    "dns": "203.0.113.53",  # authoritative for example.com, example.net and the reverse zone
    "root-dns": "203.0.113.10",  # the signed tree's root and TLDs (tests/testnet/dns_tree.py), a.root-servers.net
    "resolver": "203.0.113.11",  # the validating resolver that trusts only that root
    "acme": "203.0.113.80",  # pebble
    "remote": "203.0.113.99",  # mx.example.net, the receiving MTA of another domain
    "client": "203.0.113.200",  # where the probes (mail clients, attackers) run
    "dane-sender": "203.0.113.12",  # posttls-finger, asking the validating resolver (tests/mailnet/dane_judge.py)
}
REMOTE_DOMAIN = "example.net"
NAMESERVERS = ("ns1.cloudflare.com", "ns2.cloudflare.com")
NAMESERVER_ZONE = "cloudflare.com"  #: where NAMESERVERS' names are (served by the dns host, for the signed tree)
COMMAND = "command:remote:Command"
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
ZONE_DNSSEC = "cloudflare:index/zoneDnssec:ZoneDnssec"
#: the mail server's remote commands are named after it: <stack>-server-wait-cloud-init, -server-install-<stage>
SERVER_COMMANDS = "ceres-mail-server-"
GATEWAY_VPS_COMMAND = "-install-vps"


@dataclass(frozen=True)
class RemoteCommand:
    name: str
    create: str
    stdin: str | None


@dataclass(frozen=True)
class GatewayDeployment:
    """gatewayMode wireguard: the VPS's command and the connection the graph declares for it."""

    command: RemoteCommand
    host: str
    user: str
    private_key: str  #: gatewaySshPrivateKey
    host_key: str  #: gatewayHostKey, the only one trusted


@dataclass(frozen=True)
class Deployment:
    """The parts of the plan the tests act on."""

    plan: Plan
    commands: tuple[RemoteCommand, ...]  #: in the order the graph runs them
    ssh_host: str
    ssh_user: str
    deploy_private_key: str
    host_public_key: str
    user_data: str
    vendor_data: str
    ceres_env: dict[str, str]  #: the CERES Secret's data, exactly as CERES would read it
    dkim_public_pem: str
    zones: dict[str, str]
    mta_sts_id: str
    gateway: GatewayDeployment | None = None  #: gatewayMode wireguard: the VPS's end

    def stage(self, suffix: str) -> int:
        """Where the command named ...`suffix` (e.g. -install-mail) is in `commands`, the graph's order."""
        [index] = [i for i, command in enumerate(self.commands) if command.name.endswith(suffix)]
        return index


def install_order(commands: Iterable[tuple[str, str, Iterable[str]]]) -> list[str]:
    """The names of the mail server's remote commands in the order the graph runs them, from (urn, name,
    dependencies) of remote commands, a plan's or a deployed stack's: the first waits for none of the others,
    and each next one for the one before. The tests take the stage order from the graph here, never from a
    list of their own; a graph whose install branches fails here, naming where."""
    server = [(urn, name, set(dependencies)) for urn, name, dependencies in commands if name.startswith(SERVER_COMMANDS)]
    urns = {urn for urn, _, _ in server}
    [current] = [(urn, name) for urn, name, dependencies in server if not dependencies & urns]
    order = [current]
    while following := [(urn, name) for urn, name, dependencies in server if order[-1][0] in dependencies]:
        assert len(following) == 1, f"the install branches after {order[-1][1]}: {[name for _, name in following]}"
        order.append(following[0])
    assert len(order) == len(server), f"commands off the chain: {sorted(set(n for _, n, _ in server) - {n for _, n in order})}"
    return [name for _, name in order]


def stack_file(acme_directory: str, acme_ca_pem: str, provided_tls: tuple[str, str] | None = None,
               extra: dict | None = None) -> dict:
    """prod's stack file, pointed at the test internet: its DNS server, its ACME CA, admin network.
    With `provided_tls` (certificate PEM, key PEM) the stack brings its own certificate instead
    (with the key among the config, which `deploy` hands the recorder as a decrypted secret);
    `extra` sets more keys (a directory: ldapMode and its keys)."""
    config = stack_config("prod")
    # no IPv6 in the test internet; backups only where a test brings a backup host (tests/test_backup_host.py)
    for key in ("ceres-mail:ipv6Address", "ceres-mail:ipv6Gateway", "ceres-mail:backupTarget", "ceres-mail:backupHostKey"):
        config.pop(key)
    config.update(
        {
            "ceres-mail:dnsResolvers": [ADDRESSES["dns"]],
            "ceres-mail:adminCidrs": [f"{ADDRESSES['client'].rsplit('.', 1)[0]}.0/{PREFIX}"],
            "ceres-mail:acmeDirectory": acme_directory,
            "ceres-mail:acmeCaBundle": acme_ca_pem,
        }
    )
    if provided_tls:
        config.update({"ceres-mail:tlsMode": "provided", "ceres-mail:tlsCertificate": provided_tls[0],
                       "ceres-mail:tlsPrivateKey": provided_tls[1]})
    config.update(extra or {})
    return config


def deploy(workdir: Path, acme_directory: str, acme_ca_pem: str, provided_tls: tuple[str, str] | None = None,
           extra: dict | None = None, extra_records: tuple[Record, ...] = (),
           mock_overrides: dict[str, dict] | None = None) -> Deployment:
    """Write the test stack next to a copy of Pulumi.yaml, record it as after an apply, and extract.
    (The mock providers keep each key per resource name for the process: a second deployment of the same
    stack shares the first one's SSH host key, deploy key and DKIM key; `mock_overrides` pins what else the
    state of an applied stack keeps, e.g. its generated passwords.) `extra_records` are served by the test
    DNS besides the plan's (names the operator has outside the stack)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", workdir / "Pulumi.yaml")
    stack, secrets = split_secrets(stack_file(acme_directory, acme_ca_pem, provided_tls, extra))
    (workdir / "Pulumi.e2e.yaml").write_text(yaml.safe_dump({"config": stack}))
    raw: dict[str, dict] = {}
    plan = record(workdir, "e2e", known_outputs=True, raw_inputs_hook=lambda urn, _t, inputs: raw.__setitem__(urn, inputs),
                  mock_overrides=mock_overrides, secrets=secrets)

    by_name = {c.name: c for c in plan.of_type(COMMAND)}
    ordered = [by_name[name] for name in install_order((c.urn, c.name, c.dependencies) for c in by_name.values())]
    commands = tuple(RemoteCommand(c.name, raw[c.urn]["create"], raw[c.urn].get("stdin")) for c in ordered)
    connection = raw[ordered[0].urn]["connection"]
    gateway = None
    if stack.get("ceres-mail:gatewayMode") == "wireguard":
        vps = one(plan, COMMAND, GATEWAY_VPS_COMMAND)
        vm_end = next(c for c in ordered if c.name.endswith("-install-gateway"))
        assert vps.urn in vm_end.dependencies, f"{vm_end.name} must run after {vps.name}"
        vps_connection = raw[vps.urn]["connection"]
        gateway = GatewayDeployment(RemoteCommand(vps.name, raw[vps.urn]["create"], raw[vps.urn].get("stdin")),
                                    host=vps_connection["host"], user=vps_connection["user"],
                                    private_key=vps_connection["privateKey"], host_key=vps_connection["hostKey"].strip())

    snippets = {r.name: raw[r.urn]["sourceRaw"]["data"] for r in plan.of_type("proxmoxve:index/fileLegacy:FileLegacy")}
    [ceres_secret] = plan.of_type("kubernetes:core/v1:Secret")
    mail_stdin = dict(line.split("=", 1) for line in next(c for c in commands if c.name.endswith("-install-mail")).stdin.splitlines())
    dkim_private = base64.b64decode(mail_stdin["DKIM_PRIVATE_KEY"])
    dkim_public = serialization.load_pem_private_key(dkim_private, None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()

    settings = stack_settings(workdir, "e2e", secrets)
    inputs = settings.dns_inputs
    # what the plan declares to Cloudflare, read back as Cloudflare would serve it; PTRs are set at the IP
    # provider (not declared), so they come from the builder
    zone_of = {zone_id: domain for domain, zone_id in settings.zone_ids.items()}
    records = [cloudflare_record(zone_of[raw[r.urn]["zoneId"]], raw[r.urn]) for r in plan.of_type(DNS_RECORD)]
    records += reverse_records(inputs) + remote_domain_records(inputs.ttl) + list(extra_records)
    zones = {
        zone: render_zone(zone, records, NAMESERVERS, inputs.ttl)
        for zone in sorted({r.zone for r in records})
    }
    mta_sts = next(r for r in records if r.name == f"_mta-sts.{inputs.domain}")
    return Deployment(
        plan=plan,
        commands=commands,
        ssh_host=connection["host"],
        ssh_user=connection["user"],
        deploy_private_key=connection["privateKey"],
        host_public_key=connection["hostKey"].strip(),
        user_data=next(v for k, v in snippets.items() if k.endswith("-user-data")),
        vendor_data=next(v for k, v in snippets.items() if k.endswith("-vendor-data")),
        ceres_env=raw[ceres_secret.urn]["stringData"],
        dkim_public_pem=dkim_public,
        zones=zones,
        mta_sts_id=b"".join(mta_sts.parsed().strings).decode().split("id=", 1)[1],
        gateway=gateway,
    )


def sign_zone(deployment: Deployment, domain: str, text: str, keydir: Path) -> str:
    """`text` as zone `domain` signed as Cloudflare signs it once the stack's `dnssec` is applied: with the key of
    the domain's ZoneDnssec, the offline stand-in's (mailctl/mock_outputs.py), whose DS the plan exports in
    dsRecords. Keys go to `keydir` as BIND's files."""
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from mailctl.mock_outputs import offline_zone_key
    from tests.dns_signing import key_from_pem, sign

    [zone_dnssec] = [r for r in deployment.plan.of_type(ZONE_DNSSEC) if r.name.endswith(f"{RESOURCE_INFIX}{domain}")]
    pem = offline_zone_key(zone_dnssec.inputs["zoneId"]).private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                                        NoEncryption())
    return sign(domain, text, [key_from_pem(domain, pem, keydir)])


def cloudflare_record(zone: str, fields: dict) -> Record:
    """The record a Cloudflare DnsRecord's inputs make, in zone-file form: how Cloudflare reads
    `content`, `priority` and `data` per type (a name in content is a host name, without its dot)."""
    type_, data = fields["type"], fields.get("data") or {}
    rdata = {
        "A": lambda: fields["content"],
        "AAAA": lambda: fields["content"],
        "CNAME": lambda: f"{fields['content']}.",
        "MX": lambda: f"{int(fields['priority'])} {fields['content']}.",
        "TXT": lambda: fields["content"],
        "SRV": lambda: f"{int(data['priority'])} {int(data['weight'])} {int(data['port'])} {data['target'].rstrip('.')}.",
        "CAA": lambda: f'{int(data["flags"])} {data["tag"]} "{data["value"]}"',
        "TLSA": lambda: f'{int(data["usage"])} {int(data["selector"])} {int(data["matchingType"])} {data["certificate"]}',
    }[type_]()
    return Record(zone, fields["name"], type_, rdata, int(fields["ttl"]), fields.get("comment", ""))


def nameserver_records(ttl: int) -> list[Record]:
    """The addresses of NAMESERVERS: the dns host, which serves them in their own zone beside the test domains,
    so the signed tree's delegations to those names lead to it."""
    return [Record(NAMESERVER_ZONE, name, "A", ADDRESSES["dns"], ttl, "test: the test domains' name server")
            for name in NAMESERVERS]


def remote_domain_records(ttl: int) -> list[Record]:
    """example.net, the other domain: its MX host, SPF, and the PTR of its address."""
    remote, mx = REMOTE_DOMAIN, f"mx.{REMOTE_DOMAIN}"
    last = ADDRESSES["remote"].rsplit(".", 1)[1]
    reverse_zone = ".".join(reversed(ADDRESSES["remote"].split(".")[:3])) + ".in-addr.arpa"
    return [
        Record(remote, remote, "MX", f"10 {mx}.", ttl, "test: the other domain's MX"),
        Record(remote, mx, "A", ADDRESSES["remote"], ttl, "test: the other domain's mail host"),
        Record(remote, remote, "TXT", '"v=spf1 mx -all"', ttl, "test: the other domain's SPF"),
        Record(reverse_zone, f"{last}.{reverse_zone}", "PTR", f"{mx}.", ttl, "test: PTR of the other MX"),
    ]
