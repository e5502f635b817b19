"""The end-to-end world's scenario: one staging-like stack taken through its life, in the order an operator lives it.

`pulumi up` of the whole program into the test internet that tests/e2e/conftest.py boots once per session, and
the consumers sending through what it built. Everything goes through the real CLI and engine; the stand-in
providers act on the test internet (tests/e2e/cloud.py). Each test is a step of the one scenario and builds on
what the steps before it left: they run in file order (pytest's own), and no hook reorders them. The parts:

1. The host as the first up built it, judged from outside by real peers: what it serves and refuses. Every
   check here only reads or sends mail, before anything changes the host.
2. The first up itself, from an empty test internet to a working mail server, and the platform's consumers
   (Keycloak, CERES) sending through it.
3. The DKIM key rotation of the README ("DKIM key rotation"), through three real `pulumi up`s on the one host.
   `ceres` signs after the first up; the rotation to `ceres2026` is:

       1. dkimPublishedSelectors: [ceres2026]                      the new key made and published; ceres signs
       2. dkimSelector: ceres2026, dkimPublishedSelectors: [ceres]  the new key signs; the old record stays
       3. dkimPublishedSelectors: []                               the old record and key go

   After each up, mail from the mail host arrives at the other domain with DKIM pass under the selector that
   should sign, and each step touches only what it must on the host (step 2 restarts rspamd, nothing else;
   steps 1 and 3 run no install stage). A message the host signed with the old key before the switch (as a
   receiver holds it: queued, retried, forwarded) is judged again after each step with dkimpy against the test
   internet's DNS: it still verifies after step 2, and fails after step 3 because its record is gone. That is
   why step 3 waits (7 days in the README) and why step 2 keeps the old record. It comes after parts 1 and 2
   (which judge the host signed with `ceres` and the stages the first up ran) and before "a second up changes
   nothing" (part 4 only comes between), which then also proves the rotated stack is at rest. It leaves `ceres2026` signing and no
   other selector published; the rest of the scenario (password rotation, VM replacement: the fresh host gets
   the ceres2026 key, interrupted up, destroy) does not depend on the selector.
4. DNSSEC and DANE (issue 30): `dnssec: true` and `dane: true` set on the live stack, and one up. It makes the
   zone's ZoneDnssec (the Cloudflare stand-in's key, with which the zone server signs the zone from then on),
   the stack's TLS key and its TLSA records, and runs the tls stage, which has the ACME server certify that key
   only once the TLSA is served. The served zone passes dnssec-verify, its key is the one the exported DS
   names; the registrar's step puts that DS into com. of the test's signed tree, after which delv validates
   the MX from the test root and `mailctl verify`, asking the tree's validating resolver, shows the dnssec,
   ds and every dane row green. It comes right after the rotation, so the next step's "a second up changes
   nothing" proves the signed stack at rest too; the later steps (the replaced VM gets the stack's key
   certified again; verify in part 6 asks the validating resolver, as an authoritative server never sets AD)
   run with DNSSEC and DANE on, and the destroy removes the ZoneDnssec with the rest.
5. A second up that changes nothing, the clients moved to port 465 and back, a password rotation, and a VM
   replacement whose up is interrupted mid-install and then converges (one fresh install proves both).
6. One password everywhere (issue 16, README "One password everywhere (LDAP)"), through the graph's own
   `pulumi up`: a directory added to the running stack, a real slapd on the mail host and the real Keycloak
   federating it. The live stack (ldapMode off) gets `ldapMode: local`, with `ldapClientCidrs` the address
   CERES's Keycloak egresses from (the SSO host of the test internet; not the operator's machine, not the rest
   of the internet), and one `pulumi up`. That up installs slapd (the `ldap` stage, after the packages stage
   brought it), gives the directory's people mailboxes (the mail stage), opens LDAPS to the SSO host only, and
   creates the CERES realm's LDAP federation in the real Keycloak, which connects over LDAPS and checks the mail
   host's certificate against the only CA it trusts (the test ACME CA that issued it). Then, as the people and
   an attacker use it:

   - a person the operator adds to the directory (ldapadd as root on the host) signs in to Keycloak (a token
     of the realm), reads mail over IMAPS and submits on 587 with the one directory password; the mail arrives
     at the other domain's MTA signed;
   - a password reset in Keycloak (admin API, WRITABLE federation) goes to the directory through Password
     Modify, hashed as {ARGON2}: the old password is refused everywhere, the new one works everywhere;
   - a wrong password is refused by Keycloak, IMAPS and submission;
   - anonymous reads nothing, a person reads no one else, the service account reads no hash;
   - LDAPS answers the SSO host only; nothing listens on 389;
   - a second up changes nothing.

   It comes just before the destroy: adding a directory to a stack that has lived (rotated DKIM key and
   password, replaced VM, an interrupted up) is what an operator does; and no later step but the destroy has
   to know about a directory, while the destroy then shows that the federation, which the stack owns, goes
   with it and the adopted realm stays (asserted there). Earlier, the later reinstall (the VM replacement)
   would run the ldap stage too and its stage list would have to follow. Run without the steps before it
   (deselected with -k), it switches the stack the first up built.
7. The destroy: the host, the records and the Secret go (with the stack's LDAP federation, if any); CERES's
   realm stays as CERES had it.

The module-scoped fixtures live as long as the scenario: `host` is the first up's host (part 1 only), and the
realm's login client of part 6 is removed once the scenario ends.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import dkim
import dns.dnssec
import dns.rdata
import dns.zone
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pulumi.automation import ConfigValue

from components.builders.dns_records import mta_sts_id
from components.builders.dnssec import DS_OUTPUT, RESOURCE_INFIX
from components.builders.inputs import LdapInputs
from components.builders.native import SLAPD_LDAPI
from components.builders.ports import STRICT_TLS_PORTS
from mailctl.verify.model import OK
from mailctl.zone import stack_settings
from tests.conftest import stack_config
from tests.dns_harness import zone_transfer
from tests.dns_signing import verify_signed
from tests.e2e.conftest import (ADDRESSES, CERES_SECRET, CONFIG_FILES, DOMAIN, MAIL_HOST, PACKAGES_STAGE, PYTHON,
                                REALM, REALM_FIELDS, SERVICES, STACK, STACK_CONFIG, host_state, imap_login,
                                mailctl_verify, password_file, stages_started_since, submit, tcp_open)
from tests.engine.fixtures import CERES_DEPLOYMENT
from tests.engine.harness import EngineRun
from tests.engine.standins.keycloak_federation import MASK
from tests.mailnet.scenario import REMOTE_DOMAIN, install_order
from tests.testnet import SystemHost
from tests.testnet.dns_tree import Answer

pytestmark = pytest.mark.slow

MAIL = ADDRESSES["mail"]
PASSWORD = "random:index/randomPassword:RandomPassword"  #: the type of the stack's random passwords
# the host as the first up built it
MTA_STS_HOST = f"mta-sts.{DOMAIN}"
TLS_PORTS = [(25, "smtp"), (465, "none"), (587, "smtp"), (993, "none"), (443, "none")]
# the DKIM rotation
OLD, NEW = "ceres", "ceres2026"  #: the selector the first up signs with (the default), the one rotated to
KEYS_ON_HOST = "/var/lib/rspamd/dkim"  #: rspamd's keys, <selector>.key (components/builders/shell/native/mail.sh)
MAIL_STAGE = "ceres-mail-server-install-mail"
PUBLISHED, STACK_KEY = "published, not signing", ("ok", "RSA 2048 bits, the stack's key")  #: mailctl verify's words
# DNSSEC and DANE
DANE_PORTS = (25, 465, 587, 993)  #: where dane pins the stack's key: SMTP to the MX and the client ports
TLS_STAGE = "ceres-mail-server-install-tls"
# the VM replacement and the interrupted up
VM = "proxmoxve:index/vmLegacy:VmLegacy"
COMMAND = "command:remote:Command"
# one password everywhere (LDAP)
LDAP_PROBE = Path(__file__).resolve().parents[1] / "mailnet" / "ldap_probe.py"
SSO_EGRESS = f"{ADDRESSES['sso']}/32"  #: where CERES's Keycloak connects from: the only directory client
#: the stages the switch runs: packages (slapd and the LDAP modules join the list), ldap (new), mail (mailboxes)
SWITCH_STAGES = ("ceres-mail-server-install-packages", "ceres-mail-server-install-ldap", "ceres-mail-server-install-mail")
#: what the switch's up changes: the directory's passwords, stage and federation are new; three things change
SWITCH_CHANGES = {
    "ceres-mail-ldap-admin-password": ("create",), "ceres-mail-ldap-bind-password": ("create",),
    "ceres-mail-vm-firewall-rules": ("update",),  # LDAPS from ldapClientCidrs
    **{name: ("create",) if name.endswith("-ldap") else ("update",) for name in SWITCH_STAGES},
    "ceres-mail-keycloak-directory": ("create",), "ceres-mail-keycloak-directory-federation": ("create",),
}
LOGIN_CLIENT = "ceres-mail-e2e-login"  #: a realm client for password logins (direct access grants), the test's own
PERSONS = {"erin": "Erin", "frank": "Frank"}  #: uid -> cn; mail <uid>@<domain>; none is a local Keycloak user
#: what the second up must leave as it is on the host: the directory's files and slapd, with the mail stack's
LDAP_FILES = ("/etc/systemd/system/slapd.service", "/etc/ldap/slapd.d/cn=config.ldif",
              "/etc/ldap/slapd.d/cn=config/olcDatabase={1}mdb.ldif", "/etc/dovecot/ceres-ldap.conf.ext",
              "/etc/dovecot/conf.d/99-ceres-mail.ldap.conf", "/etc/postfix/ceres-ldap-people.cf")


# --- part 1 of 7: the host as the first up built it ---------------------------------------------------------


@pytest.fixture(scope="module")
def host(e2e, deployed):
    """The VM's host, as the Proxmox stand-in booted it for the first up (part 1's: the VM replacement boots
    another)."""
    return e2e.cloud.vm_host()


# --- first boot and access ----------------------------------------------------------------------------------


def test_first_boot_ran_cloud_init_from_the_uploaded_snippets(host):
    """The first boot runs cloud-init from the stack's snippets to the end; the only SSH host key is the stack's."""
    status = host.exec(["cloud-init", "status", "--long"])
    assert "status: done" in status.stdout, status.stdout + status.stderr
    keys = sorted(p.name for p in host.path("/etc/ssh").glob("ssh_host_*key.pub"))
    assert keys == ["ssh_host_ed25519_key.pub"], "only the stack's own host key, the one the install pins"


def test_the_admin_logs_in_with_the_declared_keys_and_the_deploy_key(e2e, host):
    """The access stage keeps authorized_keys as the stack declares it (adminSshKeys, then the deploy key)."""
    declared = stack_config("staging")["ceres-mail:adminSshKeys"]
    lines = host.path("/home/ceres/.ssh/authorized_keys").read_text().splitlines()
    keys = [line.split()[:2] for line in lines if not line.startswith("#")]
    assert keys[:-1] == [key.split()[:2] for key in declared]
    assert keys[-1][0] == "ssh-ed25519", "then the stack's deploy key"


def test_ssh_refuses_password_login(e2e, host):
    """SSH refuses password logins, even from the admin network: keys only."""
    result = e2e.client.run(["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                             "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
                             "-o", "PreferredAuthentications=password,keyboard-interactive", f"ceres@{MAIL}", "true"],
                            timeout=60)
    assert result.returncode == 255 and "Permission denied (publickey)" in result.stderr, result.stderr


def test_the_dkim_key_is_readable_by_rspamd_only(host):
    """The stack's DKIM private key is on the host whole, mode 0640: readable by rspamd, not by every user."""
    key = host.path("/var/lib/rspamd/dkim/ceres.key")
    assert oct(key.stat().st_mode & 0o777) == "0o640"
    serialization.load_pem_private_key(key.read_bytes(), None)  # the key the graph generated, whole


