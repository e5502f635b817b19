"""The native mail stack, installed by the graph's own commands on a real Debian host in the test
internet, and judged by real peers (README, Tests).

One session fixture boots the hosts and runs the install once (tests/mailnet/fixtures.py); the tests
then act as CERES, as other mail servers, as mail clients and as attackers. The last test rebuilds the
mail host from scratch to interrupt installs on purpose.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import time
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives import serialization

from components.builders.dns_records import mta_sts_id
from components.builders.ports import STRICT_TLS_PORTS
from tests.conftest import stack_config
from tests.mailnet.scenario import ADDRESSES, REMOTE_DOMAIN, STAGE_ORDER

pytestmark = pytest.mark.slow

MAIL = ADDRESSES["mail"]
SERVICES = ("postfix", "dovecot", "rspamd", "redis-server", "nginx")
CONFIG_FILES = (
    "/etc/postfix/main.cf",
    "/etc/postfix/master.cf",
    "/etc/postfix/ceres-aliases",
    "/etc/postfix/ceres-mailboxes",
    "/etc/dovecot/conf.d/99-ceres-mail.conf",
    "/etc/rspamd/local.d/dkim_signing.conf",
    "/var/lib/rspamd/dkim/ceres.key",
    "/etc/nginx/sites-available/ceres-mail",
    "/var/www/mta-sts/.well-known/mta-sts.txt",
)


def file_hashes(mailnet) -> dict[str, str]:
    return {path: hashlib.sha256(mailnet.mail.path(path).read_bytes()).hexdigest() for path in CONFIG_FILES}


def effective_config(mailnet) -> dict[str, str]:
    """The configuration in effect: the rendered files byte for byte, Postfix's as `postconf` reads it
    (after an interrupted package configuration main.cf may list the same settings in another order)."""
    state = {path: digest for path, digest in file_hashes(mailnet).items() if path != "/etc/postfix/main.cf"}
    for flag in ("-n", "-M", "-P"):
        state[f"postconf {flag}"] = mailnet.mail.exec(["postconf", flag]).stdout
    return state


def service_starts(mailnet) -> dict[str, str]:
    starts = {}
    for service in SERVICES:
        shown = mailnet.mail.exec(["systemctl", "show", "-p", "ActiveEnterTimestampMonotonic,ActiveState", service])
        starts[service] = shown.stdout.strip()
    return starts


@pytest.fixture(scope="module")
def credentials(mailnet, installed):
    """The password file of the CERES Secret's CERES_SMTP_PASS (mode 0600, never on a command line)."""
    path = mailnet.workdir / "ceres-smtp-pass"
    path.write_text(mailnet.deployment.ceres_env["CERES_SMTP_PASS"])
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def pebble_root(mailnet):
    """Pebble's issuing root, fetched from its management port (it makes a new one at every start)."""
    fetched = mailnet.probe("fetch", "--host", ADDRESSES["acme"], "--cafile", str(mailnet.pebble_listener_ca),
                            "--path", f"https://{ADDRESSES['acme']}:15000/roots/0")
    assert fetched.get("status") == 200, fetched
    path = mailnet.workdir / "pebble-root.pem"
    path.write_text(fetched["body"])
    return path


# --- 1. install, and a re-run that changes nothing --------------------------------------------------


def test_first_boot_ran_cloud_init_from_the_stacks_snippets(mailnet):
    """cloud-init finished without error, created the admin user and planted the pinned host key."""
    status = mailnet.mail.exec(["cloud-init", "status", "--long"])
    assert "status: done" in status.stdout, status.stdout + status.stderr
    keys = sorted(p.name for p in mailnet.mail.path("/etc/ssh").glob("ssh_host_*key.pub"))
    assert keys == ["ssh_host_ed25519_key.pub"]
    planted = mailnet.mail.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert planted == mailnet.deployment.host_public_key.split()[:2]


def test_install_succeeds_over_ssh_with_the_pinned_host_key(installed):
    assert [r.returncode for r in installed] == [0] * len(STAGE_ORDER)
    assert "ceres-mail: mail.example.com ready for example.com" in installed[-1].stdout


