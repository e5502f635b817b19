"""The session's mail world (`mailnet`, tests/mailnet/fixtures.py) as an operator lives it, one step after
another in file order (README, Tests; README, Webmail and fail2ban): the native mail stack installed on a
real Debian host of the test internet, its webmail and brute-force protection turned on, `mailctl verify`
against it, the host rebuilt under interrupted installs, and a certificate of the stack's own.

One session fixture boots the test internet (BIND serving the plan's own records, pebble, a remote MTA of
example.net, a client) and a mail host first-booted by cloud-init from the stack's snippets, and runs the
recorded commands itself over SSH, so the tests can do what an up never does: run the whole install again
on a configured host, and kill it at random moments. (`pulumi up` of the whole graph, and what the host it
builds serves and refuses, is the end-to-end layer: tests/e2e.) A change of configuration is applied to the
running host as `pulumi up` applies it (MailNet.apply): only the stages whose script or standard input
changed run again.

1. The install: with the pinned host key (another key in known_hosts means no connection); a re-run
   changes no file and restarts no service; no secret in its output. The test internet's signed DNS tree
   delegates the stack's zones: its validating resolver answers them as the authoritative server does,
   insecure (no DS registered yet), never SERVFAIL.
2. Webmail and fail2ban: adminCidrs narrowed to the client's address (so that an attacker elsewhere in the
   test internet can be banned) and bans of one minute, applied to the running host (the fail2ban stage
   runs again). Then:
   - headless Chromium (tests/mailnet/browser.py, trusting only the test's ACME CA) opens the webmail on
     https://<mailHost>/, logs in as the no-reply mailbox, sees a message that arrived from the remote
     domain, and replies; the reply arrives at the remote MTA signed (DKIM pass). A screenshot of the inbox
     is kept as an artifact (.cache/artifacts/webmail-inbox.png) and is not blank;
   - the security headers, no installer, and the MTA-STS page as before;
   - six wrong SMTP AUTH attempts on 587 from an attacker's address: its connections to 25, 587, 993 and
     443 are refused while the client keeps working, and the ban ends after its minute (checked at the end
     of step 3, which runs meanwhile); the same for IMAP logins and SSH attempts from another address, whose
     bans an admin lifts per jail;
   - `mailctl verify` checks the webmail; a re-run of the install changes nothing.
3. `mailctl verify` from the client: green on the installed host, and exactly the broken check red (with
   its fix, and exit code 1) when one thing is broken at a time.
4. Interrupted installs converge: the host rebuilt from scratch, three installs killed at random moments,
   then one run to the end, give the configuration the host had just before.
5. tlsMode provided, then acme again, each applied to the running host: the tls stage runs again, the
   stack's certificate (then the ACME server's) serves 465, 587, 993 and 443, and nginx never refuses its
   configuration half-way through the switch.
6. dnssec and dane with ACME on the running host: the ACME server certifies the key the stack owns, every TLS
   port serves it and the TLSA records pin it; the host's own renewal keeps the key. The dns host then serves
   the zone signed with its ZoneDnssec's key and the exported DS goes into com. (the registrar's step): the
   TLSA validates (delv), and `mailctl verify` through the validating resolver shows every dane row green; a
   stale TLSA, signed and served by that same delegated server, turns its row red.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.reversename
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import PROJECT_DIR
from tests.dns_harness import named_argv, write_named_config
from tests.mailnet.acme import directory_url
from tests.mailnet.browser import open_browser, screenshot_is_blank
from tests.mailnet.dane_judge import VERIFIED, posttls_finger
from tests.mailnet.fixtures import PROBE
from tests.mailnet.host_checks import CONFIG_FILES, SERVICES, secret_file, stdin_secrets, verdict
from tests.mailnet.scenario import ADDRESSES, PREFIX, REMOTE_DOMAIN, deploy, sign_zone
from tests.testnet import linux

pytestmark = pytest.mark.slow

MAIL, CLIENT = ADDRESSES["mail"], ADDRESSES["client"]
MAIL_HOST = "mail.example.com"
ATTACKER = "203.0.113.66"  #: banned by SMTP AUTH, and its ban left to end by itself
INTRUDER = "203.0.113.67"  #: banned by IMAP and SSH, each ban lifted by hand (per jail)
NO_REPLY = "no-reply@example.com"
#: the client alone is an admin network (never banned); a one-minute ban, so the test sees it end
CONFIG = {"ceres-mail:adminCidrs": [f"{CLIENT}/32"], "ceres-mail:bruteForceBanMinutes": 1}
ARTIFACTS = PROJECT_DIR / ".cache" / "artifacts"
WEB_FILES = ("/etc/roundcube/config.inc.php", "/etc/nginx/sites-available/ceres-webmail",
             "/etc/nginx/sites-available/ceres-mail", "/etc/fail2ban/jail.d/ceres-mail.local")
WEB_SERVICES = ("nginx", "php8.2-fpm", "fail2ban", "postfix", "dovecot")
#: a TCP connection's fate from a namespace: open, refused (a reject rule or nothing listening), or timeout
CONNECT = ("import socket, sys\n"
           "try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); print('open')\n"
           "except ConnectionRefusedError: print('refused')\n"
           "except OSError as e: print(type(e).__name__)\n")
SPARE_DNS = "203.0.113.54"
NOTHING_THERE = "203.0.113.26"  # on the test bridge, no host: connections to it fail
POLICY_FILE = "/var/www/mta-sts/.well-known/mta-sts.txt"


def file_hashes(mailnet) -> dict[str, str]:
    return mailnet.file_hashes(CONFIG_FILES)


def service_starts(mailnet) -> dict[str, str]:
    return mailnet.service_starts(SERVICES)


# --- 1. the install, and a re-run that changes nothing -------------------------------------------------


def test_install_succeeds_over_ssh_with_the_pinned_host_key(mailnet, installed):
    """The install runs every stage over SSH with the pinned host key and ends with the host ready for the domain."""
    assert [r.returncode for r in installed] == [0] * len(mailnet.deployment.commands)
    assert "ceres-mail: mail.example.com ready for example.com" in installed[mailnet.deployment.stage("-install-mail")].stdout


def test_ssh_refuses_a_host_key_other_than_the_pinned_one(mailnet, installed):
    """The client trusts only the stack's host key: another key in known_hosts means no connection."""
    wrong = mailnet.workdir / "wrong_known_hosts"
    wrong.write_text(f"{MAIL} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL4YsBWNsiUHJg5MivPSYRsb/FByMtRcqEKNrXyt/h2G\n")
    result = mailnet.ssh("true", extra=("-o", f"UserKnownHostsFile={wrong}"), timeout=60)
    assert result.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_rerun_changes_no_file_and_restarts_no_service(mailnet, installed):
    """Running the whole install again on a configured host changes no file and restarts no service."""
    hashes, starts = file_hashes(mailnet), service_starts(mailnet)
    assert all("ActiveState=active" in state for state in starts.values()), starts
    again = mailnet.install()
    assert [r.returncode for r in again] == [0] * len(mailnet.deployment.commands), again[-1].stderr
    updated = [line for r in again for line in r.stdout.splitlines() if line.startswith("updated ")]
    assert updated == []
    assert file_hashes(mailnet) == hashes
    assert service_starts(mailnet) == starts