# --- mail in and out ----------------------------------------------------------------------------------------


def test_mail_from_another_domain_is_delivered_to_the_data_disk_and_read_over_imaps(e2e, host, mailbox_password):
    """Mail from another domain is accepted on 25, stored on the data disk, and read back over IMAPS."""
    subject = f"hello from {REMOTE_DOMAIN} {time.time_ns()}"
    accepted = e2e.probe("send", "--host", MAIL, "--port", "25", "--sender", f"someone@{REMOTE_DOMAIN}",
                         "--to", f"postmaster@{DOMAIN}", "--subject", subject, host=e2e.remote)
    assert accepted.get("accepted") is True, accepted
    read = e2e.probe("imap", "--host", MAIL, "--port", "993", "--user", f"no-reply@{DOMAIN}",
                     "--password-file", str(mailbox_password), "--subject", subject, "--cafile", str(e2e.pebble_root),
                     "--wait", "60", timeout=90)
    assert read.get("found") is True and subject in read["message"], read
    stored = host.exec(["grep", "-rl", subject, f"/var/mail/vhosts/{DOMAIN}/no-reply/Maildir"])
    assert stored.returncode == 0 and stored.stdout.strip(), stored
    for path in stored.stdout.split():
        filesystem = host.exec(["findmnt", "-n", "-o", "SOURCE", "--target", path]).stdout.strip()
        assert filesystem == "maildata", (path, filesystem)


def test_mail_is_signed_with_the_stacks_selector_from_the_mail_hosts_name(e2e, deployed):
    """Outgoing mail is signed for the domain under selector ceres, passes SPF, and comes from the mail host's name."""
    sent = e2e.ceres_send(f"selector@{REMOTE_DOMAIN}", "which selector")
    assert sent["sent"] is True, sent
    verdict = e2e.verdict(lambda verdict: verdict["subject"] == "which selector")
    assert (verdict["dkim_domain"], verdict["dkim_selector"], verdict["spf"]) == (DOMAIN, "ceres", "pass")
    assert verdict["peer"] == MAIL and verdict["helo"] == MAIL_HOST


# --- what must be refused -----------------------------------------------------------------------------------


def test_no_open_relay(e2e, deployed):
    """The MX refuses to relay an outsider's mail to another domain (Relay access denied)."""
    refused = e2e.probe("send", "--host", MAIL, "--port", "25", "--sender", f"spammer@{REMOTE_DOMAIN}",
                        "--to", "victim@example.org", "--subject", "relay attempt")
    assert refused.get("accepted") is False, refused
    assert any("Relay access denied" in str(v) for v in refused.get("refused", {}).values()), refused


