"""Backups and restore on a real Debian host (README, Backups and restore): the stack's `backup` stage, a run
to an sftp backup host of the test internet, the host destroyed and rebuilt from the graph, and the restore.

One test internet of the module's own (tests/mailnet) with a backup host (tests/mailnet/backup_host.py: an
sftp-only account, its host key pinned by the stack's backupHostKey, the stack's backup key authorized as
`pulumi stack output backupSshPublicKey` would be) and a mail host installed with `ldapMode: local`, so that
mail goes to two mailboxes: the stack's no-reply and a person of the directory. Mail arrives from the remote
domain, flags are set as a client sets them, and the systemd unit the timer starts runs a backup. Then:

- the repository holds no plaintext of any message (the marker in every subject is grepped for);
- `mailctl backup status` reports the backup, over SSH as the operator;
- a fresh host at the same address runs every command of the graph again, and `mailctl backup restore`
  brings the mail back (every message with its flags, over IMAPS), and the person with their password;
- the DKIM key is the stack's, unchanged: a new mail verifies against the DNS record that never changed;
- new mail is delivered after the restore;
- a wrong repository password fails the restore and says so;
- the backup host down makes the next run fail, and `mailctl backup status` says so (exit 1).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from components.builders.dns_records import Record
from tests.mailnet.backup_host import host_key, start_backup_host
from tests.mailnet.fixtures import install_or_fail, open_mailnet
from tests.mailnet.host_checks import LDAP_CONFIG, ldap_probe, person_dn, secret_file, stdin_secrets, submit, verdict
from tests.mailnet.scenario import ADDRESSES, PREFIX, REMOTE_DOMAIN

pytestmark = pytest.mark.slow

MAIL = ADDRESSES["mail"]
BACKUP_ADDRESS = "203.0.113.45"
BACKUP_NAME = "backup.example.com"
BACKUP_RECORD = Record("example.com", BACKUP_NAME, "A", BACKUP_ADDRESS, 300, "test: the operator's backup host")
MARKER = "ceres-backup-marker-7f3a9c"  #: in every test message's subject and body: never in the repository
ADMIN = "cn=admin,dc=example,dc=com"
PERSON, PERSON_ADDRESS, PERSON_PASSWORD = "alice", "alice@example.com", "alice-backed-Up-5"
NO_REPLY = "no-reply@example.com"
#: the mail that the backup must bring back: subject -> (mailbox, flags set by the client)
MESSAGES = {
    f"{MARKER} one for alice": (PERSON_ADDRESS, "\\Flagged \\Seen"),
    f"{MARKER} two for alice": (PERSON_ADDRESS, ""),
    f"{MARKER} one for no-reply": (NO_REPLY, "\\Seen"),
}


@pytest.fixture(scope="module")
def backup_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("backup-host")


@pytest.fixture(scope="module")
def backupnet(tmp_path_factory, shared_apt_proxy, backup_workdir):
    config = {**LDAP_CONFIG, "ceres-mail:backupTarget": f"sftp:root@{BACKUP_NAME}:/restic/ceres",
              "ceres-mail:backupHostKey": host_key(backup_workdir)}
    with open_mailnet(tmp_path_factory.mktemp("backupnet"), shared_apt_proxy, config,
                      extra_records=(BACKUP_RECORD,)) as net:
        yield net


@pytest.fixture(scope="module")
def backup_host(backupnet, backup_workdir):
    """The operator's backup host, the stack's backup key authorized (backupSshPublicKey)."""
    from cryptography.hazmat.primitives import serialization

    host = start_backup_host(backupnet.net, backup_workdir, f"{BACKUP_ADDRESS}/{PREFIX}", dns_name=BACKUP_NAME)
    private = stdin_secrets(backupnet, "-install-backup")["BACKUP_SSH_KEY"]
    public = serialization.load_ssh_private_key(private.encode(), None).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    host.authorize(public)
    yield host
    host.stop()


@pytest.fixture(scope="module")
def installed(backupnet, backup_host):
    return install_or_fail(backupnet)


@pytest.fixture(scope="module")
def passwords(backupnet, installed) -> dict[str, str]:
    ldap, mail = stdin_secrets(backupnet, "-install-ldap"), stdin_secrets(backupnet, "-install-mail")
    return {"admin": ldap["LDAP_ADMIN_PASSWORD"], NO_REPLY: mail["MAILBOX_PASSWORD"], PERSON_ADDRESS: PERSON_PASSWORD}


@pytest.fixture(scope="module")
def ca_file(backupnet, installed) -> str:
    """pebble's root, which the mail host's certificate chains to."""
    return backupnet.pebble_root()


def mailbox(net, ca_file: str, user: str, password: str, flags: str = "", subject: str = "") -> list[dict]:
    """Every message of `user` (folder, subject, flags) over IMAPS; first setting `flags` on `subject`'s."""
    extra = ("--flags", flags, "--subject", subject) if flags else ()
    listed = net.probe("mailbox", "--host", MAIL, "--port", "993", "--cafile", ca_file, "--user", user,
                       "--password-file", secret_file(net, "imap", password), *extra)
    assert "messages" in listed, listed
    return listed["messages"]


