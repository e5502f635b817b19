"""`mailctl verify` against the test internet: green on the installed host, and exactly the broken check
red (with its fix, and exit code 1) when one thing is broken at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.dns_harness import named_argv, write_named_config
from tests.mailnet.fixtures import PROBE
from tests.mailnet.scenario import ADDRESSES, PREFIX

pytestmark = pytest.mark.slow
SPARE_DNS = "203.0.113.54"
NOTHING_THERE = "203.0.113.26"  # on the test bridge, no host: connections to it fail
POLICY_FILE = "/var/www/mta-sts/.well-known/mta-sts.txt"


@pytest.fixture(scope="module")
def verify(mailnet, installed):
    """Run `mailctl verify` for the test stack from the client namespace; returns (exit code, JSON)."""
    work = mailnet.workdir
    (work / "verify-pass").write_text(mailnet.deployment.ceres_env["CERES_SMTP_PASS"])
    (work / "verify-pass").chmod(0o600)
    (work / "dkim.pem").write_text(mailnet.deployment.dkim_public_pem)
    mailnet.pebble_root("pebble-root-verify.pem")

    def run(*extra: str, resolver: str = ADDRESSES["dns"]) -> tuple[int, dict]:
        argv = [sys.executable, "-m", "mailctl.cli", "-C", str(work / "stack"), "verify", "--stack", "e2e",
                "--resolver", resolver, "--ca-file", str(work / "pebble-root-verify.pem"), "--timeout", "15",
                "--password-file", str(work / "verify-pass"), "--dkim-public-key", str(work / "dkim.pem"), "--json", *extra]
        result = mailnet.client.run(argv, timeout=180)
        return result.returncode, json.loads(result.stdout)

    return run


def statuses(report: dict) -> dict[str, str]:
    return {r["check"]: r["status"] for r in report["results"]}


def failed(report: dict) -> dict[str, dict]:
    return {r["check"]: r for r in report["results"] if r["status"] == "fail"}


def verify_until(verify, done, timeout_s: float = 30) -> tuple[int, dict]:
    """`verify()` again until `done(code, report)` holds or the time is up; the last result either way."""
    deadline = time.monotonic() + timeout_s
    code, report = verify()
    while not done(code, report) and time.monotonic() < deadline:
        time.sleep(0.5)
        code, report = verify()
    return code, report


@pytest.fixture
def spare_dns(mailnet):
    """A second BIND, on another address, serving edited zones (`serve(zones)`), stopped afterwards."""
    host = mailnet.net.hosts.get("dns2") or mailnet.net.add_netns_host("dns2", f"{SPARE_DNS}/{PREFIX}")
    started = []

    def serve(zones: dict[str, str]) -> str:
        directory = Path(tempfile.mkdtemp(prefix="named-spare-", dir=mailnet.workdir))
        process = host.popen(named_argv(write_named_config(directory, zones, SPARE_DNS)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(process)
        for _ in range(50):
            answer = host.run([sys.executable, str(PROBE), "dns", "--host", SPARE_DNS, "--name", "example.com",
                               "--subject", "SOA"], timeout=10)
            if answer.returncode == 0 and json.loads(answer.stdout).get("rcode") == 0:
                return SPARE_DNS
        raise TimeoutError("the spare BIND did not answer")

    yield serve
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def test_green_on_the_installed_host(verify):
    code, report = verify()
    assert code == 0 and report["ok"] is True, failed(report)
    checks = statuses(report)
    for name in ("dkim ceres._domainkey.example.com (signs)", "ptr 203.0.113.25", "smtp 25 relay", "smtp 25 certificate",
                 "submission 587 auth before starttls", "submission 587 tls", "submission 587 certificate",
                 "submission 587 auth", "submission 587 login", "imaps 993 login",
                 "https 443 certificate mta-sts.example.com", "mta-sts policy example.com", "mta-sts id example.com",
                 "dns MX example.com", "dns TXT _dmarc.example.com"):
        assert checks.get(name) == "ok", (name, checks)


def test_465_is_implicit_tls_with_the_certificate_auth_and_login(verify):
    """Submission over implicit TLS (RFC 8314), next to 587: TLS at connect, the certificate, AUTH (only
    ever over TLS there), and the login with the stack's credentials."""
    code, report = verify()
    checks = statuses(report)
    rows = {r["check"]: r for r in report["results"]}
    for name in ("submission 465 tls", "submission 465 certificate", "submission 465 auth", "submission 465 login"):
        assert checks.get(name) == "ok", (name, rows.get(name) or checks)
    assert "TLS at connect" in rows["submission 465 tls"]["detail"]
    assert "offered only over TLS (TLS from connect)" in rows["submission 465 auth"]["detail"]
    assert code == 0, failed(report)