def test_no_auth_before_starttls(e2e, deployed):
    """Port 587 neither offers nor accepts AUTH before STARTTLS, so no password crosses in clear."""
    result = e2e.probe("auth-plain", "--host", MAIL, "--port", "587")
    assert result["auth_offered"] is False and result["code"] >= 500, result


def test_465_refuses_to_send_as_another_address(e2e, mailbox_password):
    """On 465, a logged-in mailbox cannot send as another address of the domain (Sender address rejected)."""
    sent = e2e.probe("submit", "--host", MAIL, "--name", MAIL_HOST, "--port", "465", "--tls-mode", "implicit",
                     "--cafile", str(e2e.pebble_root), "--user", f"no-reply@{DOMAIN}",
                     "--password-file", str(mailbox_password), "--sender", f"ceo@{DOMAIN}",
                     "--to", f"newuser@{REMOTE_DOMAIN}", "--subject", "spoof")
    assert "Sender address rejected" in sent.get("exception", ""), sent


def test_imap_without_tls_is_closed(e2e, deployed):
    """Plain IMAP on 143 is closed: mail is read only over TLS, on 993."""
    result = e2e.probe("imap-plaintext", "--host", MAIL, "--port", "143", "--user", f"no-reply@{DOMAIN}")
    assert result["connected"] is False, result


# --- TLS ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("port, starttls", TLS_PORTS)
def test_old_tls_versions_are_refused_where_tls_1_2_is_accepted(e2e, deployed, port, starttls):
    """TLS 1.2 first, so a port that is simply closed cannot pass as one that refuses old versions; then
    TLS 1.0 and 1.1 are refused on every port, 25 included."""
    accepted = e2e.probe("tls-version", "--host", MAIL, "--port", str(port), "--starttls", starttls,
                         "--version", "TLSv1_2")
    assert accepted == {"handshake": True, "tls_version": "TLSv1.2"}, accepted
    for version in ("TLSv1", "TLSv1_1"):
        result = e2e.probe("tls-version", "--host", MAIL, "--port", str(port), "--starttls", starttls,
                           "--version", version, "--name", MAIL_HOST)
        assert result["handshake"] is False, (version, result)


def sslscan(e2e, port: int, starttls: str) -> list[tuple[str, str]]:
    """(protocol, cipher) of every suite the port accepts, as Debian's sslscan finds them from the client."""
    argv = ["sslscan", "--no-colour", "--no-heartbleed", "--no-fallback", "--xml=-", f"--sni-name={MAIL_HOST}"]
    argv += ["--starttls-smtp"] if starttls == "smtp" else []
    result = e2e.client.run([*argv, f"{MAIL}:{port}"], timeout=300)
    assert result.returncode == 0, result.stderr
    document = ElementTree.fromstring(result.stdout[result.stdout.index("<?xml"):])
    return sorted((c.get("sslversion"), c.get("cipher")) for c in document.iter("cipher"))