def mailctl(net, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """mailctl as the operator runs it, from the client network, with the stack file of the deployment and
    an SSH key the mail host authorizes (the deploy key: the admin user's) and its pinned host key."""
    argv = [sys.executable, "-m", "mailctl.cli", "-C", str(net.workdir / "stack"), *args, "--stack", "e2e",
            "--host", MAIL, "--ssh-key", str(net.workdir / "deploy_key"), "--known-hosts", str(net.workdir / "known_hosts")]
    return net.client.run(argv, timeout=900, input=stdin, stdin=None)


def run_backup(net) -> subprocess.CompletedProcess:
    """What the timer does: start the service and wait for it (a oneshot unit)."""
    return net.mail.exec(["systemctl", "start", "ceres-mail-backup.service"], timeout=600)


@pytest.fixture(scope="module")
def delivered(backupnet, ca_file, passwords) -> dict[str, list[dict]]:
    """The person added by the operator, mail to both mailboxes from the remote domain, flags set by the
    clients: each mailbox as IMAP shows it before any backup."""
    entry = {"dn": person_dn(PERSON), "attributes": {
        "objectClass": ["inetOrgPerson"], "uid": PERSON, "cn": "Alice", "sn": "Example", "mail": PERSON_ADDRESS,
        "userPassword": PERSON_PASSWORD}}
    added = ldap_probe(backupnet, ca_file, "add", "--entry-file", secret_file(backupnet, "entry", json.dumps(entry)),
                       as_dn=ADMIN, password=passwords["admin"])
    assert added["ok"], added
    for subject, (to, _) in MESSAGES.items():
        sent = backupnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", to,
                               "--subject", subject)
        assert sent["accepted"], sent
    for subject, (to, flags) in MESSAGES.items():
        read = backupnet.probe("imap", "--host", MAIL, "--port", "993", "--cafile", ca_file, "--user", to,
                               "--password-file", secret_file(backupnet, "imap", passwords[to]), "--subject", subject)
        assert read["found"], (subject, read)
        if flags:
            mailbox(backupnet, ca_file, to, passwords[to], flags, subject)
    return {user: mailbox(backupnet, ca_file, user, passwords[user]) for user in (PERSON_ADDRESS, NO_REPLY)}


@pytest.fixture(scope="module")
def backed_up(backupnet, delivered) -> subprocess.CompletedProcess:
    ran = run_backup(backupnet)
    assert ran.returncode == 0, backupnet.mail.exec(["journalctl", "-u", "ceres-mail-backup", "--no-pager"]).stdout[-3000:]
    return ran


# --- the install ---------------------------------------------------------------------------------------


def test_the_backup_stage_makes_the_repository_and_schedules_the_runs(backupnet, installed, backup_host):
    stage = next(r for c, r in zip(backupnet.deployment.commands, installed) if c.name.endswith("-install-backup"))
    assert "made the repository at sftp:root@backup.example.com:/restic/ceres" in stage.stdout
    assert (backup_host.repository_path / "ceres" / "config").is_file(), "restic's repository on the backup host"
    enabled = backupnet.mail.exec(["systemctl", "is-enabled", "ceres-mail-backup.timer"])
    assert enabled.stdout.strip() == "enabled"
    for name in ("password", "ssh_key", "config.json"):
        shown = backupnet.mail.exec(["stat", "-c", "%a %U", f"/etc/ceres-mail/backup/{name}"])
        assert shown.stdout.strip() == "600 root", name
    secrets = stdin_secrets(backupnet, "-install-backup")
    for secret in (secrets["BACKUP_PASSWORD"], secrets["BACKUP_SSH_KEY"].splitlines()[1]):
        assert secret not in stage.stdout + stage.stderr


def test_a_rerun_of_the_backup_stage_changes_nothing(backupnet, installed):
    command = next(c for c in backupnet.deployment.commands if c.name.endswith("-install-backup"))
    files = ["/etc/ceres-mail/backup/config.json", "/etc/ceres-mail/backup/password", "/usr/local/sbin/ceres-mail-backup",
             "/etc/systemd/system/ceres-mail-backup.service", "/etc/systemd/system/ceres-mail-backup.timer"]
    before = backupnet.file_hashes(files), backupnet.service_starts(["ceres-mail-backup.timer"])
    again = backupnet.ssh(command.create, command.stdin)
    assert again.returncode == 0, again.stderr
    assert "updated" not in again.stdout and "opens with this stack's password" in again.stdout
    assert (backupnet.file_hashes(files), backupnet.service_starts(["ceres-mail-backup.timer"])) == before


# --- a backup ------------------------------------------------------------------------------------------


def test_a_run_backs_up_both_mailboxes_and_holds_no_plaintext(backupnet, backup_host, backed_up):
    assert "2 mailbox(es)" in backed_up.stdout + backupnet.mail.exec(
        ["journalctl", "-u", "ceres-mail-backup", "--no-pager", "-o", "cat"]).stdout
    staged = subprocess.run(["grep", "-rl", MARKER, str(backupnet.mail.path("/var/mail/ceres-backup"))],
                            capture_output=True, text=True)
    assert staged.stdout, "the staging copy holds the messages (the grep can find them)"
    stored = subprocess.run(["grep", "-rl", MARKER, str(backup_host.repository_path)], capture_output=True, text=True)
    assert stored.returncode == 1 and stored.stdout == "", "plaintext mail in the repository"


