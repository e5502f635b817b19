"""`pulumi up` of the whole program into the test internet, and the consumers sending through what it built.

One staging-like stack is taken through its life, in order: from an empty test internet to a working
mail server, Keycloak and CERES sending through it, a second up that changes nothing, the clients moved to
port 465 and back, a password rotation, a VM replacement, an interrupted up, and a destroy. Everything goes
through the real CLI and engine; the stand-in providers act on the test internet (tests/e2e/cloud.py).
"""

from __future__ import annotations

import email.utils
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from pulumi.automation import ConfigValue

from tests.e2e.conftest import (ADDRESSES, CERES_SECRET, DOMAIN, MAIL_HOST, REALM, REALM_FIELDS, STACK_CONFIG,
                                host_state, imap_login, mailctl_verify, password_file, stages_started_since, submit,
                                tcp_open)
from tests.engine.fixtures import CERES_DEPLOYMENT
from tests.mailnet.scenario import REMOTE_DOMAIN, STAGE_ORDER

pytestmark = pytest.mark.slow

MAIL = ADDRESSES["mail"]
VM = "proxmoxve:index/vmLegacy:VmLegacy"
PASSWORD = "random:index/randomPassword:RandomPassword"


def resource_urn(e2e, type_: str, name_suffix: str) -> str:
    [urn] = [r["urn"] for r in e2e.project.export(e2e.stack)["resources"]
             if r["type"] == type_ and r["urn"].endswith(name_suffix)]
    return urn


def keycloak_sends(e2e, username: str) -> dict:
    """A reset-password mail (execute-actions-email) to a realm user at the other domain; its verdict."""
    address = f"{username}@{REMOTE_DOMAIN}"
    user = e2e.keycloak.create_user(REALM, username, address, username.title(), "Example")
    e2e.keycloak.execute_actions_email(REALM, user, ["UPDATE_PASSWORD"])
    return e2e.verdict(lambda verdict: verdict["rcpt_tos"] == [address])


# --- 1. from empty to working ----------------------------------------------------------------------------


def test_one_up_takes_an_empty_test_internet_to_a_working_mail_server(e2e, deployed):
    run, started = deployed
    assert [name for name in stages_started_since(e2e, started)] == [f"ceres-mail-server{s}" for s in STAGE_ORDER]
    verify = mailctl_verify(e2e)
    assert verify.returncode == 0, verify.stdout[-6000:] + verify.stderr[-2000:]
    assert e2e.stack.outputs()["ceresSmtpPass"].value not in verify.stdout + verify.stderr


def test_the_certificate_stage_ran_once_its_names_were_served(e2e, deployed):
    """certbot's http-01 needs mail.<domain> (A) and mta-sts.<domain> (CNAME) served: the stage waits."""
    [tls_started] = e2e.cloud.journal.when("ssh.start", "ceres-mail-server-install-tls")
    needed = {(MAIL_HOST, "A"), (f"mta-sts.{DOMAIN}", "CNAME")}
    served_at = [at for at, names in e2e.zones.served if needed <= names]
    assert served_at and served_at[0] < tls_started


def test_the_firewall_closes_what_the_graph_leaves_closed(e2e, deployed):
    """SSH only from adminCidrs; the public mail ports from anywhere; nothing else, enforced in front of the VM."""
    assert tcp_open(e2e.client, 22), "the admin network reaches SSH"
    assert not tcp_open(e2e.remote, 22), "SSH is closed to the rest of the internet"
    assert all(tcp_open(e2e.remote, port) for port in (25, 465, 587, 993, 443))
    assert not tcp_open(e2e.remote, 143), "a port the graph does not open is closed"


def test_the_secret_never_appears_in_the_engine_output(e2e, deployed):
    run, _ = deployed
    secret = e2e.stack.outputs()["ceresSmtpPass"].value
    assert secret not in run.output
    assert secret not in json.dumps(e2e.project.export(e2e.stack))


# --- 2 and 3. the consumers send --------------------------------------------------------------------------


