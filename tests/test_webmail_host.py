"""Webmail and brute-force protection of the native stack on a real Debian host (README, Webmail and
fail2ban): Roundcube on https://<mailHost>/ driven by a real browser, and fail2ban's bans.

One test internet of the module's own (tests/mailnet) and one mail host installed with the graph's own
commands, with adminCidrs narrowed to the client's address (so that an attacker elsewhere in the test
internet can be banned) and bans of one minute:

- headless Chromium (tests/mailnet/browser.py, trusting only the test's ACME CA) opens the webmail, logs in
  as the no-reply mailbox, sees a message that arrived from the remote domain, and replies; the reply
  arrives at the remote MTA signed (DKIM pass). A screenshot of the inbox is kept as an artifact
  (.cache/artifacts/webmail-inbox.png) and is not blank;
- the security headers, no installer, and the MTA-STS page as before;
- six wrong SMTP AUTH attempts on 587 from an attacker's address: its connections to 25, 587, 993 and 443
  are refused while the client keeps working, and the ban ends after its minute; the same for IMAP logins
  and SSH attempts;
- `mailctl verify` checks the webmail; a re-run of the install changes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import PROJECT_DIR
from tests.mailnet.browser import open_browser, screenshot_is_blank
from tests.mailnet.fixtures import install_or_fail, open_mailnet
from tests.mailnet.host_checks import secret_file, stdin_secrets, verdict
from tests.mailnet.scenario import ADDRESSES, PREFIX, REMOTE_DOMAIN
from tests.testnet import linux

pytestmark = pytest.mark.slow

MAIL, CLIENT = ADDRESSES["mail"], ADDRESSES["client"]
MAIL_HOST = "mail.example.com"
ATTACKER = "203.0.113.66"
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


@pytest.fixture(scope="module")
def webnet(tmp_path_factory, shared_apt_proxy):
    with open_mailnet(tmp_path_factory.mktemp("webnet"), shared_apt_proxy, CONFIG) as net:
        yield net


@pytest.fixture(scope="module")
def installed(webnet):
    return install_or_fail(webnet)


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


def connects(host, port: int) -> str:
    return host.run([sys.executable, "-c", CONNECT, MAIL, str(port)], timeout=30).stdout.strip()


def fail2ban(webnet, *args: str) -> str:
    return webnet.mail.exec(["fail2ban-client", *args]).stdout


def banned(webnet, jail: str) -> bool:
    return ATTACKER in fail2ban(webnet, "status", jail)


# --- the install ---------------------------------------------------------------------------------------


def test_the_webmail_and_fail2ban_stages_run_after_the_mail_stage(webnet, installed):
    names = [c.name.rsplit("-install-", 1)[-1] for c in webnet.deployment.commands]
    assert names[-3:] == ["mail", "webmail", "fail2ban"]
    webmail, guard = installed[-2], installed[-1]
    assert f"webmail: https://{MAIL_HOST}/" in webmail.stdout
    assert "fail2ban: jails sshd, postfix-sasl, dovecot, roundcube-auth" in guard.stdout
    assert f"never banned: 127.0.0.0/8 ::1 {CLIENT}/32" in guard.stdout
    des_key = stdin_secrets(webnet, "-install-webmail")["ROUNDCUBE_DES_KEY"]
    assert des_key not in webmail.stdout + webmail.stderr
    assert des_key in webnet.mail.path("/etc/roundcube/config.inc.php").read_text(), "the stack's des_key"
    shown = webnet.mail.exec(["stat", "-c", "%a %U:%G", "/etc/roundcube/config.inc.php", "/var/mail/roundcube/roundcube.sqlite"])
    assert shown.stdout.split("\n")[:2] == ["640 root:www-data", "640 www-data:www-data"]


def test_https_serves_the_webmail_with_its_headers_and_no_installer(webnet, installed, ca_pem):
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


# --- a person in a real browser ------------------------------------------------------------------------


def test_a_browser_logs_in_sees_the_mail_and_replies_signed(webnet, installed, password, ca_pem, tmp_path):
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
    cafile = webnet.pebble_root("pebble-root-verify.pem")
    argv = [sys.executable, "-m", "mailctl.cli", "-C", str(webnet.workdir / "stack"), "verify", "--stack", "e2e",
            "--resolver", ADDRESSES["dns"], "--ca-file", cafile, "--json"]
    report = json.loads(webnet.client.run(argv, timeout=300).stdout)
    rows = {r["check"]: (r["status"], r["detail"]) for r in report["results"]}
    assert rows[f"webmail {MAIL_HOST}"][0] == "ok" and "login page served" in rows[f"webmail {MAIL_HOST}"][1]
    assert rows[f"https 443 certificate {MAIL_HOST}"][0] == "ok"


# --- brute force ---------------------------------------------------------------------------------------


def wrong_submissions(webnet, attacker, count: int) -> None:
    for _ in range(count):
        webnet.probe("submit", "--host", MAIL, "--port", "587", "--user", NO_REPLY, "--password-file",
                     secret_file(webnet, "wrong", "not-the-password"), "--sender", NO_REPLY, "--to",
                     f"x@{REMOTE_DOMAIN}", "--wait", "0", host=attacker)


def test_wrong_smtp_auth_bans_the_address_from_every_port_until_the_ban_ends(webnet, installed, attacker):
    assert connects(attacker, 587) == "open"
    wrong_submissions(webnet, attacker, 6)
    linux.wait_until(lambda: banned(webnet, "postfix-sasl"), 30, "the postfix-sasl ban", every=1)
    assert {port: connects(attacker, port) for port in (25, 587, 993, 443)} == dict.fromkeys((25, 587, 993, 443), "refused")
    assert {port: connects(webnet.client, port) for port in (25, 587, 993, 443)} == dict.fromkeys((25, 587, 993, 443), "open")
    # the ban is a minute long: then the attacker's address may connect again
    linux.wait_until(lambda: connects(attacker, 587) == "open", 150, "the ban to end", every=5)
    assert not banned(webnet, "postfix-sasl")


def test_wrong_imap_logins_ban_the_address(webnet, installed, attacker, ca_pem):
    for _ in range(6):
        webnet.probe("imap", "--host", MAIL, "--port", "993", "--user", NO_REPLY, "--password-file",
                     secret_file(webnet, "wrong", "not-the-password"), "--wait", "0", host=attacker)
    linux.wait_until(lambda: banned(webnet, "dovecot"), 30, "the dovecot ban", every=1)
    assert connects(attacker, 993) == "refused" and connects(webnet.client, 993) == "open"
    fail2ban(webnet, "unban", "--all")  # what an admin does rather than wait
    assert connects(attacker, 993) == "open"


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


def test_ssh_attempts_ban_the_address(webnet, installed, attacker):
    for _ in range(6):
        if banned(webnet, "sshd"):
            break
        ssh_attempt(attacker)
    linux.wait_until(lambda: banned(webnet, "sshd"), 30, "the sshd ban", every=1)
    assert connects(attacker, 22) == "refused" and connects(webnet.client, 22) == "open"
    fail2ban(webnet, "unban", "--all")


# --- a re-run --------------------------------------------------------------------------------------------


def test_a_rerun_of_the_install_changes_nothing(webnet, installed):
    before = webnet.file_hashes(WEB_FILES), webnet.service_starts(WEB_SERVICES)
    again = webnet.install()
    assert [r.returncode for r in again] == [0] * len(again), again[-1].stderr[-2000:]
    assert [line for r in again for line in r.stdout.splitlines() if line.startswith("updated ")] == []
    assert (webnet.file_hashes(WEB_FILES), webnet.service_starts(WEB_SERVICES)) == before