def test_ssh_refuses_a_host_key_other_than_the_pinned_one(mailnet, installed):
    """The client trusts only the stack's host key: another key in known_hosts means no connection."""
    wrong = mailnet.workdir / "wrong_known_hosts"
    wrong.write_text(f"{MAIL} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL4YsBWNsiUHJg5MivPSYRsb/FByMtRcqEKNrXyt/h2G\n")
    result = mailnet.ssh("true", extra=("-o", f"UserKnownHostsFile={wrong}"), timeout=60)
    assert result.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_rerun_changes_no_file_and_restarts_no_service(mailnet, installed):
    hashes, starts = file_hashes(mailnet), service_starts(mailnet)
    assert all("ActiveState=active" in state for state in starts.values()), starts
    again = mailnet.install()
    assert [r.returncode for r in again] == [0] * len(STAGE_ORDER), again[-1].stderr
    updated = [line for r in again for line in r.stdout.splitlines() if line.startswith("updated ")]
    assert updated == []
    assert file_hashes(mailnet) == hashes
    assert service_starts(mailnet) == starts


def test_secrets_stay_out_of_the_install_output(mailnet, installed):
    password = mailnet.deployment.ceres_env["CERES_SMTP_PASS"]
    for result in installed:
        assert password not in result.stdout + result.stderr
        assert "PRIVATE KEY" not in result.stdout + result.stderr
    key = mailnet.mail.path("/var/lib/rspamd/dkim/ceres.key")
    assert oct(key.stat().st_mode & 0o777) == "0o640"


# --- 2. CERES sends: DKIM, SPF, DMARC as judged by the receiving MTA --------------------------------


def verdict_on(mailnet, subject: str, timeout: float = 60) -> dict:
    """The receiving MTA's verdict on the message with `subject`, once it arrived (polled)."""
    deadline = time.monotonic() + timeout
    while not (verdict := next((v for v in mailnet.verdicts() if v["subject"] == subject), None)):
        assert time.monotonic() < deadline, mailnet.mail.exec(["journalctl", "-u", "postfix@-", "-n", "50"]).stdout
        time.sleep(1)
    return verdict


def test_ceres_credentials_submit_mail_that_passes_dkim_spf_and_dmarc(mailnet, credentials):
    env = mailnet.deployment.ceres_env
    assert (env["CERES_SMTP_PORT"], env["CERES_SMTP_STARTTLS"], env["CERES_SMTP_TLS"]) == ("587", "true", "false")
    subject = f"onboarding {time.time_ns()}"
    sent = mailnet.probe("submit", "--host", MAIL, "--name", env["CERES_SMTP_HOST"], "--port", env["CERES_SMTP_PORT"],
                         "--user", env["CERES_SMTP_USER"], "--password-file", str(credentials),
                         "--sender", env["CERES_MAIL_FROM"], "--to", f"newuser@{REMOTE_DOMAIN}", "--subject", subject)
    assert sent.get("sent") is True, sent
    verdict = verdict_on(mailnet, subject)
    assert verdict["dkim"] == "pass" and verdict["dkim_domain"] == "example.com" and verdict["dkim_selector"] == "ceres"
    assert verdict["spf"] == "pass", verdict
    assert verdict["dmarc_aligned"] is True
    assert verdict["peer"] == MAIL and verdict["helo"] == "mail.example.com"


def test_ceres_credentials_submit_on_465_with_implicit_tls(mailnet, credentials, pebble_root):
    """CERES set to smtpPort 465 / smtpTls (RFC 8314): the same credentials deliver, signed."""
    env = mailnet.deployment.ceres_env
    subject = f"implicit tls {time.time_ns()}"
    sent = mailnet.probe("submit", "--host", MAIL, "--name", env["CERES_SMTP_HOST"], "--port", "465",
                         "--tls-mode", "implicit", "--cafile", str(pebble_root),
                         "--user", env["CERES_SMTP_USER"], "--password-file", str(credentials),
                         "--sender", env["CERES_MAIL_FROM"], "--to", f"newuser@{REMOTE_DOMAIN}", "--subject", subject)
    assert sent.get("sent") is True, sent
    verdict = verdict_on(mailnet, subject)
    assert verdict["dkim"] == "pass" and verdict["dmarc_aligned"] is True, verdict


def test_465_refuses_to_send_as_another_address(mailnet, credentials, pebble_root):
    env = mailnet.deployment.ceres_env
    sent = mailnet.probe("submit", "--host", MAIL, "--name", env["CERES_SMTP_HOST"], "--port", "465",
                         "--tls-mode", "implicit", "--cafile", str(pebble_root),
                         "--user", env["CERES_SMTP_USER"], "--password-file", str(credentials),
                         "--sender", "ceo@example.com", "--to", f"newuser@{REMOTE_DOMAIN}", "--subject", "spoof")
    assert "Sender address rejected" in sent.get("exception", ""), sent