def test_a_missing_dkim_record_turns_the_dkim_check_red(verify, mailnet, spare_dns):
    zones = dict(mailnet.deployment.zones)
    zones["example.com"] = "\n".join(l for l in zones["example.com"].splitlines() if "_domainkey" not in l) + "\n"
    code, report = verify(resolver=spare_dns(zones))
    assert code == 1
    bad = failed(report)
    assert "dkim ceres._domainkey.example.com (signs)" in bad and "dkimTxt" in bad["dkim ceres._domainkey.example.com (signs)"]["fix"]
    assert set(bad) == {"dkim ceres._domainkey.example.com (signs)"}, bad


def test_a_wrong_ptr_turns_the_ptr_check_red(verify, mailnet, spare_dns):
    zones = dict(mailnet.deployment.zones)
    zones["113.0.203.in-addr.arpa"] = zones["113.0.203.in-addr.arpa"].replace("PTR mail.example.com.", "PTR host25.provider.example.")
    code, report = verify(resolver=spare_dns(zones))
    assert code == 1 and set(failed(report)) == {"ptr 203.0.113.25"}
    assert "ask the IP provider" in failed(report)["ptr 203.0.113.25"]["fix"]


def test_the_https_check_connects_where_the_resolver_points(verify, mailnet, spare_dns):
    """mta-sts.<domain> moved to an address where nothing listens: the HTTPS check goes where --resolver
    says, not to the mail host's address."""
    zones = dict(mailnet.deployment.zones)
    kept = [line for line in zones["example.com"].splitlines() if not line.startswith("mta-sts ")]
    zones["example.com"] = "\n".join(kept) + f"\nmta-sts 3600 IN A {NOTHING_THERE}\n"
    code, report = verify(resolver=spare_dns(zones))
    assert code == 1 and set(failed(report)) == {"dns CNAME mta-sts.example.com", "https 443 mta-sts.example.com"}, failed(report)
    assert NOTHING_THERE in failed(report)["https 443 mta-sts.example.com"]["detail"]


def test_a_stale_mta_sts_id_turns_the_id_check_red(verify, mailnet, spare_dns):
    zones = dict(mailnet.deployment.zones)
    zones["example.com"] = zones["example.com"].replace(f"id={mailnet.deployment.mta_sts_id}", "id=0123456789abcdef0123")
    code, report = verify(resolver=spare_dns(zones))
    assert code == 1 and set(failed(report)) == {"dns TXT _mta-sts.example.com", "mta-sts id example.com"}, failed(report)
    assert f"id={mailnet.deployment.mta_sts_id}" in failed(report)["mta-sts id example.com"]["fix"]


def test_a_served_policy_with_another_mode_turns_the_policy_check_red(verify, mailnet):
    policy = mailnet.mail.path(POLICY_FILE)
    served = policy.read_text()
    assert "mode: testing" in served
    policy.write_text(served.replace("mode: testing", "mode: enforce"))
    try:
        code, report = verify()
    finally:
        policy.write_text(served)
    assert code == 1 and set(failed(report)) == {"mta-sts policy example.com"}, failed(report)
    assert "mode enforce, the stack declares testing" in failed(report)["mta-sts policy example.com"]["detail"]


def test_a_certificate_for_another_name_turns_tls_red(verify, mailnet, spare_dns):
    zones = dict(mailnet.deployment.zones)
    zones["example.com"] += "mail2 3600 IN A 203.0.113.25\n"
    code, report = verify("--host", "mail2.example.com", resolver=spare_dns(zones))
    assert code == 1
    bad = failed(report)
    for name in ("smtp 25 certificate", "submission 465 certificate", "submission 587 certificate", "imaps 993 certificate"):
        assert name in bad and "install a certificate for mail2.example.com" in bad[name]["fix"], name


def test_a_stopped_dovecot_turns_imaps_red(verify, mailnet):
    mailnet.mail.exec(["systemctl", "stop", "dovecot"], check=True)
    try:
        code, report = verify()
    finally:
        mailnet.mail.exec(["systemctl", "start", "dovecot"], check=True)
    assert code == 1
    bad = failed(report)
    assert "imaps 993" in bad and "Dovecot" in bad["imaps 993"]["fix"]
    assert verify()[0] == 0, "green again once Dovecot runs"