def test_secrets_stay_out_of_the_install_output(mailnet, installed):
    """The install prints no password or private key, and the DKIM key on the host is not world-readable (0640)."""
    password = mailnet.deployment.ceres_env["CERES_SMTP_PASS"]
    for result in installed:
        assert password not in result.stdout + result.stderr
        assert "PRIVATE KEY" not in result.stdout + result.stderr
    key = mailnet.mail.path("/var/lib/rspamd/dkim/ceres.key")
    assert oct(key.stat().st_mode & 0o777) == "0o640"


def test_the_signed_tree_answers_the_stacks_zones_insecure(mailnet):
    """The signed tree's resolver answers the stack's MX, the mail address's PTR and the other domain's MX as the
    authoritative server does, without AD (no DS registered): insecure, never SERVFAIL; delv agrees."""
    tree, client = mailnet.dns_tree, mailnet.client
    ptr = dns.reversename.from_address(MAIL).to_text()
    for name, rdtype in (("example.com", "MX"), (ptr, "PTR"), (REMOTE_DOMAIN, "MX")):
        served = tree.ask(client, name, rdtype, server=ADDRESSES["dns"])
        answer = tree.ask(client, name, rdtype)
        assert answer.rcode == "NOERROR" and not answer.secure, answer
        assert answer.rdata(rdtype) == served.rdata(rdtype) != [], (answer, served)
    judged = tree.delv(client, "example.com", "MX")
    assert judged.stdout.startswith("; unsigned answer"), judged.stdout + judged.stderr


# --- 2. webmail and brute-force protection, applied to the running host ---------------------------------


@pytest.fixture(scope="module")
def config_reruns(mailnet, installed) -> list[tuple[str, subprocess.CompletedProcess]]:
    """CONFIG applied to the session's host as `pulumi up` applies the changed stack file: the stages whose
    script or standard input changed run again (the fail2ban stage's, whose jails change). The (stage,
    CompletedProcess) of each."""
    ran = mailnet.apply(deploy(mailnet.workdir / "stack-webmail", directory_url(ADDRESSES["acme"]),
                               mailnet.pebble_listener_ca.read_text(), extra=CONFIG,
                               mock_overrides=mailnet.kept_secrets()))
    assert [(stage, r.returncode) for stage, r in ran if r.returncode] == [], ran[-1][1].stderr[-2000:]
    assert "fail2ban" in dict(ran), f"the fail2ban stage must run again; ran {[stage for stage, _ in ran]}"
    return ran