def weak_suites(suites: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What Mozilla's "intermediate" profile does not allow: below TLS 1.2, or a TLS 1.2 suite without an
    AEAD cipher (CBC: LUCKY13) or without an ephemeral key exchange (no forward secrecy)."""
    return [
        (protocol, cipher) for protocol, cipher in suites
        if protocol not in ("TLSv1.2", "TLSv1.3")
        or protocol == "TLSv1.2" and not (cipher.startswith(("ECDHE-", "DHE-")) and ("GCM" in cipher or "CHACHA20" in cipher))
    ]


@pytest.mark.parametrize("port, starttls", [p for p in TLS_PORTS if p[0] in STRICT_TLS_PORTS])
def test_client_ports_offer_only_intermediate_suites(e2e, deployed, port, starttls):
    """The client ports offer only TLS 1.2 and 1.3, with forward-secret AEAD suites (Mozilla's intermediate profile)."""
    suites = sslscan(e2e, port, starttls)
    assert {p for p, _ in suites} == {"TLSv1.2", "TLSv1.3"}, suites
    assert weak_suites(suites) == [], f"port {port}"


def test_port_25_stays_open_to_older_senders(e2e, deployed):
    """Opportunistic TLS on the MX (RFC 7435): wider than the client ports on purpose, never below TLS 1.2."""
    suites = sslscan(e2e, 25, "smtp")
    assert {p for p, _ in suites} == {"TLSv1.2", "TLSv1.3"}, suites
    assert weak_suites(suites), "port 25 offers more than the strict suites"


def test_https_never_compresses_over_tls(e2e, deployed):
    """HTTP compression over TLS leaks secrets by size (BREACH): asked for gzip, nginx answers plain."""
    served = e2e.probe("https", "--host", MAIL, "--name", MTA_STS_HOST, "--cafile", str(e2e.pebble_root),
                       "--accept-encoding")
    assert served.get("status") == 200, served
    assert "content-encoding" not in served["headers"], served["headers"]


@pytest.mark.parametrize("port, starttls, name", [(587, "smtp", MAIL_HOST), (993, "none", MAIL_HOST),
                                                 (443, "none", MTA_STS_HOST)])
def test_certificate_is_issued_by_the_acme_server_for_the_right_names(e2e, deployed, port, starttls, name):
    """587, 993 and 443 serve the ACME server's certificate, valid for the mail host and its mta-sts name."""
    cert = e2e.probe("certificate", "--host", MAIL, "--port", str(port), "--starttls", starttls,
                     "--name", name, "--cafile", str(e2e.pebble_root))
    assert "exception" not in cert, cert  # the chain verified against pebble's root, the name matched
    assert cert["san"] == [MAIL_HOST, MTA_STS_HOST]
    assert "Pebble" in cert["issuer"]


def test_mta_sts_policy_is_served_and_matches_the_dns_id(e2e, deployed):
    """The MTA-STS policy (testing, this MX) is served over HTTPS, and the _mta-sts TXT id matches it (RFC 8461 3.1)."""
    served = e2e.probe("https", "--host", MAIL, "--name", MTA_STS_HOST, "--cafile", str(e2e.pebble_root))
    assert served.get("status") == 200, served
    assert served["body"] == f"version: STSv1\nmode: testing\nmx: {MAIL_HOST}\nmax_age: 604800\n"
    published = e2e.probe("dns", "--host", ADDRESSES["dns"], "--name", f"_mta-sts.{DOMAIN}", "--subject", "TXT")
    assert f"id={mta_sts_id(served['body'])}" in published["answer"][0]


# --- part 2 of 7: the first up and the platform's consumers -------------------------------------------------


def keycloak_sends(e2e, username: str) -> dict:
    """A reset-password mail (execute-actions-email) to a realm user at the other domain; its verdict."""
    address = f"{username}@{REMOTE_DOMAIN}"
    user = e2e.keycloak.create_user(REALM, username, address, username.title(), "Example")
    e2e.keycloak.execute_actions_email(REALM, user, ["UPDATE_PASSWORD"])
    return e2e.verdict(lambda verdict: verdict["rcpt_tos"] == [address])


# --- 1. from empty to working -------------------------------------------------------------------------------


def test_one_up_takes_an_empty_test_internet_to_a_working_mail_server(e2e, deployed):
    """One `pulumi up` runs every install stage in order to a host `mailctl verify` passes, the password unprinted."""
    run, started = deployed
    assert [name for name in stages_started_since(e2e, started)] == deployed_install_order(e2e)
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
    """The mailbox password never shows in the up's output, nor in clear in the exported state."""
    run, _ = deployed
    secret = e2e.stack.outputs()["ceresSmtpPass"].value
    assert secret not in run.output
    assert secret not in json.dumps(e2e.project.export(e2e.stack))


# --- 2 and 3. the consumers send ----------------------------------------------------------------------------


def test_keycloak_sends_a_reset_password_mail_signed_and_aligned(e2e, deployed):
    """Keycloak, trusting only the ACME CA, sends reset mail through the host on 587: SPF, DKIM and DMARC pass."""
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
    """CERES sends on 587 with STARTTLS using only its Secret's settings, and its mail arrives signed and aligned."""
    env = e2e.ceres_secret_env()
    assert env["CERES_SMTP_HOST"] == MAIL_HOST and env["CERES_SMTP_PORT"] == "587"
    assert env["CERES_SMTP_STARTTLS"] == "true" and env["CERES_SMTP_TLS"] == "false"
    sent = e2e.ceres_send(f"ceres587@{REMOTE_DOMAIN}", "ceres on 587", env)
    assert sent == {"sent": True, "host": MAIL_HOST, "port": 587, "implicit_tls": False, "starttls": True}
    verdict = e2e.verdict(lambda verdict: verdict["subject"] == "ceres on 587")
    assert (verdict["dkim"], verdict["dmarc_aligned"], verdict["mail_from"]) == ("pass", True, env["CERES_MAIL_FROM"])


# --- part 3 of 7: the DKIM rotation in three ups ------------------------------------------------------------


def key_name(selector: str) -> str:
    return f"ceres-mail-dkim-key-{selector}"


def record_name(selector: str) -> str:
    return f"ceres-mail-dns-txt-{selector}._domainkey.{DOMAIN}"


@dataclass
class Step:
    """One up of the rotation: what the engine changed, the install stages it ran, what changed on the host."""

    run: EngineRun
    stages: list[str]
    host_changes: set[str]  #: the config files whose bytes and the services whose start time changed

    @property
    def resources(self) -> dict[str, tuple[str, ...]]:
        """Resource name -> the engine's steps, for the resources the up changed."""
        return {urn.rsplit("::", 1)[-1]: steps for urn, steps in self.run.changed().items()}


def rotation_up(e2e, config: dict[str, str | list[str]]) -> Step:
    """Set the step's keys as `mailctl dkim rotate` prints them (a list key removed, then set item by item
    with --path: the CLI types it as a list), then `pulumi up`."""
    for key, value in config.items():
        if isinstance(value, list):
            e2e.stack.remove_config(f"ceres-mail:{key}")
            for index, item in enumerate(value):
                e2e.stack.set_config(f"ceres-mail:{key}[{index}]", ConfigValue(item), path=True)
        else:
            e2e.stack.set_config(f"ceres-mail:{key}", ConfigValue(value))
    before, started = host_state(e2e), time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-4000:]
    after = host_state(e2e)
    return Step(run, stages_started_since(e2e, started), {key for key in before if before[key] != after[key]})


def served_txt(e2e, name: str) -> bytes | None:
    """`name`'s TXT as the test internet's DNS server serves it (asked from the operator's machine), its
    strings joined as a DKIM verifier reads a key record; None when there is none."""
    answer = e2e.probe("dns", "--host", ADDRESSES["dns"], "--name", name, "--subject", "TXT")
    assert "exception" not in answer, answer
    fields = [line.split(None, 4) for rrset in answer["answer"] for line in rrset.splitlines()]
    return b"".join(b"".join(dns.rdata.from_text("IN", "TXT", rdata).strings)
                    for _, _, _, rdtype, rdata in fields if rdtype == "TXT") or None


class Reasons(logging.Handler):
    """What dkimpy logs as an error: why a signature did not verify."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def judge_dkim(e2e, message: bytes) -> str:
    """A receiver's DKIM verdict on `message` now, with dkimpy resolving through the test internet's DNS:
    "pass", or "fail: " and dkimpy's reason ("missing public key: ..." when the record is not served)."""
    reasons = Reasons()
    logger = logging.Logger("dkim-judge", logging.ERROR)  # not dkimpy's shared logger: this verdict's reasons only
    logger.addHandler(reasons)
    if dkim.verify(message, logger=logger, dnsfunc=lambda name, timeout=5: served_txt(e2e, name.decode().rstrip("."))):
        return "pass"
    return "fail: " + "; ".join(reasons.messages)


def sent_from_the_mail_host(e2e, subject: str) -> tuple[dict, bytes]:
    """CERES sends `subject` through the mail host to the other domain: the remote MTA's verdict, and the
    message as it arrived there (signature included)."""
    sent = e2e.ceres_send(f"rotation@{REMOTE_DOMAIN}", subject)
    assert sent["sent"] is True, sent
    verdict = e2e.verdict(lambda verdict: verdict["subject"] == subject)
    [judged] = [path for path in e2e.inbox.glob("*.json") if json.loads(path.read_text())["subject"] == subject]
    return verdict, judged.with_suffix(".eml").read_bytes()


def signature_of(verdict: dict) -> tuple[str, str, bool]:
    return verdict["dkim"], verdict["dkim_selector"], verdict["dmarc_aligned"]


def dkim_row(selector: str, role: str) -> str:
    """A DKIM row of `mailctl verify` (mailctl/verify/dns_checks.py)."""
    return f"dkim {selector}._domainkey.{DOMAIN} ({role})"


def keys_on_host(host: SystemHost) -> list[str]:
    return sorted(path.name for path in host.path(KEYS_ON_HOST).glob("*.key"))


def dkim_checks(e2e, shown: list[str]) -> dict[str, tuple[str, str]]:
    """`mailctl verify --stack` as the operator runs it between steps, green as a whole: its DKIM rows,
    check -> (status, detail). What it printed joins `shown`."""
    verify = mailctl_verify(e2e)
    shown.append(verify.stdout + verify.stderr)
    assert verify.returncode == 0, verify.stdout[-6000:] + verify.stderr[-2000:]
    return {result["check"]: (result["status"], result["detail"])
            for result in json.loads(verify.stdout)["results"] if result["check"].startswith("dkim ")}


def private_lines(pem: str) -> list[str]:
    """The lines of a private key's PEM that would show it: not those holding its modulus, which the public
    key (published in DNS and the stack's outputs) holds too, nor a short last line."""
    public_key = serialization.load_pem_private_key(pem.encode(), None).public_key()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    public = base64.b64encode(der).decode()
    return [line for line in pem.splitlines() if len(line) >= 32 and not line.startswith("-----") and line not in public]


def leaked_fragments(secrets: dict[str, list[str]], shown: list[str]) -> list[str]:
    """The names of the secrets something in `shown` contains (any of each one's fragments)."""
    assert all(secrets.values()), "every secret has something to look for"
    return sorted(name for name, fragments in secrets.items()
                  if any(fragment in text for fragment in fragments for text in shown))


def test_a_dkim_key_rotation_in_three_ups_keeps_mail_verifiable_and_restarts_only_rspamd(e2e, deployed):
    """A three-up DKIM rotation keeps mail passing, restarts only rspamd, leaks no key; old mail verifies till step 3."""
    host = e2e.cloud.vm_host()
    assert keys_on_host(host) == [f"{OLD}.key"], "the first up signs with the default selector"
    # what would show a secret, never printed: only their names are reported if something shows them
    secrets = {"the mailbox password": [e2e.ceres_secret_env()["CERES_SMTP_PASS"]],
               f"the {OLD} DKIM key": private_lines(host.path(f"{KEYS_ON_HOST}/{OLD}.key").read_text()),
               **{key: [value] for key, value in e2e.project.secret_values.items() if "\n" not in value.strip()}}
    shown: list[str] = []  # what the ups and mailctl printed

    # --- step 1: the new key is made and published; `ceres` still signs and nothing on the host changes
    step = rotation_up(e2e, {"dkimPublishedSelectors": [NEW]})
    shown.append(step.run.output)
    assert step.resources == {key_name(NEW): ("create",), record_name(NEW): ("create",)}
    assert step.stages == [] and step.host_changes == set(), "no install stage ran, no file or service changed"
    assert keys_on_host(host) == [f"{OLD}.key"], "the new key is not on the host while it does not sign"
    assert dkim_checks(e2e, shown) == {dkim_row(OLD, "signs"): STACK_KEY, dkim_row(NEW, PUBLISHED): STACK_KEY}
    verdict, signed_before_switch = sent_from_the_mail_host(e2e, "dkim rotation: step 1")
    assert signature_of(verdict) == ("pass", OLD, True), verdict
    assert judge_dkim(e2e, signed_before_switch) == "pass", "the test's verifier agrees with the receiver's"
    records = {selector: served_txt(e2e, f"{selector}._domainkey.{DOMAIN}") for selector in (OLD, NEW)}

    # --- step 2: the new key signs (rspamd alone restarts); the old record stays for mail in flight
    step = rotation_up(e2e, {"dkimSelector": NEW, "dkimPublishedSelectors": [OLD]})
    shown.append(step.run.output)
    # the two records change only their comment (which one signs): the keys they serve stay
    assert step.resources == {MAIL_STAGE: ("update",), record_name(OLD): ("update",), record_name(NEW): ("update",)}
    assert {selector: served_txt(e2e, f"{selector}._domainkey.{DOMAIN}") for selector in (OLD, NEW)} == records
    assert step.stages == [MAIL_STAGE]
    assert step.host_changes == {"/etc/rspamd/local.d/dkim_signing.conf", "rspamd"}, "rspamd restarted, nothing else"
    assert keys_on_host(host) == [f"{NEW}.key"], "only the signing key is on the host"
    assert dkim_checks(e2e, shown) == {dkim_row(NEW, "signs"): STACK_KEY, dkim_row(OLD, PUBLISHED): STACK_KEY}
    secrets[f"the {NEW} DKIM key"] = private_lines(host.path(f"{KEYS_ON_HOST}/{NEW}.key").read_text())
    verdict, _ = sent_from_the_mail_host(e2e, "dkim rotation: step 2")
    assert signature_of(verdict) == ("pass", NEW, True), verdict
    assert judge_dkim(e2e, signed_before_switch) == "pass", "mail signed before the switch still verifies"

    # --- step 3: the old record and key go; nothing on the host changes
    step = rotation_up(e2e, {"dkimPublishedSelectors": []})
    shown.append(step.run.output)
    assert step.resources == {key_name(OLD): ("delete",), record_name(OLD): ("delete",)}
    assert step.stages == [] and step.host_changes == set(), "no install stage ran, no file or service changed"
    assert served_txt(e2e, f"{OLD}._domainkey.{DOMAIN}") is None, "the old record is gone"
    assert dkim_checks(e2e, shown) == {dkim_row(NEW, "signs"): STACK_KEY}
    verdict, _ = sent_from_the_mail_host(e2e, "dkim rotation: step 3")
    assert signature_of(verdict) == ("pass", NEW, True), verdict
    judged = judge_dkim(e2e, signed_before_switch)  # mail signed with the old key no longer verifies: no record
    assert judged.startswith("fail: missing public key") and f"{OLD}._domainkey.{DOMAIN}" in judged, judged

    assert leaked_fragments(secrets, shown) == [], "a secret is in what the ups or mailctl printed"


# --- part 4 of 7: DNSSEC and DANE ---------------------------------------------------------------------------


@dataclass
class Signed:
    """The up that turned dnssec and dane on: what it changed, the stages it ran, when it started, the DS exported."""

    run: EngineRun
    stages: list[str]
    started: float
    ds: str  #: the zone's DS as `dsRecords` gives it, `<domain>. <ttl> IN DS <tag> 13 2 <digest>`

    @property
    def resources(self) -> dict[str, tuple[str, ...]]:
        return {urn.rsplit("::", 1)[-1]: steps for urn, steps in self.run.changed().items()}


@pytest.fixture(scope="module")
def signed(e2e, deployed) -> Signed:
    """`dnssec: true` and `dane: true` set on the running stack (dane needs a signed zone to mean anything), one up."""
    for key in ("dnssec", "dane"):
        e2e.stack.set_config(f"ceres-mail:{key}", ConfigValue("true"))
    started = time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-6000:]
    return Signed(run, stages_started_since(e2e, started), started, e2e.stack.outputs()[DS_OUTPUT].value[DOMAIN]["ds"])