def test_an_open_relay_turns_the_relay_check_red(verify, mailnet):
    """The classic mistake, made on purpose in the live config and undone after: every client counts as
    local (mynetworks 0/0). Postfix itself refuses a config without any relay check, so this is the way an
    open relay really happens. No message is ever sent: the check stops after RCPT."""
    keys = ("mynetworks", "smtpd_relay_restrictions", "smtpd_recipient_restrictions")
    original = {k: mailnet.mail.exec(["postconf", "-h", k], check=True).stdout.strip() for k in keys}
    relaxed = "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
    mailnet.mail.exec(["postconf", "-e", "mynetworks = 0.0.0.0/0 [::]/0", f"smtpd_relay_restrictions = {relaxed}",
                       f"smtpd_recipient_restrictions = {relaxed}"], check=True)
    mailnet.mail.exec(["postfix", "reload"], check=True)
    try:
        # the master restarts its smtpd processes in its own time: wait for the relay check to see it
        code, report = verify_until(verify, lambda code, report: "smtp 25 relay" in failed(report))
    finally:
        mailnet.mail.exec(["postconf", "-e", *(f"{k} = {v}" for k, v in original.items())], check=True)
        mailnet.mail.exec(["postfix", "reload"], check=True)
    assert code == 1 and set(failed(report)) == {"smtp 25 relay"}, failed(report)
    assert "relays for anyone" in failed(report)["smtp 25 relay"]["fix"]
    assert verify_until(verify, lambda code, report: code == 0)[0] == 0, "green again once the config is restored"


def test_text_output_is_a_table_with_fixes(verify, mailnet):
    argv = [sys.executable, "-m", "mailctl.cli", "verify", "--domain", "example.com", "--host", "mail.example.com",
            "--resolver", ADDRESSES["dns"], "--timeout", "5"]
    result = mailnet.client.run(argv, timeout=180)
    assert "mailctl verify example.com (mail.example.com)" in result.stdout
    assert "checks," in result.stdout and "Traceback" not in result.stderr
    # without the test CA the certificates are untrusted: red, and the exit code says so
    assert result.returncode == 1


def test_a_provided_certificate_is_installed_and_served(verify, mailnet):
    """tlsMode provided on the running host, as `pulumi up` applies the changed stack file: the tls stage
    runs again, with no ACME at all, and the stack's certificate and key (0600) serve 465, 587, 993 and 443.
    Runs last: the host keeps the provided certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tests.mailnet.acme import directory_url
    from tests.mailnet.scenario import deploy

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ceres-mail test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    names = ["mail.example.com", "mta-sts.example.com"]
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
    provided = deploy(mailnet.workdir / "stack-provided", directory_url(ADDRESSES["acme"]),
                      mailnet.pebble_listener_ca.read_text(), provided_tls=(pem(leaf), key_pem),
                      mock_overrides=mailnet.kept_secrets())
    assert provided.host_public_key == mailnet.deployment.host_public_key, "same stack, same pinned host key"
    ran = mailnet.apply(provided)
    assert [(stage, r.returncode) for stage, r in ran if r.returncode] == [], ran[-1][1].stderr[-2000:]
    assert "tls" in dict(ran), f"the tls stage must run again; ran {[stage for stage, _ in ran]}"
    results = [r for _, r in ran]
    tls = dict(ran)["tls"]
    assert "provided by the stack" in tls.stdout and "certbot" not in tls.stdout.lower()
    key_file = mailnet.mail.path("/etc/ceres-mail/tls/privkey.pem")
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    ca_file = mailnet.workdir / "provided-ca.pem"
    ca_file.write_text(pem(ca))
    for port, starttls, name in ((465, "none", "mail.example.com"), (587, "smtp", "mail.example.com"),
                                 (993, "none", "mail.example.com"), (443, "none", "mta-sts.example.com")):
        cert = mailnet.probe("certificate", "--host", ADDRESSES["mail"], "--port", str(port), "--starttls", starttls,
                             "--name", name, "--cafile", str(ca_file))
        assert "exception" not in cert and "ceres-mail test CA" in cert["issuer"], (port, cert)
    assert key_pem.strip().splitlines()[1] not in "".join(r.stdout + r.stderr for r in results), "the key was printed"