@pytest.fixture(scope="module")
def webnet(mailnet, config_reruns):
    """The session's test internet, its mail host serving with CONFIG."""
    return mailnet


@pytest.fixture(scope="module")
def password(webnet, installed) -> str:
    return stdin_secrets(webnet, "-install-mail")["MAILBOX_PASSWORD"]


@pytest.fixture(scope="module")
def ca_pem(webnet, installed) -> str:
    with open(webnet.pebble_root()) as root:
        return root.read()


@pytest.fixture(scope="module")
def attacker(webnet):
    return webnet.net.add_netns_host("attacker", f"{ATTACKER}/{PREFIX}")


@pytest.fixture(scope="module")
def intruder(webnet):
    return webnet.net.add_netns_host("intruder", f"{INTRUDER}/{PREFIX}")


def at_once(attempt, count: int = 6) -> None:
    """`count` attempts side by side, as a brute-force tool makes them (and in seconds: one after another,
    Dovecot's growing delay for an address that keeps failing makes six IMAP logins take most of a minute)."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda _: attempt(), range(count)))


def connects(host, port: int) -> str:
    return host.run([sys.executable, "-c", CONNECT, MAIL, str(port)], timeout=30).stdout.strip()


def fail2ban(webnet, *args: str) -> str:
    return webnet.mail.exec(["fail2ban-client", *args]).stdout


def banned(webnet, jail: str, address: str = ATTACKER) -> bool:
    return address in fail2ban(webnet, "status", jail)


def test_the_webmail_and_fail2ban_stages_run_after_the_mail_stage(webnet, installed, config_reruns):
    """Webmail and fail2ban install after mail, adminCidrs never banned; Roundcube's key is unprinted and 0640."""
    names = [c.name.rsplit("-install-", 1)[-1] for c in webnet.deployment.commands]
    assert names[-3:] == ["mail", "webmail", "fail2ban"]
    webmail, guard = installed[-2], dict(config_reruns)["fail2ban"]
    assert f"webmail: https://{MAIL_HOST}/" in webmail.stdout
    assert "fail2ban: jails sshd, postfix-sasl, dovecot, roundcube-auth" in guard.stdout
    assert f"never banned: 127.0.0.0/8 ::1 {CLIENT}/32" in guard.stdout
    des_key = stdin_secrets(webnet, "-install-webmail")["ROUNDCUBE_DES_KEY"]
    assert des_key not in webmail.stdout + webmail.stderr
    assert des_key in webnet.mail.path("/etc/roundcube/config.inc.php").read_text(), "the stack's des_key"
    shown = webnet.mail.exec(["stat", "-c", "%a %U:%G", "/etc/roundcube/config.inc.php", "/var/mail/roundcube/roundcube.sqlite"])
    assert shown.stdout.split("\n")[:2] == ["640 root:www-data", "640 www-data:www-data"]


def test_https_serves_the_webmail_with_its_headers_and_no_installer(webnet, installed, ca_pem):
    """The webmail is served over HTTPS with HSTS, CSP and anti-framing headers; installer and config files are 404."""
    cafile = webnet.pebble_root("pebble-root-https.pem")
    page = webnet.probe("https", "--host", MAIL, "--name", MAIL_HOST, "--cafile", cafile, "--path", "/")
    assert page["status"] == 200 and 'id="rcmloginuser"' in page["body"], page.get("status")
    headers = page["headers"]
    assert headers["strict-transport-security"].startswith("max-age=31536000")
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert "object-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "SAMEORIGIN" and headers["x-content-type-options"] == "nosniff"
    for path in ("/installer/", "/installer/index.php", "/config/config.inc.php", "/.htaccess", "/SQL/sqlite.initial.sql"):
        hidden = webnet.probe("https", "--host", MAIL, "--name", MAIL_HOST, "--cafile", cafile, "--path", path)
        assert hidden["status"] == 404, (path, hidden["status"])
    policy = webnet.probe("https", "--host", MAIL, "--name", "mta-sts.example.com", "--cafile", cafile,
                          "--path", "/.well-known/mta-sts.txt")
    assert policy["status"] == 200 and "version: STSv1" in policy["body"], "the MTA-STS page as before"