@pytest.fixture(scope="module")
def registered(e2e, signed) -> Answer:
    """The registrar's step: the DS the stack exports goes into com. (signed again; the resolver forgets what it
    cached). The resolver's answer for the MX just before it."""
    before = e2e.dns_tree.ask(e2e.client, DOMAIN, "MX")
    e2e.dns_tree.register_ds(DOMAIN, [signed.ds])
    return before


def test_dnssec_and_dane_sign_the_zone_pin_the_key_and_certify_it_after_its_tlsa(e2e, signed):
    """One up signs the zone, makes the stack's TLS key, publishes its TLSA and only then has it certified."""
    tlsa = {f"_{port}._tcp.{MAIL_HOST}" for port in DANE_PORTS}
    assert signed.resources == {
        f"ceres-mail-dns{RESOURCE_INFIX}{DOMAIN}": ("create",), "ceres-mail-tls-key-tls1": ("create",),
        **{f"ceres-mail-dns-tlsa-{name}-tls1": ("create",) for name in tlsa},
        TLS_STAGE: ("update",), MAIL_STAGE: ("update",)}  # Postfix and Dovecot move to the stack's key
    assert signed.stages == [TLS_STAGE, MAIL_STAGE]
    [tls_started] = [at for at in e2e.cloud.journal.when("ssh.start", TLS_STAGE) if at >= signed.started]
    served_at = [at for at, names in e2e.zones.served if {(name, "TLSA") for name in tlsa} <= names]
    assert served_at and served_at[0] < tls_started, "the TLSA is served before the key it pins is certified"
    assert e2e.zones.signed == {DOMAIN}


def test_the_served_zone_is_signed_whole_with_the_key_whose_ds_is_exported(e2e, signed):
    """The zone as its server transfers it passes dnssec-verify, and its one key is the one the exported DS names."""
    transferred = zone_transfer(e2e.client, ADDRESSES["dns"], DOMAIN)
    judged = verify_signed(DOMAIN, transferred)
    assert judged.returncode == 0 and "Zone fully signed" in judged.stdout, judged.stdout
    zone = dns.zone.from_text(transferred, origin=f"{DOMAIN}.", relativize=False)
    keys = zone.get_rdataset(f"{DOMAIN}.", "DNSKEY")
    exported = dns.rdata.from_text("IN", "DS", signed.ds.split(" DS ", 1)[1])
    assert [dns.dnssec.make_ds(f"{DOMAIN}.", key, "SHA256") for key in keys] == [exported]
    assert {f"_{port}._tcp.{MAIL_HOST}." for port in DANE_PORTS} <= {
        name.to_text() for name, rdataset in zone.iterate_rdatasets("TLSA")}