def test_keycloak_sends_a_reset_password_mail_signed_and_aligned(e2e, deployed):
    acme_root = x509.load_pem_x509_certificate(e2e.pebble_root.read_bytes())
    assert e2e.sso.trusted_subjects() == [acme_root.subject.rfc4514_string()], "Keycloak trusts the ACME CA only"
    assert e2e.sso.merged_trust_store() is None, "no JDK public CA merged in"
    verdict = keycloak_sends(e2e, "alice")
    assert (verdict["dkim"], verdict["spf"], verdict["dmarc_aligned"]) == ("pass", "pass", True), verdict
    assert verdict["peer"] == MAIL, "through the mail host"
    assert verdict["mail_from"] == f"no-reply@{DOMAIN}", "the envelope sender is the mailbox"
    assert email.utils.parseaddr(verdict["from"]) == (STACK_CONFIG["mailFromName"], f"no-reply@{DOMAIN}")
    assert email.utils.parseaddr(verdict["reply_to"])[1] == STACK_CONFIG["mailReplyTo"]
    log = e2e.cloud.vm_host().exec(["journalctl", "--no-pager", "-o", "cat", "-t", "postfix/submission/smtpd"]).stdout
    assert f"[{ADDRESSES['sso']}]" in log and f"sasl_username=no-reply@{DOMAIN}" in log, "Keycloak logged in on 587"


def test_ceres_sends_with_exactly_the_secret_it_reads_from_the_cluster(e2e, deployed):
    env = e2e.ceres_secret_env()
    assert env["CERES_SMTP_HOST"] == MAIL_HOST and env["CERES_SMTP_PORT"] == "587"
    assert env["CERES_SMTP_STARTTLS"] == "true" and env["CERES_SMTP_TLS"] == "false"
    sent = e2e.ceres_send(f"ceres587@{REMOTE_DOMAIN}", "ceres on 587", env)
    assert sent == {"sent": True, "host": MAIL_HOST, "port": 587, "implicit_tls": False, "starttls": True}
    verdict = e2e.verdict(lambda verdict: verdict["subject"] == "ceres on 587")
    assert (verdict["dkim"], verdict["dmarc_aligned"], verdict["mail_from"]) == ("pass", True, env["CERES_MAIL_FROM"])


# --- 4. a second up changes nothing --------------------------------------------------------------------


def test_a_second_up_changes_no_resource_no_file_and_no_service(e2e, deployed):
    before = host_state(e2e)
    started = time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-4000:]
    assert run.changed() == {}
    assert stages_started_since(e2e, started) == [], "no install stage ran"
    assert host_state(e2e) == before


# --- the clients on 465 and back ---------------------------------------------------------------------------


def test_clients_moved_to_465_send_with_implicit_tls(e2e, deployed):
    for key, value in (("smtpPort", "465"), ("smtpTls", "true"), ("smtpStarttls", "false")):
        e2e.stack.set_config(f"ceres-mail:{key}", ConfigValue(value))
    moved = e2e.up()
    assert moved.ok, moved.output[-4000:]
    env = e2e.ceres_secret_env()
    assert (env["CERES_SMTP_PORT"], env["CERES_SMTP_TLS"], env["CERES_SMTP_STARTTLS"]) == ("465", "true", "false")
    sent = e2e.ceres_send(f"ceres465@{REMOTE_DOMAIN}", "ceres on 465", env)
    assert sent == {"sent": True, "host": MAIL_HOST, "port": 465, "implicit_tls": True, "starttls": False}
    verdict = e2e.verdict(lambda verdict: verdict["subject"] == "ceres on 465")
    assert (verdict["dkim"], verdict["dmarc_aligned"]) == ("pass", True)
    assert keycloak_sends(e2e, "dave")["dkim"] == "pass", "Keycloak sends on 465 too"

    for key in ("smtpPort", "smtpTls", "smtpStarttls"):
        e2e.stack.remove_config(f"ceres-mail:{key}")
    back = e2e.up()
    assert back.ok, back.output[-4000:]
    assert e2e.ceres_secret_env()["CERES_SMTP_PORT"] == "587"


# --- 5. password rotation ---------------------------------------------------------------------------------


def test_a_rotated_password_reaches_the_mailbox_the_secret_and_the_realm_in_one_up(e2e, deployed):
    old = e2e.ceres_secret_env()["CERES_SMTP_PASS"]
    annotation = lambda: (e2e.k3s.get("deployment", CERES_DEPLOYMENT, CERES_SECRET[0])["spec"]["template"]  # noqa: E731
                          ["metadata"].get("annotations", {}))
    before = annotation()
    run = e2e.up(replace=[resource_urn(e2e, PASSWORD, "-mailbox-password")])
    assert run.ok, run.output[-4000:]
    new = e2e.ceres_secret_env()["CERES_SMTP_PASS"]
    assert new != old and annotation() != before, "the Secret changed and CERES rolls"

    old_file, new_file = password_file(e2e, "old-pass", old), password_file(e2e, "new-pass", new)
    assert "535" in submit(e2e, old_file, "old password").get("exception", ""), "the old password is refused on 587"
    assert "exception" in imap_login(e2e, old_file), "and on 993"
    assert submit(e2e, new_file, "new password").get("sent") is True
    assert imap_login(e2e, new_file).get("found") is False  # logged in (no such subject)
    assert keycloak_sends(e2e, "bob")["dkim"] == "pass", "Keycloak has the new password"