def test_backup_status_reports_the_last_backup(backupnet, backed_up):
    shown = mailctl(backupnet, "backup", "status")
    assert shown.returncode == 0, shown.stderr
    assert "ok    last success:" in shown.stdout and "2 mailbox(es)" in shown.stdout
    as_json = json.loads(mailctl(backupnet, "backup", "status", "--json").stdout)
    assert as_json["ok"] and as_json["host"]["last_run"]["result"] == "ok"


def test_verify_with_ssh_access_checks_the_backup(backupnet, backed_up, ca_file):
    argv = [sys.executable, "-m", "mailctl.cli", "-C", str(backupnet.workdir / "stack"), "verify", "--stack", "e2e",
            "--resolver", ADDRESSES["dns"], "--ca-file", ca_file, "--json", "--ssh-host", MAIL,
            "--ssh-key", str(backupnet.workdir / "deploy_key"), "--known-hosts", str(backupnet.workdir / "known_hosts")]
    report = json.loads(backupnet.client.run(argv, timeout=300).stdout)
    rows = {r["check"]: r["status"] for r in report["results"] if r["check"].startswith("backup")}
    assert rows == {"backup last success": "ok", "backup last run": "ok"}, report


# --- the host lost, rebuilt, restored ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt(backupnet, backed_up, ca_file, passwords) -> subprocess.CompletedProcess:
    """The VM lost: a fresh host at the same address, every command of the graph run on it again, then
    `mailctl backup restore` of the latest snapshot."""
    dkim_before = backupnet.mail.path("/var/lib/rspamd/dkim/ceres.key").read_bytes()
    backupnet.rebuild_mail_host()
    install_or_fail(backupnet)
    assert backupnet.mail.path("/var/lib/rspamd/dkim/ceres.key").read_bytes() == dkim_before, "the stack's key"
    assert not backupnet.mail.path("/var/mail/vhosts/example.com/alice").exists(), "a fresh host"
    return mailctl(backupnet, "backup", "restore")


def test_a_wrong_repository_password_fails_the_restore_clearly(backupnet, rebuilt):
    wrong = mailctl(backupnet, "backup", "restore", "--password-file", "-", stdin="not-the-password\n")
    assert wrong.returncode == 3, wrong
    assert "the repository password does not open the repository at sftp:root@backup.example.com:/restic/ceres" \
        in wrong.stderr
    assert "not-the-password" not in wrong.stdout + wrong.stderr


def test_the_restore_brings_every_message_back_with_its_flags(backupnet, rebuilt, delivered, ca_file, passwords):
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{PERSON_ADDRESS}: 2 message(s) restored" in rebuilt.stdout
    assert "directory: added 1 person(s)" in rebuilt.stdout
    for user in (PERSON_ADDRESS, NO_REPLY):
        restored = mailbox(backupnet, ca_file, user, passwords[user])
        assert restored == delivered[user], user
    flagged = {m["subject"]: m["flags"] for m in delivered[PERSON_ADDRESS]}
    assert flagged[f"{MARKER} one for alice"] == "\\Flagged \\Seen"


def test_after_the_restore_mail_is_signed_with_the_same_key_and_delivered(backupnet, rebuilt, ca_file, passwords):
    sent = submit(backupnet, NO_REPLY, passwords[NO_REPLY], NO_REPLY, f"someone@{REMOTE_DOMAIN}",
                  "after the restore")
    assert sent["sent"], sent
    judged = verdict(backupnet, "after the restore")
    assert judged["dkim"] == "pass", judged  # against the DNS record published before the VM was lost
    arrived = backupnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", PERSON_ADDRESS,
                              "--subject", "new after the restore")
    assert arrived["accepted"], arrived
    read = backupnet.probe("imap", "--host", MAIL, "--port", "993", "--cafile", ca_file, "--user", PERSON_ADDRESS,
                           "--password-file", secret_file(backupnet, "imap", passwords[PERSON_ADDRESS]),
                           "--subject", "new after the restore")
    assert read["found"], read


def test_an_unreachable_backup_host_fails_the_run_and_the_status_says_so(backupnet, rebuilt, backup_host):
    backup_host.stop()
    try:
        failed = run_backup(backupnet)
        assert failed.returncode != 0
        shown = mailctl(backupnet, "backup", "status")
        command = next(c for c in backupnet.deployment.commands if c.name.endswith("-install-backup"))
        staged = backupnet.ssh(command.create, command.stdin)
    finally:
        backup_host.start()
    assert shown.returncode == 1, shown
    assert "fail  last run: failed" in shown.stdout
    assert staged.returncode == 0, "an unreachable target only warns at install: the next run tries again"
    assert "WARNING: backups cannot reach" in staged.stderr
    assert f"sftp:root@{BACKUP_NAME}:/restic/ceres cannot be reached" in shown.stdout