def test_with_the_ds_registered_delv_validates_the_mx(e2e, registered):
    """Insecure until the registrar holds the exported DS; then the resolver validates the MX, and delv does itself."""
    assert registered.rcode == "NOERROR" and not registered.secure, registered
    after = e2e.dns_tree.ask(e2e.client, DOMAIN, "MX")
    assert after.secure and after.rdata("MX") == [f"10 {MAIL_HOST}."], after
    judged = e2e.dns_tree.delv(e2e.client, DOMAIN, "MX")
    assert judged.stdout.startswith("; fully validated"), judged.stdout + judged.stderr


def test_verify_through_the_validating_resolver_shows_dnssec_ds_and_dane_green(e2e, registered):
    """mailctl verify, asking the validating resolver: the zone validates, the DS names its key, every DANE port pinned."""
    verify = mailctl_verify(e2e, resolver=e2e.dns_tree.resolver)
    assert verify.returncode == 0, verify.stdout[-6000:] + verify.stderr[-2000:]
    rows = {r["check"]: (r["status"], r["detail"]) for r in json.loads(verify.stdout)["results"]
            if r["check"].startswith(("dnssec ", "ds ", "dane "))}
    assert {check: status for check, (status, _) in rows.items()} == {
        f"dnssec {DOMAIN}": OK, f"ds {DOMAIN}": OK, **{f"dane {port} tlsa": OK for port in DANE_PORTS}}, rows
    assert all("DNSSEC-validated" in rows[f"dane {port} tlsa"][1] for port in DANE_PORTS), rows


# --- part 5 of 7: the second up, moves, rotation, replacement, interruption ---------------------------------


def deployed_install_order(e2e) -> list[str]:
    """The install stages in the order the deployed stack's graph runs them (its state's dependencies)."""
    return install_order((r["urn"], r["urn"].rsplit("::", 1)[-1], r.get("dependencies", ()))
                         for r in e2e.project.export(e2e.stack)["resources"] if r["type"] == COMMAND)


def resource_urn(e2e, type_: str, name_suffix: str) -> str:
    [urn] = [r["urn"] for r in e2e.project.export(e2e.stack)["resources"]
             if r["type"] == type_ and r["urn"].endswith(name_suffix)]
    return urn


# --- 4. a second up changes nothing -------------------------------------------------------------------------


def test_a_second_up_changes_no_resource_no_file_and_no_service(e2e, deployed):
    """A second `pulumi up` with nothing changed touches no resource, runs no stage, and leaves the host as it was."""
    before = host_state(e2e)
    started = time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-4000:]
    assert run.changed() == {}
    assert stages_started_since(e2e, started) == [], "no install stage ran"
    assert host_state(e2e) == before


# --- the clients on 465 and back ----------------------------------------------------------------------------


def test_clients_moved_to_465_send_with_implicit_tls(e2e, deployed):
    """Moving the clients to 465 makes CERES and Keycloak send with implicit TLS, signed; moving back restores 587."""
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


# --- 5. password rotation -----------------------------------------------------------------------------------


def test_a_rotated_password_reaches_the_mailbox_the_secret_and_the_realm_in_one_up(e2e, deployed):
    """One up rotating the mailbox password updates the mailbox, CERES's Secret and Keycloak; the old one is refused."""
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


# --- 6. VM replacement, interrupted mid-install ------------------------------------------------------------


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


def test_a_replaced_vm_interrupted_mid_install_is_refreshed_and_converges_to_a_fresh_host(e2e, deployed):
    """One replacement of the VM, the up interrupted (SIGINT to the CLI, as Ctrl-C) once the fresh host's
    packages stage has started; `pulumi refresh` leaves no pending operation and the next up finishes the
    install. Both stories in one fresh install: a replaced VM is a fresh host that gets every stage again,
    after it booted and in the graph's order, with the mailbox password and the firewall as before; and an
    interrupted up converges, leaving no VM behind. (The new VM boots over the installed snapshot of its
    packages, conftest's vm_layers: the first up proved the install from the bare image.)"""
    password = e2e.ceres_secret_env()["CERES_SMTP_PASS"]
    old_host = e2e.cloud.vm_host()
    old_host.path("/root/old-host").write_text("the host before the replacement\n")
    started = time.monotonic()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(run=e2e.up(replace=[resource_urn(e2e, VM, "-vm-vm")])))
    thread.start()
    deadline = time.monotonic() + 900
    while PACKAGES_STAGE not in stages_started_since(e2e, started):
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

    host = e2e.cloud.vm_host()
    assert host is not old_host and not host.path("/root/old-host").exists(), "a fresh host"
    assert len(e2e.cloud.vms) == 1, f"no VM left behind: {sorted(e2e.cloud.vms)}"
    # the VM the interrupted up made is the one that serves: the refresh read it back as it was
    journal = [(at, op) for at, op, _ in e2e.cloud.journal.entries if at >= started]
    [created] = [at for at, op in journal if op == "vm.create"]
    booted = max(at for at, op in journal if op == "vm.running")
    stages = [(at, name) for at, op, name in e2e.cloud.journal.entries if op == "ssh.start" and at >= created]
    assert [name for _, name in stages] == deployed_install_order(e2e), "every stage, in the graph's order"
    assert all(at > booted for at, _ in stages), "nothing ran on a host without the mail stack"
    assert e2e.ceres_secret_env()["CERES_SMTP_PASS"] == password, "the mailbox password is unchanged"
    assert not tcp_open(e2e.remote, 22), "the new VM has its firewall"
    assert e2e.ceres_send(f"after-replace@{REMOTE_DOMAIN}", "after the replacement")["sent"] is True
    assert e2e.verdict(lambda verdict: verdict["subject"] == "after the replacement")["dkim"] == "pass"


# --- part 6 of 7: one password everywhere (LDAP) ------------------------------------------------------------


class Secrets(dict):
    """Name -> secret, shown by its names only: pytest prints a failed test's fixtures, and the test's
    output must not hold a password."""

    def __repr__(self) -> str:
        return f"<secrets: {', '.join(self)}>"


@dataclass
class Directory:
    """The stack after the switch: the up, the stages it ran, the directory as declared, the stack's secrets."""

    run: EngineRun
    stages: list[str]
    ldap: LdapInputs
    secrets: Secrets  #: what must never show -> its value (only names are ever reported)


def state_secret(e2e, name_suffix: str) -> str:
    """A random password's value from the stack's state (`pulumi stack export --show-secrets`), to look for it
    where it must not be and to bind with it as Keycloak does."""
    resources = e2e.stack.export_stack().deployment["resources"]
    [value] = [r["outputs"]["result"] for r in resources if r["type"] == PASSWORD and r["urn"].endswith(name_suffix)]
    return json.loads(value["plaintext"]) if isinstance(value, dict) else value