# --- 6. VM replacement ------------------------------------------------------------------------------------


def test_a_replaced_vm_is_a_fresh_host_with_the_mail_stack_installed_again(e2e, deployed):
    password = e2e.ceres_secret_env()["CERES_SMTP_PASS"]
    old_host = e2e.cloud.vm_host()
    marker = old_host.path("/root/old-host")
    marker.write_text("the host before the replacement\n")
    started = time.monotonic()
    run = e2e.up(replace=[resource_urn(e2e, VM, "-vm-vm")])
    assert run.ok, run.output[-4000:]
    host = e2e.cloud.vm_host()
    assert host is not old_host and not host.path("/root/old-host").exists(), "a fresh host"
    [booted] = [at for at, op, _ in e2e.cloud.journal.entries if op == "vm.running" and at >= started]
    stages = [(at, name) for at, op, name in e2e.cloud.journal.entries if op == "ssh.start" and at >= started]
    assert [name for _, name in stages] == [f"ceres-mail-server{s}" for s in STAGE_ORDER]
    assert all(at > booted for at, _ in stages), "nothing ran on a host without the mail stack"
    assert e2e.ceres_secret_env()["CERES_SMTP_PASS"] == password, "the mailbox password is unchanged"
    assert not tcp_open(e2e.remote, 22), "the new VM has its firewall"
    assert e2e.ceres_send(f"after-replace@{REMOTE_DOMAIN}", "after the replacement")["sent"] is True
    assert e2e.verdict(lambda verdict: verdict["subject"] == "after the replacement")["dkim"] == "pass"


# --- 8. an interrupted up ---------------------------------------------------------------------------------


def _cli_process() -> int | None:
    """The pulumi CLI the Automation API started (a child of this process)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if name == "pulumi" and int(fields[1]) == os.getpid():
                return int(entry.name)
    return None


def test_an_interrupted_up_is_refreshed_and_converges(e2e, deployed):
    started = time.monotonic()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run=e2e.up(replace=[resource_urn(e2e, VM, "-vm-vm")])))
    thread.start()
    deadline = time.monotonic() + 900
    while "ceres-mail-server-install-packages" not in stages_started_since(e2e, started):
        assert time.monotonic() < deadline and thread.is_alive(), "the install never started"
        time.sleep(0.5)
    cli = _cli_process()
    assert cli is not None
    os.kill(cli, signal.SIGINT)
    thread.join(timeout=1800)
    assert not result["run"].ok, "the up was interrupted"

    refreshed = e2e.stack.refresh()
    assert refreshed.summary.result == "succeeded"
    state = e2e.project.export(e2e.stack)
    assert not state.get("pending_operations"), state.get("pending_operations")
    run = e2e.up()
    assert run.ok, run.output[-4000:]
    assert e2e.ceres_send(f"after-interrupt@{REMOTE_DOMAIN}", "after the interruption")["sent"] is True
    assert e2e.verdict(lambda verdict: verdict["subject"] == "after the interruption")["dkim"] == "pass"


# --- 7. destroy ----------------------------------------------------------------------------------------------


def test_destroy_removes_the_host_the_records_and_the_secret_and_leaves_the_realm(e2e, deployed):
    """With a directory (test_ldap_up.py ran just before), the realm's LDAP federation is the stack's: it goes,
    and the realm stays."""
    realm_before = e2e.keycloak.realm(REALM)
    directory = e2e.stack.get_all_config().get("ceres-mail:ldapMode", ConfigValue("off")).value != "off"
    assert len(e2e.keycloak.user_federations(REALM)) == (1 if directory else 0), "the stack's federation, if any"
    run = e2e.stack.destroy(on_output=lambda line: None)
    assert run.summary.result == "succeeded"
    assert e2e.cloud.vms == {}, "the host is gone"
    served = e2e.probe("dns", "--host", ADDRESSES["dns"], "--name", MAIL_HOST, "--subject", "A")
    assert served["rcode"] == 3 and served["answer"] == [], "the records left the zone"
    assert e2e.k3s.get("secret", CERES_SECRET[1], CERES_SECRET[0]) is None, "the Secret is gone"
    realm = e2e.keycloak.realm(REALM)
    assert {key: realm[key] for key in REALM_FIELDS} == REALM_FIELDS, "CERES's realm, as CERES had it"
    assert realm == realm_before, "the realm is left as it was, SMTP block included"
    assert e2e.keycloak.user_federations(REALM) == [], "no federation is left behind"