def test_a_browser_logs_in_sees_the_mail_and_replies_signed(webnet, installed, password, ca_pem, tmp_path):
    """In a real browser, a user logs in to the webmail, reads mail from another domain and replies, DKIM-signed."""
    subject = f"hello webmail {time.monotonic_ns()}"
    sent = webnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", NO_REPLY,
                        "--subject", subject)
    assert sent["accepted"], sent
    with open_browser(webnet.client, tmp_path / "browser", ca_pem, {MAIL_HOST: MAIL}) as browser:
        try:
            driver, wait = browser.driver, WebDriverWait(browser.driver, 60)
            driver.get(f"https://{MAIL_HOST}/")
            wait.until(seen.visibility_of_element_located((By.ID, "rcmloginuser"))).send_keys(NO_REPLY)
            driver.find_element(By.ID, "rcmloginpwd").send_keys(password)
            driver.find_element(By.ID, "rcmloginsubmit").click()
            row = wait.until(seen.visibility_of_element_located(
                (By.XPATH, f"//table[@id='messagelist']//tr[.//*[contains(text(), '{subject}')]]")))
            time.sleep(1)  # the list's icons and counts settle
            png = browser.save_screenshot(tmp_path / "inbox.png")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / "inbox.png", ARTIFACTS / "webmail-inbox.png")
            assert not screenshot_is_blank(png), "the inbox screenshot is blank"
            row.click()
            # the message opens in the preview, as a person reads it before replying
            wait.until(seen.frame_to_be_available_and_switch_to_it("messagecontframe"))
            wait.until(seen.text_to_be_present_in_element((By.TAG_NAME, "body"), "Sent by the ceres-mail tests"))
            driver.switch_to.default_content()
            wait.until(lambda d: d.execute_script("return !rcmail.busy && !!rcmail.commands['reply']"))
            # the toolbar's Reply (not Reply all, not the copy the skin keeps for small screens), as a person clicks it
            visible(driver, wait, "a.reply[data-content-button]").click()
            wait.until(lambda d: "_action=compose" in d.current_url)
            body = wait.until(seen.visibility_of_element_located((By.ID, "composebody")))
            body.send_keys("Thanks, replied from the webmail.\n")
            wait.until(lambda d: d.execute_script("return !rcmail.busy && !!rcmail.commands['send']"))
            visible(driver, wait, "button.send, a.send").click()
            wait.until(lambda d: "_action=compose" not in d.current_url)
        except Exception:
            # what the browser showed when it went wrong, kept with the other artifacts
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(ARTIFACTS / "webmail-failure.png")
            (ARTIFACTS / "webmail-failure.html").write_text(browser.driver.page_source)
            journal = webnet.mail.exec(["journalctl", "--no-pager", "-n", "200", "-t", "roundcube", "-u", "php8.2-fpm",
                                        "-u", "nginx"]).stdout
            (ARTIFACTS / "webmail-failure-journal.txt").write_text(journal)
            raise
    judged = verdict(webnet, f"Re: {subject}", timeout=90)
    assert (judged["dkim"], judged["dkim_domain"], judged["mail_from"]) == ("pass", "example.com", NO_REPLY), judged
    assert judged["dmarc_aligned"], judged


def visible(driver, wait, selector: str):
    """The first element matching `selector` that a person can see and click (the skin keeps hidden copies of
    its buttons for small screens)."""
    return wait.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, selector)
                                      if e.is_displayed() and e.is_enabled()
                                      and "disabled" not in (e.get_attribute("class") or "")), None))


def test_verify_checks_the_webmail(webnet, installed):
    """`mailctl verify` reports the webmail's login page served and its HTTPS certificate valid."""
    cafile = webnet.pebble_root("pebble-root-verify.pem")
    argv = [sys.executable, "-m", "mailctl.cli", "-C", str(webnet.workdir / "stack"), "verify", "--stack", "e2e",
            "--resolver", ADDRESSES["dns"], "--ca-file", cafile, "--json"]
    report = json.loads(webnet.client.run(argv, timeout=300).stdout)
    rows = {r["check"]: (r["status"], r["detail"]) for r in report["results"]}
    assert rows[f"webmail {MAIL_HOST}"][0] == "ok" and "login page served" in rows[f"webmail {MAIL_HOST}"][1]
    assert rows[f"https 443 certificate {MAIL_HOST}"][0] == "ok"


def wrong_submission(webnet, attacker) -> None:
    """One wrong AUTH PLAIN. (A client that tries each mechanism the server offers makes a second, LOGIN,
    which Dovecot answers only after its growing delay for an address that keeps failing.)"""
    webnet.probe("submit", "--host", MAIL, "--port", "587", "--user", NO_REPLY, "--password-file",
                 secret_file(webnet, "wrong", "not-the-password"), "--sender", NO_REPLY, "--to",
                 f"x@{REMOTE_DOMAIN}", "--mechanism", "PLAIN", host=attacker)


@pytest.fixture(scope="module")
def smtp_ban(webnet, installed, attacker) -> float:
    """Six wrong SMTP AUTH logins on 587 from the attacker's address, until it is banned; when (monotonic)
    they began. fail2ban counts a ban's minute from the failure that tripped it, as the journal dates it, not
    from when the ban was put in place, which comes seconds later."""
    assert connects(attacker, 587) == "open"
    began = time.monotonic()
    at_once(lambda: wrong_submission(webnet, attacker))
    linux.wait_until(lambda: banned(webnet, "postfix-sasl"), 30, "the postfix-sasl ban", every=1)
    return began