def leaked_secrets(secret_values: dict[str, str], *shown: str) -> list[str]:
    """The names of the secrets something in `shown` contains."""
    return sorted(name for name, value in secret_values.items() if any(value in text for text in shown))


@pytest.fixture(scope="module")
def directory(e2e, deployed) -> Directory:
    """`ldapMode: local` and `ldapClientCidrs: [the SSO host]` set on the running stack, then one up."""
    assert e2e.stack.get_all_config().get("ceres-mail:ldapMode", ConfigValue("off")).value == "off", \
        "the scenario's stack has no directory before the switch"
    e2e.stack.set_config("ceres-mail:ldapMode", ConfigValue("local"))
    e2e.stack.set_config("ceres-mail:ldapClientCidrs[0]", ConfigValue(SSO_EGRESS), path=True)
    started = time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-6000:]
    ldap = stack_settings(e2e.project.work_dir, STACK).ldap_inputs
    stack_secrets = Secrets({"the directory's root DN password": state_secret(e2e, "-ldap-admin-password"),
                             "the service account's password": state_secret(e2e, "-ldap-bind-password"),
                             "the mailbox password": e2e.ceres_secret_env()["CERES_SMTP_PASS"]})
    return Directory(run, stages_started_since(e2e, started), ldap, stack_secrets)


@pytest.fixture(scope="module")
def people(e2e, directory) -> Secrets:
    """The operator adds people to the directory as root on the mail host (ldapadd over slapd's socket), each
    with a first password in clear, which slapd hashes: uid -> their password now (tests that change one
    update it)."""
    passwords = Secrets({uid: f"{uid}-{secrets.token_urlsafe(12)}" for uid in PERSONS})
    ldif = "\n".join(f"dn: {person_dn(directory, uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\n"
                     f"sn: Example\nmail: {uid}@{DOMAIN}\nuserPassword: {passwords[uid]}\n" for uid, cn in PERSONS.items())
    added = e2e.cloud.vm_host().exec(["ldapadd", "-Q", "-Y", "EXTERNAL", "-H", SLAPD_LDAPI], input=ldif)
    assert added.returncode == 0, added.stdout + added.stderr
    return passwords


@pytest.fixture(scope="module")
def login_client(e2e, directory):
    """A client of the CERES realm with direct access grants, for password logins without a browser (removed
    after the module: CERES's realm keeps only what CERES and the stack put in it)."""
    client_uuid = e2e.keycloak.create_login_client(REALM, LOGIN_CLIENT)
    yield LOGIN_CLIENT
    e2e.keycloak.delete_client(REALM, client_uuid)


def person_dn(directory: Directory, uid: str) -> str:
    return f"uid={uid},{directory.ldap.users_dn}"


def federation_config(e2e) -> tuple[dict, dict[str, str]]:
    """The realm's one user federation as Keycloak's admin API shows it, and its config (first values)."""
    [federation] = e2e.keycloak.user_federations(REALM)
    return federation, {key: values[0] for key, values in federation["config"].items() if values}


def keycloak_ldap_log(e2e) -> str:
    """Keycloak's recent log lines about LDAP and TLS: why a login or the federation failed, if it did."""
    return "".join(line for line in e2e.sso.log_tail(400).splitlines(keepends=True)
                   if any(word in line for word in ("LDAP", "ldap", "SSL", "PKIX", "certificate")))[-4000:]


def sign_ins(e2e, uid: str, password: str, subject: str) -> dict[str, dict]:
    """`password` tried by person `uid` everywhere it should open: a Keycloak login of the CERES realm (by
    uid), IMAPS and submission on 587 (by mail address, sending to the other domain), each as answered."""
    address, path = f"{uid}@{DOMAIN}", password_file(e2e, f"{uid}-try", password)
    return {"keycloak": e2e.keycloak.password_login(REALM, LOGIN_CLIENT, uid, password),
            "imaps": imap_login(e2e, path, user=address),
            "submission": submit(e2e, path, subject, user=address)}


def taken(answers: dict[str, dict]) -> dict[str, bool]:
    """Which of sign_ins' answers took the password."""
    return {"keycloak": answers["keycloak"]["status"] == 200, "imaps": "exception" not in answers["imaps"],
            "submission": answers["submission"].get("sent") is True}


def refused_as_wrong(answers: dict[str, dict]) -> dict[str, bool]:
    """Which of sign_ins' answers refused the password as a wrong one (not for another reason)."""
    keycloak = answers["keycloak"]
    return {"keycloak": (keycloak["status"], keycloak["error"], keycloak["error_description"])  # RFC 6749 5.2: 400
            == (400, "invalid_grant", "Invalid user credentials"),
            "imaps": "AUTHENTICATIONFAILED" in answers["imaps"].get("exception", ""),
            "submission": "535" in answers["submission"].get("exception", "")}


def stored_password(e2e, directory: Directory, uid: str) -> str:
    """A person's userPassword as slapd stores it, read as root on the host (over the network, only the root DN
    may read it)."""
    found = e2e.cloud.vm_host().exec(["ldapsearch", "-LLL", "-o", "ldif-wrap=no", "-Q", "-Y", "EXTERNAL",
                                      "-H", SLAPD_LDAPI, "-s", "base", "-b", person_dn(directory, uid), "userPassword"])
    assert found.returncode == 0, found.stderr
    [line] = [line for line in found.stdout.splitlines() if line.startswith("userPassword")]
    return base64.b64decode(line.split(":: ", 1)[1]).decode() if ":: " in line else line.split(": ", 1)[1]