# --- 3. mail from another domain arrives and is read over IMAPS -------------------------------------


def test_mail_from_another_domain_is_delivered_and_read_over_imaps(mailnet, credentials, pebble_root):
    subject = f"hello from {REMOTE_DOMAIN} {time.time_ns()}"
    accepted = mailnet.probe("send", "--host", MAIL, "--port", "25", "--sender", f"someone@{REMOTE_DOMAIN}",
                             "--to", "postmaster@example.com", "--subject", subject, host=mailnet.remote)
    assert accepted.get("accepted") is True, accepted
    read = mailnet.probe("imap", "--host", MAIL, "--port", "993", "--user", mailnet.deployment.ceres_env["CERES_SMTP_USER"],
                         "--password-file", str(credentials), "--subject", subject, "--cafile", str(pebble_root),
                         "--wait", "60", timeout=90)
    assert read.get("found") is True, read
    assert subject in read["message"]
    # and it is stored on the mail data disk, not on the system disk
    stored = mailnet.mail.exec(["grep", "-rl", subject, "/var/mail/vhosts/example.com/no-reply/Maildir"])
    assert stored.returncode == 0 and stored.stdout.strip(), stored
    for path in stored.stdout.split():
        filesystem = mailnet.mail.exec(["findmnt", "-n", "-o", "SOURCE", "--target", path]).stdout.strip()
        assert filesystem == "maildata", (path, filesystem)


# --- 4. what must be refused ------------------------------------------------------------------------


def test_no_open_relay(mailnet, installed):
    refused = mailnet.probe("send", "--host", MAIL, "--port", "25", "--sender", f"spammer@{REMOTE_DOMAIN}",
                            "--to", "victim@example.org", "--subject", "relay attempt")
    assert refused.get("accepted") is False, refused
    assert any("Relay access denied" in str(v) for v in refused.get("refused", {}).values()), refused


def test_no_auth_before_starttls(mailnet, installed):
    result = mailnet.probe("auth-plain", "--host", MAIL, "--port", "587")
    assert result["auth_offered"] is False and result["code"] >= 500, result


TLS_PORTS = [(25, "smtp"), (465, "none"), (587, "smtp"), (993, "none"), (443, "none")]


@pytest.mark.parametrize("port, starttls", TLS_PORTS)
def test_old_tls_versions_are_refused_where_tls_1_2_is_accepted(mailnet, installed, port, starttls):
    """TLS 1.2 first, so a port that is simply closed cannot pass as one that refuses old versions; then
    TLS 1.0 and 1.1 are refused on every port, 25 included (the README's minimum for it is TLS 1.2 too)."""
    accepted = mailnet.probe("tls-version", "--host", MAIL, "--port", str(port), "--starttls", starttls,
                             "--version", "TLSv1_2")
    assert accepted == {"handshake": True, "tls_version": "TLSv1.2"}, accepted
    for version in ("TLSv1", "TLSv1_1"):
        result = mailnet.probe("tls-version", "--host", MAIL, "--port", str(port), "--starttls", starttls,
                               "--version", version, "--name", "mail.example.com")
        assert result["handshake"] is False, (version, result)


def sslscan(mailnet, port: int, starttls: str) -> list[tuple[str, str]]:
    """(protocol, cipher) of every suite the port accepts, as Debian's sslscan finds them from the client."""
    argv = ["sslscan", "--no-colour", "--no-heartbleed", "--no-fallback", "--xml=-", "--sni-name=mail.example.com"]
    argv += ["--starttls-smtp"] if starttls == "smtp" else []
    result = mailnet.client.run([*argv, f"{MAIL}:{port}"], timeout=300)
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
def test_client_ports_offer_only_intermediate_suites(mailnet, installed, port, starttls):
    suites = sslscan(mailnet, port, starttls)
    assert {p for p, _ in suites} == {"TLSv1.2", "TLSv1.3"}, suites
    assert weak_suites(suites) == [], f"port {port}"


def test_port_25_stays_open_to_older_senders(mailnet, installed):
    """Opportunistic TLS on the MX (RFC 7435): wider than the client ports on purpose, never below TLS 1.2."""
    suites = sslscan(mailnet, 25, "smtp")
    assert {p for p, _ in suites} == {"TLSv1.2", "TLSv1.3"}, suites
    assert weak_suites(suites), "port 25 offers more than the strict suites"


