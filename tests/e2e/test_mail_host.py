"""The mail host the first `pulumi up` built, judged from outside by real peers: what it serves and refuses.

Runs after the first up and before the scenario of test_up.py changes anything (pytest takes the modules in
name order); every check here only reads or sends mail.
"""

from __future__ import annotations

import time
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives import serialization

from components.builders.dns_records import mta_sts_id
from components.builders.ports import STRICT_TLS_PORTS
from tests.conftest import stack_config
from tests.e2e.conftest import ADDRESSES, DOMAIN, MAIL_HOST
from tests.mailnet.scenario import REMOTE_DOMAIN

pytestmark = pytest.mark.slow

MAIL = ADDRESSES["mail"]
MTA_STS_HOST = f"mta-sts.{DOMAIN}"
TLS_PORTS = [(25, "smtp"), (465, "none"), (587, "smtp"), (993, "none"), (443, "none")]


@pytest.fixture(scope="module")
def host(e2e, deployed):
    """The VM's host, as the Proxmox stand-in booted it."""
    return e2e.cloud.vm_host()


# --- first boot and access --------------------------------------------------------------------------------


def test_first_boot_ran_cloud_init_from_the_uploaded_snippets(host):
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
    result = e2e.client.run(["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                             "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
                             "-o", "PreferredAuthentications=password,keyboard-interactive", f"ceres@{MAIL}", "true"],
                            timeout=60)
    assert result.returncode == 255 and "Permission denied (publickey)" in result.stderr, result.stderr


def test_the_dkim_key_is_readable_by_rspamd_only(host):
    key = host.path("/var/lib/rspamd/dkim/ceres.key")
    assert oct(key.stat().st_mode & 0o777) == "0o640"
    serialization.load_pem_private_key(key.read_bytes(), None)  # the key the graph generated, whole


# --- mail in and out ---------------------------------------------------------------------------------


def test_mail_from_another_domain_is_delivered_to_the_data_disk_and_read_over_imaps(e2e, host, mailbox_password):
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
    sent = e2e.ceres_send(f"selector@{REMOTE_DOMAIN}", "which selector")
    assert sent["sent"] is True, sent
    verdict = e2e.verdict(lambda verdict: verdict["subject"] == "which selector")
    assert (verdict["dkim_domain"], verdict["dkim_selector"], verdict["spf"]) == (DOMAIN, "ceres", "pass")
    assert verdict["peer"] == MAIL and verdict["helo"] == MAIL_HOST


# --- what must be refused --------------------------------------------------------------------------------


def test_no_open_relay(e2e, deployed):
    refused = e2e.probe("send", "--host", MAIL, "--port", "25", "--sender", f"spammer@{REMOTE_DOMAIN}",
                        "--to", "victim@example.org", "--subject", "relay attempt")
    assert refused.get("accepted") is False, refused
    assert any("Relay access denied" in str(v) for v in refused.get("refused", {}).values()), refused


def test_no_auth_before_starttls(e2e, deployed):
    result = e2e.probe("auth-plain", "--host", MAIL, "--port", "587")
    assert result["auth_offered"] is False and result["code"] >= 500, result


def test_465_refuses_to_send_as_another_address(e2e, mailbox_password):
    sent = e2e.probe("submit", "--host", MAIL, "--name", MAIL_HOST, "--port", "465", "--tls-mode", "implicit",
                     "--cafile", str(e2e.pebble_root), "--user", f"no-reply@{DOMAIN}",
                     "--password-file", str(mailbox_password), "--sender", f"ceo@{DOMAIN}",
                     "--to", f"newuser@{REMOTE_DOMAIN}", "--subject", "spoof")
    assert "Sender address rejected" in sent.get("exception", ""), sent


def test_imap_without_tls_is_closed(e2e, deployed):
    result = e2e.probe("imap-plaintext", "--host", MAIL, "--port", "143", "--user", f"no-reply@{DOMAIN}")
    assert result["connected"] is False, result


# --- TLS --------------------------------------------------------------------------------------------------


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
    cert = e2e.probe("certificate", "--host", MAIL, "--port", str(port), "--starttls", starttls,
                     "--name", name, "--cafile", str(e2e.pebble_root))
    assert "exception" not in cert, cert  # the chain verified against pebble's root, the name matched
    assert cert["san"] == [MAIL_HOST, MTA_STS_HOST]
    assert "Pebble" in cert["issuer"]


def test_mta_sts_policy_is_served_and_matches_the_dns_id(e2e, deployed):
    served = e2e.probe("https", "--host", MAIL, "--name", MTA_STS_HOST, "--cafile", str(e2e.pebble_root))
    assert served.get("status") == 200, served
    assert served["body"] == f"version: STSv1\nmode: testing\nmx: {MAIL_HOST}\nmax_age: 604800\n"
    published = e2e.probe("dns", "--host", ADDRESSES["dns"], "--name", f"_mta-sts.{DOMAIN}", "--subject", "TXT")
    assert f"id={mta_sts_id(served['body'])}" in published["answer"][0]