def ldap_probe(e2e, name: str, *args: str, as_dn: str = "", password: str = "") -> dict:
    """tests/mailnet/ldap_probe.py from the SSO host, the directory's one client network, over LDAPS with the
    certificate checked against the ACME CA: bound as `as_dn`, or not at all."""
    auth = ("--dn", as_dn, "--password-file", password_file(e2e, "ldap-bind", password)) if as_dn else ()
    result = e2e.sso.host.run([PYTHON, str(LDAP_PROBE), name, "--host", MAIL, "--name", MAIL_HOST,
                               "--cafile", str(e2e.pebble_root), *auth, *args], timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the switch ---------------------------------------------------------------------------------------------


def test_adding_the_directory_runs_the_ldap_stage_then_mail_and_federates_the_realm(e2e, directory):
    """Adding a local directory runs packages, ldap, mail, federates over LDAPS, touches nothing else, leaks no secret."""
    assert {urn.rsplit("::", 1)[-1]: steps for urn, steps in directory.run.changed().items()} == SWITCH_CHANGES, \
        "the directory is added to the live stack; the VM, DNS, CERES's Secret and the realm stay as they were"
    assert directory.stages == list(SWITCH_STAGES), "slapd's packages, then its stage, then the mailboxes"
    federation, config = federation_config(e2e)
    assert (federation["providerId"], federation["name"]) == ("ldap", "ceres-mail-directory")
    assert {key: config.get(key) for key in ("connectionUrl", "editMode", "usePasswordModifyExtendedOp", "startTls",
                                             "useTruststoreSpi", "bindDn", "usersDn", "authType")} == {
        "connectionUrl": f"ldaps://{MAIL_HOST}", "editMode": "WRITABLE", "usePasswordModifyExtendedOp": "true",
        "startTls": "false", "useTruststoreSpi": "always", "bindDn": directory.ldap.bind_dn,
        "usersDn": directory.ldap.users_dn, "authType": "simple"}
    assert config["bindCredential"] == MASK, "Keycloak shows the bind password masked"
    state = json.dumps(e2e.project.export(e2e.stack))
    assert leaked_secrets(directory.secrets, json.dumps(federation), directory.run.output, state) == [], \
        "a secret is in Keycloak's answer, the up's output or the stored state"


def test_mailctl_verify_from_the_sso_network_shows_the_directory_green(e2e, directory):
    """Run where the directory is open (ldapClientCidrs): its certificate and an anonymous search, with the
    rest of verify."""
    verify = mailctl_verify(e2e, host=e2e.sso.host, resolver=e2e.dns_tree.resolver)  # the zone is signed by now
    assert verify.returncode == 0, verify.stdout[-6000:] + verify.stderr[-2000:]
    rows = {r["check"]: (r["status"], r["detail"]) for r in json.loads(verify.stdout)["results"]
            if r["check"].startswith("ldap ")}
    assert {check: status for check, (status, _) in rows.items()} == {
        f"ldap {MAIL_HOST}:636 ldaps": OK, f"ldap {MAIL_HOST}:636 anonymous": OK}, rows
    assert leaked_secrets(directory.secrets, verify.stdout, verify.stderr) == []


# --- one password -------------------------------------------------------------------------------------------


def test_a_directory_person_signs_in_to_keycloak_and_imaps_and_submits_with_one_password(e2e, directory, people,
                                                                                          login_client):
    """A directory person signs in to Keycloak, reads over IMAPS and sends on 587 with one password; mail is signed."""
    subject = f"from erin, one password {time.monotonic_ns()}"
    answers = sign_ins(e2e, "erin", people["erin"], subject)
    assert taken(answers) == {"keycloak": True, "imaps": True, "submission": True}, (answers, keycloak_ldap_log(e2e))
    user = e2e.keycloak.request("GET", f"/admin/realms/{REALM}/users/{e2e.keycloak.user_id(REALM, 'erin')}")
    federation, _ = federation_config(e2e)
    assert (user["federationLink"], user["email"], user["firstName"]) == (federation["id"], f"erin@{DOMAIN}", "Erin"), \
        "Keycloak's user is the directory's person"
    verdict = e2e.verdict(lambda verdict: verdict["subject"] == subject)
    assert (verdict["dkim"], verdict["dmarc_aligned"], verdict["mail_from"]) == ("pass", True, f"erin@{DOMAIN}"), verdict
    assert verdict["peer"] == MAIL


def test_a_password_reset_in_keycloak_is_the_mail_password_from_then_on_and_is_stored_hashed(e2e, directory, people,
                                                                                              login_client):
    """A password reset in Keycloak becomes the mail password too, the old one refused everywhere, stored hashed."""
    old, new = people["erin"], f"erin-{secrets.token_urlsafe(12)}"
    hash_before = stored_password(e2e, directory, "erin")
    e2e.keycloak.reset_password(REALM, e2e.keycloak.user_id(REALM, "erin"), new)
    people["erin"] = new
    answers = sign_ins(e2e, "erin", old, "erin's old password")
    assert refused_as_wrong(answers) == {"keycloak": True, "imaps": True, "submission": True}, answers
    answers = sign_ins(e2e, "erin", new, "erin's new password")
    assert taken(answers) == {"keycloak": True, "imaps": True, "submission": True}, (answers, keycloak_ldap_log(e2e))
    stored = stored_password(e2e, directory, "erin")
    assert stored != hash_before, "Keycloak wrote the new password to the directory"
    assert stored.startswith("{ARGON2}$argon2") and new not in stored, "and slapd hashed it"


def test_a_wrong_password_is_refused_by_keycloak_imaps_and_submission(e2e, directory, people, login_client):
    """A wrong password is refused as wrong by Keycloak, IMAPS and submission alike."""
    answers = sign_ins(e2e, "erin", people["erin"] + "-not", "erin, a wrong password")
    assert refused_as_wrong(answers) == {"keycloak": True, "imaps": True, "submission": True}, answers


# --- who reads what, and from where -------------------------------------------------------------------------


def test_anonymous_reads_nothing_and_no_one_reads_another_persons_password(e2e, directory, people):
    """Anonymous reads nothing, a person only their own entry, the service account the people; no one reads a hash."""
    base, people_dn = directory.ldap.base_dn, directory.ldap.users_dn
    assert not ldap_probe(e2e, "bind")["ok"], "an anonymous bind is refused"
    assert ldap_probe(e2e, "search", "--base", base)["entries"] == [], "an anonymous search reads nothing"

    erin = {"as_dn": person_dn(directory, "erin"), "password": people["erin"]}
    other = ldap_probe(e2e, "search", "--base", person_dn(directory, "frank"), "--scope", "base", **erin)
    assert other["entries"] == [], "a person reads nothing of another"
    [own] = ldap_probe(e2e, "search", "--base", person_dn(directory, "erin"), "--scope", "base", **erin)["entries"]
    assert own["attributes"]["mail"] == [f"erin@{DOMAIN}"] and "userPassword" not in own["attributes"], \
        "a person reads their own entry, not their own hash"

    service = {"as_dn": directory.ldap.bind_dn, "password": directory.secrets["the service account's password"]}
    found = ldap_probe(e2e, "search", "--base", people_dn, "--filter", "(objectClass=inetOrgPerson)", **service)
    assert sorted(entry["attributes"]["uid"][0] for entry in found["entries"]) == sorted(PERSONS), found
    assert not any("userPassword" in entry["attributes"] for entry in found["entries"]), \
        "Keycloak's service account reads the people, never a hash"


def test_the_directory_answers_the_sso_network_only_and_nothing_listens_on_389(e2e, directory):
    """LDAPS answers only ldapClientCidrs (the SSO host), not the internet or the operator; nothing listens on 389."""
    assert tcp_open(e2e.sso.host, 636), "LDAPS from where Keycloak connects"
    assert not tcp_open(e2e.remote, 636), "no LDAPS from the internet"
    assert not tcp_open(e2e.client, 636), "nor from the operator's machine: it is not in ldapClientCidrs"
    host = e2e.cloud.vm_host()
    assert host.exec(["ss", "-Hltn", "sport = :389"]).stdout.strip() == "", "no plain LDAP listener at all"
    assert host.exec(["ss", "-Hltn", "sport = :636"]).stdout.strip() != ""


# --- at rest ------------------------------------------------------------------------------------------------


def test_a_second_up_changes_nothing(e2e, directory):
    """With the directory, a second up changes no resource, file, service or federation, and prints no secret."""
    files, services = CONFIG_FILES + LDAP_FILES, SERVICES + ("slapd",)
    before, federation_before = host_state(e2e, files, services), federation_config(e2e)
    started = time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-4000:]
    assert run.changed() == {}
    assert stages_started_since(e2e, started) == [], "no install stage ran"
    assert host_state(e2e, files, services) == before
    assert federation_config(e2e) == federation_before
    assert leaked_secrets(directory.secrets, run.output) == []


# --- part 7 of 7: destroy -----------------------------------------------------------------------------------


def test_destroy_removes_the_host_the_records_and_the_secret_and_leaves_the_realm(e2e, deployed):
    """With a directory (the LDAP part ran just before), the realm's LDAP federation is the stack's: it goes,
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