def test_https_never_compresses_over_tls(mailnet, pebble_root):
    """HTTP compression over TLS leaks secrets by size (BREACH): asked for gzip, nginx answers plain."""
    served = mailnet.probe("https", "--host", MAIL, "--name", "mta-sts.example.com", "--cafile", str(pebble_root),
                           "--accept-encoding")
    assert served.get("status") == 200, served
    assert "content-encoding" not in served["headers"], served["headers"]


def test_imap_without_tls_is_closed(mailnet, installed):
    result = mailnet.probe("imap-plaintext", "--host", MAIL, "--port", "143", "--user", "no-reply@example.com")
    assert result["connected"] is False, result


def test_ssh_refuses_password_login(mailnet, installed):
    result = mailnet.ssh("true", timeout=60, extra=("-o", "PubkeyAuthentication=no",
                                                   "-o", "PreferredAuthentications=password,keyboard-interactive"))
    assert result.returncode == 255 and "Permission denied (publickey)" in result.stderr, result.stderr


# --- 5. certificates from the ACME server, MTA-STS served ---------------------------------------------


@pytest.mark.parametrize("port, starttls, name", [(587, "smtp", "mail.example.com"), (993, "none", "mail.example.com"),
                                                 (443, "none", "mta-sts.example.com")])
def test_certificate_is_issued_by_the_acme_server_for_the_right_names(mailnet, pebble_root, port, starttls, name):
    cert = mailnet.probe("certificate", "--host", MAIL, "--port", str(port), "--starttls", starttls,
                         "--name", name, "--cafile", str(pebble_root))
    assert "exception" not in cert, cert  # the chain verified against pebble's root, the name matched
    assert cert["san"] == ["mail.example.com", "mta-sts.example.com"]
    assert "Pebble" in cert["issuer"]


def test_mta_sts_policy_is_served_and_matches_the_dns_id(mailnet, pebble_root):
    served = mailnet.probe("https", "--host", MAIL, "--name", "mta-sts.example.com", "--cafile", str(pebble_root))
    assert served.get("status") == 200, served
    assert served["body"] == "version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 604800\n"
    assert mta_sts_id(served["body"]) == mailnet.deployment.mta_sts_id


# --- 6. interrupted installs converge -------------------------------------------------------------------


KILL_SEED_ENV = "CERES_MAIL_KILL_SEED"


def test_installs_killed_at_random_points_converge(mailnet, installed):
    """Rebuild the host from scratch; three times, kill the install at a random moment; then run it to the
    end: the result is the same configuration as an uninterrupted install. The moments come from a seed
    that the test prints; setting CERES_MAIL_KILL_SEED to it replays the same moments."""
    reference = effective_config(mailnet)
    seed = int(os.environ.get(KILL_SEED_ENV) or random.randrange(1 << 32))
    print(f"kill moments from seed {seed}; replay with {KILL_SEED_ENV}={seed}")
    chance = random.Random(seed)
    mailnet.rebuild_mail_host()
    for attempt in range(3):
        ssh = mailnet.ssh_background_install()
        delay = chance.uniform(1.0, 25.0)
        time.sleep(delay)
        mailnet.mail.exec(["pkill", "-KILL", "-f", "ceres-mail-(access|packages|tls|mail)"])
        mailnet.mail.exec(["pkill", "-KILL", "-f", "apt-get|dpkg|certbot"])
        try:
            ssh.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ssh.kill()
        # a killed dpkg leaves its lock and half-configured packages, as a real crash would
        print(f"attempt {attempt + 1}: killed after {delay:.1f} s (seed {seed})")
    final = mailnet.install()
    assert [r.returncode for r in final] == [0] * len(STAGE_ORDER), f"{KILL_SEED_ENV}={seed}: {final[-1].stdout[-3000:]}{final[-1].stderr[-3000:]}"
    assert effective_config(mailnet) == reference, f"{KILL_SEED_ENV}={seed}"
    assert all("ActiveState=active" in s for s in service_starts(mailnet).values())


def test_the_admin_logs_in_with_the_declared_keys_and_the_deploy_key(mailnet, installed):
    """The access stage keeps authorized_keys as the stack declares it (adminSshKeys, then the deploy key)."""
    declared = stack_config("prod")["ceres-mail:adminSshKeys"]
    lines = mailnet.mail.path("/home/ceres/.ssh/authorized_keys").read_text().splitlines()
    keys = [line.split()[:2] for line in lines if not line.startswith("#")]
    deploy = serialization.load_ssh_private_key(mailnet.deployment.deploy_private_key.encode(), None).public_key()
    deploy_key = deploy.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode().split()
    assert keys == [*(key.split()[:2] for key in declared), deploy_key]