def test_wrong_smtp_auth_bans_the_address_from_every_port(webnet, attacker, smtp_ban):
    """Wrong SMTP AUTH logins ban the address from ports 25, 587, 993 and 443, while the admin client keeps working."""
    assert {port: connects(attacker, port) for port in (25, 587, 993, 443)} == dict.fromkeys((25, 587, 993, 443), "refused")
    assert {port: connects(webnet.client, port) for port in (25, 587, 993, 443)} == dict.fromkeys((25, 587, 993, 443), "open")


def test_wrong_imap_logins_ban_the_address(webnet, installed, intruder, smtp_ban):
    """Wrong IMAP logins ban the address from 993; an admin lifts that jail's ban by hand, other jails' bans stay."""
    at_once(lambda: webnet.probe("imap", "--host", MAIL, "--port", "993", "--user", NO_REPLY, "--password-file",
                                 secret_file(webnet, "wrong", "not-the-password"), "--wait", "0", host=intruder))
    linux.wait_until(lambda: banned(webnet, "dovecot", INTRUDER), 30, "the dovecot ban", every=1)
    assert connects(intruder, 993) == "refused" and connects(webnet.client, 993) == "open"
    fail2ban(webnet, "set", "dovecot", "unbanip", INTRUDER)  # what an admin does rather than wait
    assert connects(intruder, 993) == "open"
    assert banned(webnet, "postfix-sasl"), "lifting one jail's ban leaves the others' bans in place"


def ssh_attempt(attacker) -> None:
    """One refused SSH login. The ban may land after the key exchange, where ssh's ConnectTimeout no longer
    applies: the reject rule then answers the established connection's packets with ICMP, which TCP takes
    as a soft error, so ssh would wait for the kernel's retransmissions to give up. That cut-off attempt
    counts as made."""
    try:
        attacker.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                      "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", f"intruder@{MAIL}", "true"],
                     timeout=20)
    except subprocess.TimeoutExpired:
        pass


def test_ssh_attempts_ban_the_address(webnet, installed, intruder):
    """Refused SSH logins ban the address from port 22, the admin client unaffected; an admin can lift the ban."""
    at_once(lambda: ssh_attempt(intruder))
    linux.wait_until(lambda: banned(webnet, "sshd", INTRUDER), 30, "the sshd ban", every=1)
    assert connects(intruder, 22) == "refused" and connects(webnet.client, 22) == "open"
    fail2ban(webnet, "set", "sshd", "unbanip", INTRUDER)
    assert connects(intruder, 22) == "open"


def test_a_rerun_of_the_install_changes_nothing(webnet, installed):
    """With webmail and fail2ban on, a re-run of the install changes no file and restarts no service."""
    before = webnet.file_hashes(WEB_FILES), webnet.service_starts(WEB_SERVICES)
    again = webnet.install()
    assert [r.returncode for r in again] == [0] * len(again), again[-1].stderr[-2000:]
    assert [line for r in again for line in r.stdout.splitlines() if line.startswith("updated ")] == []
    assert (webnet.file_hashes(WEB_FILES), webnet.service_starts(WEB_SERVICES)) == before


# --- 3. `mailctl verify` live: green, then one break at a time red --------------------------------------


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
    """`mailctl verify` is green on the installed host: DNS, DKIM, PTR, no relay, TLS, logins and MTA-STS."""
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
    """With the DKIM record gone from DNS, only verify's DKIM check fails (exit 1), its fix naming dkimTxt."""
    zones = dict(mailnet.deployment.zones)
    zones["example.com"] = "\n".join(l for l in zones["example.com"].splitlines() if "_domainkey" not in l) + "\n"
    code, report = verify(resolver=spare_dns(zones))
    assert code == 1
    bad = failed(report)
    assert "dkim ceres._domainkey.example.com (signs)" in bad and "dkimTxt" in bad["dkim ceres._domainkey.example.com (signs)"]["fix"]
    assert set(bad) == {"dkim ceres._domainkey.example.com (signs)"}, bad


def test_a_wrong_ptr_turns_the_ptr_check_red(verify, mailnet, spare_dns):
    """A PTR naming another host fails only verify's PTR check, whose fix says to ask the IP provider."""
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
    """A stale _mta-sts id fails verify's id check, the fix giving the id to publish (RFC 8461 3.1)."""
    zones = dict(mailnet.deployment.zones)
    zones["example.com"] = zones["example.com"].replace(f"id={mailnet.deployment.mta_sts_id}", "id=0123456789abcdef0123")
    code, report = verify(resolver=spare_dns(zones))
    assert code == 1 and set(failed(report)) == {"dns TXT _mta-sts.example.com", "mta-sts id example.com"}, failed(report)
    assert f"id={mailnet.deployment.mta_sts_id}" in failed(report)["mta-sts id example.com"]["fix"]


def test_a_served_policy_with_another_mode_turns_the_policy_check_red(verify, mailnet):
    """A served MTA-STS policy whose mode is not the stack's fails only verify's policy check, naming both modes."""
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
    """For a host name the certificate does not cover, each TLS port's certificate check fails, naming the fix."""
    zones = dict(mailnet.deployment.zones)
    zones["example.com"] += "mail2 3600 IN A 203.0.113.25\n"
    code, report = verify("--host", "mail2.example.com", resolver=spare_dns(zones))
    assert code == 1
    bad = failed(report)
    for name in ("smtp 25 certificate", "submission 465 certificate", "submission 587 certificate", "imaps 993 certificate"):
        assert name in bad and "install a certificate for mail2.example.com" in bad[name]["fix"], name


def test_a_stopped_dovecot_turns_imaps_red(verify, mailnet):
    """With Dovecot stopped, verify's IMAPS check fails and points at Dovecot; it is green again once Dovecot runs."""
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
    """Without --json, verify prints a table headed by domain and host, no traceback; untrusted certificates exit 1."""
    argv = [sys.executable, "-m", "mailctl.cli", "verify", "--domain", "example.com", "--host", "mail.example.com",
            "--resolver", ADDRESSES["dns"], "--timeout", "5"]
    result = mailnet.client.run(argv, timeout=180)
    assert "mailctl verify example.com (mail.example.com)" in result.stdout
    assert "checks," in result.stdout and "Traceback" not in result.stderr
    # without the test CA the certificates are untrusted: red, and the exit code says so
    assert result.returncode == 1


def test_the_smtp_ban_ends_after_its_minute(webnet, attacker, smtp_ban):
    """The attacker's ban from step 2, left alone since (its minute passes while `mailctl verify` is tried
    above): the address may connect again once the minute is up, and not before."""
    linux.wait_until(lambda: connects(attacker, 587) == "open", 150, "the ban to end", every=2)
    assert time.monotonic() - smtp_ban >= 59, "the ban ended before its minute"
    assert not banned(webnet, "postfix-sasl")


# --- 4. interrupted installs converge ---------------------------------------------------------------------


KILL_SEED_ENV = "CERES_MAIL_KILL_SEED"


def effective_config(mailnet) -> dict[str, str]:
    """The configuration in effect: the rendered files byte for byte, Postfix's as `postconf` reads it
    (after an interrupted package configuration main.cf may list the same settings in another order)."""
    state = {path: digest for path, digest in file_hashes(mailnet).items() if path != "/etc/postfix/main.cf"}
    for flag in ("-n", "-M", "-P"):
        state[f"postconf {flag}"] = mailnet.mail.exec(["postconf", flag]).stdout
    return state


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
    assert [r.returncode for r in final] == [0] * len(mailnet.deployment.commands), f"{KILL_SEED_ENV}={seed}: {final[-1].stdout[-3000:]}{final[-1].stderr[-3000:]}"
    assert effective_config(mailnet) == reference, f"{KILL_SEED_ENV}={seed}"
    assert all("ActiveState=active" in s for s in service_starts(mailnet).values())


# --- 5. a certificate the stack provides, then ACME again ---------------------------------------------


def test_a_provided_certificate_is_installed_and_served(verify, mailnet):
    """tlsMode provided on the running host, as `pulumi up` applies the changed stack file: the tls stage
    runs again, with no ACME at all, and the stack's certificate and key (0600) serve 465, 587, 993 and 443.
    The certificate is an RSA one (ACME's is ECDSA), so the strict ports are scanned with the suites only an
    RSA certificate can negotiate: ECDHE with AEAD alone, as with ECDSA. The next step takes the host back
    to ACME."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    from components.builders.ports import STRICT_TLS12_CIPHERS
    from tests.mailnet.acme import directory_url
    from tests.mailnet.scenario import deploy

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
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
                      extra=CONFIG, mock_overrides=mailnet.kept_secrets())  # the stack file as part 2 left it
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
        scanned = mailnet.probe("suites", "--host", ADDRESSES["mail"], "--port", str(port), "--starttls", starttls,
                                "--name", name, timeout=180)
        assert scanned["key"] == "RSAPublicKey" and scanned["tried"] > 50, (port, scanned)
        assert scanned["accepted"] and set(scanned["accepted"]) <= set(STRICT_TLS12_CIPHERS), (port, scanned["accepted"])
    assert key_pem.strip().splitlines()[1] not in "".join(r.stdout + r.stderr for r in results), "the key was printed"


def test_back_to_acme_the_acme_servers_certificate_is_served_again(mailnet):
    """tlsMode acme again on the same host (the stack file as before the provided certificate): the tls
    stage gets a certificate from the ACME server and every TLS port serves it, the webmail's HTTPS too,
    with no moment where nginx refuses its configuration (it names a certificate only once it exists)."""
    acme_again = deploy(mailnet.workdir / "stack-acme-again", directory_url(ADDRESSES["acme"]),
                        mailnet.pebble_listener_ca.read_text(), extra=CONFIG, mock_overrides=mailnet.kept_secrets())
    ran = mailnet.apply(acme_again)
    assert [(stage, r.returncode) for stage, r in ran if r.returncode] == [], ran[-1][1].stdout[-2000:]
    assert "tls" in dict(ran), f"the tls stage must run again; ran {[stage for stage, _ in ran]}"
    root = mailnet.pebble_root("pebble-root-again.pem")
    for port, starttls, name in ((465, "none", "mail.example.com"), (587, "smtp", "mail.example.com"),
                                 (993, "none", "mail.example.com"), (443, "none", "mta-sts.example.com"),
                                 (443, "none", "mail.example.com")):
        cert = mailnet.probe("certificate", "--host", ADDRESSES["mail"], "--port", str(port), "--starttls", starttls,
                             "--name", name, "--cafile", root)
        assert "exception" not in cert and "ceres-mail test CA" not in cert["issuer"], (port, name, cert)


# --- 6. DANE with ACME: the stack's own key, certified, pinned and kept -----------------------------------


@pytest.fixture(scope="module")
def dane(mailnet):
    """The stack with `dnssec: true` and `dane: true` (tlsMode acme), applied to the running host as `pulumi up`
    would."""
    from tests.mailnet.acme import directory_url
    from tests.mailnet.scenario import deploy

    deployment = deploy(mailnet.workdir / "stack-dane", directory_url(ADDRESSES["acme"]),
                        mailnet.pebble_listener_ca.read_text(),
                        extra={**CONFIG, "ceres-mail:dnssec": True, "ceres-mail:dane": True},
                        mock_overrides=mailnet.kept_secrets())
    ran = mailnet.apply(deployment)
    assert [(stage, r.returncode) for stage, r in ran if r.returncode] == [], ran[-1][1].stdout[-3000:]
    return deployment, ran


def served_keys(mailnet, root: str) -> dict[int, str]:
    """The SHA-256 of the key each TLS port serves (after STARTTLS on 25 and 587), checked against the ACME CA."""
    served = {}
    for port, starttls, name in ((25, "smtp", "mail.example.com"), (465, "none", "mail.example.com"),
                                 (587, "smtp", "mail.example.com"), (993, "none", "mail.example.com"),
                                 (443, "none", "mta-sts.example.com")):
        cert = mailnet.probe("certificate", "--host", ADDRESSES["mail"], "--port", str(port), "--starttls", starttls,
                             "--name", name, "--cafile", root)
        assert "exception" not in cert, (port, cert)
        served[port] = cert["spki_sha256"]
    return served


def test_with_dane_the_acme_server_certifies_the_key_the_stack_owns_and_its_tlsa_pins(mailnet, dane):
    """dane with ACME: the tls stage runs again and the ACME server certifies the stack's own key, which
    every TLS port then serves and which the TLSA records of the plan pin; the key is never printed."""
    from components.builders.dns_records import spki_sha256

    deployment, ran = dane
    assert "tls" in dict(ran), f"the tls stage must run again; ran {[stage for stage, _ in ran]}"
    assert "certified the stack's key" in dict(ran)["tls"].stdout
    pinned = spki_sha256(deployment.plan.outputs["tlsPublicKeys"]["tls1"])
    served = served_keys(mailnet, mailnet.pebble_root("pebble-root-dane.pem"))
    assert set(served.values()) == {pinned}, served
    tlsa = {line.split()[0] for line in deployment.zones["example.com"].splitlines()
            if " TLSA " in line and pinned in line.lower()}
    assert tlsa == {f"_{port}._tcp.mail" for port in (25, 465, 587, 993)}, tlsa
    key_line = mailnet.mail.path("/etc/ceres-mail/tls/privkey.pem").read_text().strip().splitlines()[1]
    assert key_line not in "".join(r.stdout + r.stderr for _, r in ran), "the key was printed"
    assert oct(mailnet.mail.path("/etc/ceres-mail/tls/privkey.pem").stat().st_mode & 0o777) == "0o600"


def test_the_hosts_renewal_keeps_the_stacks_key_and_a_rerun_changes_nothing(mailnet, dane):
    """The daily renewal keeps the stack's key, retires certbot's unread old lineage; a re-run changes nothing."""
    from components.builders.native import RENEW_TOOL

    deployment, _ = dane
    before = served_keys(mailnet, mailnet.pebble_root("pebble-root-renew.pem"))
    lineage = mailnet.mail.path("/etc/letsencrypt/renewal/ceres-mail.conf")
    assert lineage.exists(), "certbot's lineage from before dane stays while the tls stage runs"
    fits = mailnet.ssh(f"sudo {RENEW_TOOL}")
    assert fits.returncode == 0 and "certified" not in fits.stdout, fits.stdout + fits.stderr
    assert not lineage.exists(), "and goes at the renewal's next run, once the mail stage moved Postfix and Dovecot"
    mailnet.ssh("sudo rm /etc/ceres-mail/tls/fullchain.pem")
    renewed = mailnet.ssh(f"sudo {RENEW_TOOL}")
    assert renewed.returncode == 0 and "certified the stack's key" in renewed.stdout, renewed.stdout + renewed.stderr
    assert served_keys(mailnet, mailnet.pebble_root("pebble-root-renewed.pem")) == before
    enabled = mailnet.ssh("systemctl is-enabled ceres-mail-tls-renew.timer")
    assert enabled.stdout.strip() == "enabled", enabled.stdout + enabled.stderr
    assert mailnet.apply(deployment) == [], "nothing changed, nothing runs"


@pytest.fixture(scope="module")
def signed_zone(mailnet, dane):
    """The dane stack's example.com (its TLSA records included) served by the dns host signed with the key of its
    ZoneDnssec (the stack has dnssec), and the DS the stack exports registered in com. (the registrar's step):
    from now on the validating resolver validates the zone. `serve(text)` serves another text signed."""
    deployment, _ = dane

    def serve(text: str) -> None:
        keydir = Path(tempfile.mkdtemp(prefix="zone-keys-", dir=mailnet.workdir))
        mailnet.serve_zone("example.com", sign_zone(deployment, "example.com", text, keydir))

    serve(deployment.zones["example.com"])
    mailnet.dns_tree.register_ds("example.com", [deployment.plan.outputs["dsRecords"]["example.com"]["ds"]])
    return serve


def test_with_the_stacks_ds_registered_the_tlsa_validates(mailnet, signed_zone):
    """Once the exported DS is at the registrar, the resolver validates example.com's TLSA (AD) and delv agrees."""
    tree, name = mailnet.dns_tree, "_25._tcp.mail.example.com"
    answer = tree.ask(mailnet.client, name, "TLSA")
    assert answer.secure and answer.rdata("TLSA"), answer
    judged = tree.delv(mailnet.client, name, "TLSA")
    assert judged.stdout.startswith("; fully validated"), judged.stdout + judged.stderr


def test_verify_shows_each_dane_port_pinned_and_validated(verify, signed_zone):
    """Through the validating resolver, verify's dane rows are green: each port's served key pinned, DNSSEC-validated."""
    code, report = verify(resolver=ADDRESSES["resolver"])
    rows = {r["check"]: r for r in report["results"] if r["check"].startswith(("dane ", "dnssec ", "ds "))}
    assert {name: row["status"] for name, row in rows.items()} == {
        **{f"dane {port} tlsa": "ok" for port in (25, 465, 587, 993)},
        "dnssec example.com": "ok", "ds example.com": "ok"}, rows
    assert all("DNSSEC-validated" in rows[f"dane {port} tlsa"]["detail"] for port in (25, 465, 587, 993))


@pytest.fixture(scope="module")
def dane_sender(mailnet):
    """A place of the test internet whose resolver is the validating one: where a DANE-validating sender asks."""
    return mailnet.net.add_netns_host("danesender", f"{ADDRESSES['dane-sender']}/{PREFIX}",
                                      nameserver=ADDRESSES["resolver"])


def test_postfix_own_dane_client_verifies_the_key_on_each_smtp_port(mailnet, signed_zone, dane_sender):
    """posttls-finger, Postfix's DANE client, requiring DANE, validates the TLSA of 25, 465 and 587: Verified."""
    for port in (25, 465, 587):
        judged = posttls_finger(dane_sender, mailnet.workdir, "mail.example.com", port)
        assert VERIFIED in judged.stdout, (port, judged.stdout[-2000:], judged.stderr[-1000:])


def test_a_stale_tlsa_served_signed_turns_its_dane_row_red(verify, mailnet, dane, signed_zone, dane_sender):
    """A signed, validated TLSA naming another key turns that port's dane row red, and Postfix's DANE client refuses it."""
    from components.builders.dns_records import spki_sha256

    deployment, _ = dane
    digest = spki_sha256(deployment.plan.outputs["tlsPublicKeys"]["tls1"])
    good = deployment.zones["example.com"]
    stale = "\n".join(line.replace(digest, "ab" * 32) if line.startswith("_25._tcp.") else line
                      for line in good.splitlines()) + "\n"
    assert stale != good
    signed_zone(stale)
    mailnet.dns_tree.flush()  # as if the good TLSA's TTL had run out at the resolver
    try:
        code, report = verify(resolver=ADDRESSES["resolver"])
        rows = {r["check"]: r["status"] for r in report["results"] if r["check"].startswith("dane ")}
        assert rows == {"dane 25 tlsa": "fail", **{f"dane {port} tlsa": "ok" for port in (465, 587, 993)}}, rows
        assert code == 1 and "refuse this key" in failed(report)["dane 25 tlsa"]["fix"]
        judged = posttls_finger(dane_sender, mailnet.workdir, "mail.example.com", 25)
        assert VERIFIED not in judged.stdout, "a sender requiring DANE must refuse a key its TLSA does not name"
    finally:
        signed_zone(good)
        mailnet.dns_tree.flush()
