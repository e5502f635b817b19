"""The directory world as an operator lives it, one step after another in file order (README, "One password
everywhere (LDAP)"; README, Backups and restore): a mail host with its own directory (`ldapMode: local`) and
backups to an sftp host, then lost, rebuilt and restored, then switched to the operator's own directory.

One test internet of the module's own (tests/mailnet: DNS, pebble, the remote MTA of example.net, a client),
a backup host (tests/mailnet/backup_host.py: an sftp-only account, its host key pinned by the stack's
backupHostKey, the stack's backup key authorized as `pulumi stack output backupSshPublicKey` would be; it runs
before the install, whose backup stage makes the repository) and one mail host, first-booted from the snippets
of the stack recorded with `ldapMode: local` and a `backupTarget`, and installed over SSH with the graph's own
commands, `ldap` and `backup` stages included. A change of configuration is applied to the running host as
`pulumi up` applies it (MailNet.apply): only the commands whose script or standard input changed run again.

1. The directory on the host: slapd installed by the stack's own stages, and one password for mail and
   Keycloak. The directory is used as its users would: an operator adds people as the root DN, they read and
   send mail with their directory password, Keycloak's federation (the service account) changes a password
   with the Password Modify extended operation, and attackers (anonymous, another person) read nothing; a
   re-run changes nothing, and a certificate renewed by certbot reaches slapd.
2. Backups and restore: the backup stage made the repository and a re-run of it changes nothing. Mail arrives
   from the remote domain at two mailboxes, the stack's no-reply and alice's (a person of step 1, with the
   password step 1 left her), flags are set as a client sets them, and the systemd unit the timer starts runs
   a backup (of three mailboxes: bob's holds step 1's mail). Then:
   - the repository holds no plaintext of any message (the marker in every subject is grepped for);
   - `mailctl backup status` reports the backup, over SSH as the operator, and `mailctl verify` with SSH
     access checks it;
   - a fresh host at the same address runs every command of the graph again, and `mailctl backup restore`
     brings the mail back (every message with its flags, over IMAPS), and step 1's people (slapd's export)
     with their passwords;
   - the DKIM key is the stack's, unchanged: a new mail verifies against the DNS record that never changed;
   - new mail is delivered after the restore;
   - a wrong repository password fails the restore and says so;
   - the backup host down makes the next run fail, and `mailctl backup status` says so (exit 1).
   It leaves a working host with its local directory and its backups (the backup host up again).
3. The switch to an external directory, on the restored host, as `pulumi up` would after the stack file
   changed: the stack re-recorded with `ldapMode: external` and the operator's directory ldap.example.com
   (tests/mailnet/directory.py: slapd in a namespace of the test internet, set up by the test, its certificate
   from the operator's own CA, which the operator first adds to the host's CA store), the backup target kept,
   and the commands whose script or input changed run over SSH (the packages and mail stages, and the backup
   stage, which no longer exports a local directory). Its people log in, send and receive with the
   directory's passwords, over ldaps:// and over ldap:// with StartTLS; a directory whose certificate the host
   does not trust, or one that offers no StartTLS, never gets a bind. Last: the host then no longer asks the
   directory that steps 1 and 2 use and back up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from components.builders.dns_records import Record
from tests.mailnet.acme import directory_url
from tests.mailnet.backup_host import host_key, start_backup_host
from tests.mailnet.directory import SERVICE_ACCOUNT as EXTERNAL_ACCOUNT
from tests.mailnet.directory import Directory, start_directory
from tests.mailnet.fixtures import install_or_fail, open_mailnet
from tests.mailnet.host_checks import (
    BASE,
    CONFIG_FILES,
    LDAP_CONFIG,
    MAIL,
    PEOPLE,
    SERVICES,
    ldap_probe,
    person_dn,
    secret_file,
    stdin_secrets,
    submit,
    verdict,
)
from tests.mailnet.scenario import (
    ADDRESSES,
    PREFIX,
    REMOTE_DOMAIN,
    deploy,
)
from tests.testnet import linux

pytestmark = pytest.mark.slow

ADMIN = f"cn=admin,{BASE}"
SERVICE_ACCOUNT = f"cn=ceres-mail,{BASE}"
#: people the operator adds: two of example.com (the stack's domain), one of a domain the stack does not serve
PERSONS = {"alice": "alice@example.com", "bob": "bob@example.com", "carol": "carol@example.org"}
LDAP_FILES = (
    "/etc/systemd/system/slapd.service",
    "/etc/ldap/tls/fullchain.pem",
    "/etc/ldap/tls/privkey.pem",
    "/etc/ldap/slapd.d/cn=config.ldif",
    "/etc/ldap/slapd.d/cn=config/olcDatabase={-1}frontend.ldif",
    "/etc/ldap/slapd.d/cn=config/olcDatabase={1}mdb.ldif",
    "/etc/ldap/slapd.d/cn=config/olcDatabase={1}mdb/olcOverlay={0}ppolicy.ldif",
    "/etc/letsencrypt/renewal-hooks/deploy/ceres-mail-slapd",
    "/etc/dovecot/ceres-ldap.conf.ext",
    "/etc/dovecot/conf.d/99-ceres-mail.ldap.conf",
    "/etc/postfix/ceres-ldap-people.cf",
    "/etc/postfix/ceres-reserved-senders",
)


#: the operator's directory (ldapMode external, step 3): its address, and its name in the operator's DNS
DIRECTORY_ADDRESS = "203.0.113.38"
DIRECTORY_RECORD = Record("example.com", "ldap.example.com", "A", DIRECTORY_ADDRESS, 300,
                          "test: the operator's directory, outside the stack")
#: the operator's backup host (step 2), and its name in the operator's DNS
BACKUP_ADDRESS = "203.0.113.45"
BACKUP_NAME = "backup.example.com"
BACKUP_RECORD = Record("example.com", BACKUP_NAME, "A", BACKUP_ADDRESS, 300, "test: the operator's backup host")
#: what the operator's DNS serves besides the stack's records, for every recording of the world's stack
OPERATOR_RECORDS = (DIRECTORY_RECORD, BACKUP_RECORD)


@pytest.fixture(scope="module")
def backup_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("backup-host")


@pytest.fixture(scope="module")
def backup_config(backup_workdir) -> dict:
    """The stack's keys for the backup host: its sftp repository, and its host key pinned (made before the host
    runs); kept in the stack file when the directory changes (step 3)."""
    return {"ceres-mail:backupTarget": f"sftp:root@{BACKUP_NAME}:/restic/ceres",
            "ceres-mail:backupHostKey": host_key(backup_workdir)}


@pytest.fixture(scope="module")
def ldapnet(tmp_path_factory, shared_apt_proxy, backup_config):
    with open_mailnet(tmp_path_factory.mktemp("ldapnet"), shared_apt_proxy, {**LDAP_CONFIG, **backup_config},
                      extra_records=OPERATOR_RECORDS, installed_base=True) as net:
        yield net


@pytest.fixture(scope="module")
def backup_host(ldapnet, backup_workdir):
    """The operator's backup host, the stack's backup key authorized (backupSshPublicKey)."""
    host = start_backup_host(ldapnet.net, backup_workdir, f"{BACKUP_ADDRESS}/{PREFIX}", dns_name=BACKUP_NAME)
    private = stdin_secrets(ldapnet, "-install-backup")["BACKUP_SSH_KEY"]
    public = serialization.load_ssh_private_key(private.encode(), None).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    host.authorize(public)
    yield host
    host.stop()


@pytest.fixture(scope="module")
def installed(ldapnet, backup_host):
    """The install, the backup host up first (the backup stage makes the repository there)."""
    return install_or_fail(ldapnet)


@pytest.fixture(scope="module")
def passwords(ldapnet, installed) -> dict[str, str]:
    """Every password of the test: the stack's (from the stages' stdin) and each person's first one."""
    ldap, mail = stdin_secrets(ldapnet, "-install-ldap"), stdin_secrets(ldapnet, "-install-mail")
    return {"admin": ldap["LDAP_ADMIN_PASSWORD"], "service": ldap["LDAP_BIND_PASSWORD"],
            "no-reply": mail["MAILBOX_PASSWORD"], **{uid: f"{uid}-first-Pa55" for uid in PERSONS}}


@pytest.fixture(scope="module")
def ca_file(ldapnet, installed) -> str:
    """pebble's root, which the mail host's certificate chains to."""
    return ldapnet.pebble_root()


@pytest.fixture(scope="module")
def people(ldapnet, ca_file, passwords) -> dict[str, str]:
    """The operator adds the people as the root DN, their passwords in clear (slapd hashes them)."""
    for uid, address in PERSONS.items():
        entry = {"dn": person_dn(uid), "attributes": {
            "objectClass": ["inetOrgPerson"], "uid": uid, "cn": uid.title(), "sn": "Example", "mail": address,
            "userPassword": passwords[uid]}}
        path = Path(secret_file(ldapnet, f"entry-{uid}", json.dumps(entry)))
        added = ldap_probe(ldapnet, ca_file, "add", "--entry-file", str(path), as_dn=ADMIN, password=passwords["admin"])
        assert added["ok"], added
    return PERSONS


def imap_login(net, user: str, password: str) -> dict:
    """An IMAPS login on 993 (and a look at the inbox): {"found": ...} or {"exception": ...}."""
    return net.probe("imap", "--host", MAIL, "--port", "993", "--user", user, "--password-file",
                     secret_file(net, "imap", password), "--subject", "nothing in particular", "--wait", "0")


def stored_password(net, ca_file: str, passwords: dict, uid: str) -> str:
    """userPassword of a person, as the root DN reads it."""
    found = ldap_probe(net, ca_file, "search", "--base", person_dn(uid), "--scope", "base", "--attributes", "userPassword",
                       as_dn=ADMIN, password=passwords["admin"])
    return found["entries"][0]["attributes"]["userPassword"][0]


# --- 1. the directory on the host: ldapMode local ------------------------------------------------------

# --- the install --------------------------------------------------------------------------------------


def test_the_ldap_stage_runs_between_tls_and_mail_and_says_the_directory_is_ready(ldapnet, installed):
    """With ldapMode local, the ldap stage runs between tls and mail and reports the directory ready."""
    stage = ldapnet.deployment.stage  # the graph's order
    assert stage("-install-tls") < stage("-install-ldap") < stage("-install-mail")
    assert ldapnet.deployment.commands[-1].name.endswith("-install-backup"), "the backup stage after the install"
    ldap = installed[stage("-install-ldap")]
    assert f"ceres-mail: directory {BASE} ready (people under {PEOPLE})" in ldap.stdout
    assert "ceres-mail: mail.example.com ready for example.com" in installed[stage("-install-mail")].stdout


def test_no_secret_in_the_output_and_the_files_that_hold_them_are_closed(ldapnet, installed, passwords):
    """The install prints no password, and the files holding the directory's secrets are closed to other users."""
    output = "".join(r.stdout + r.stderr for r in installed)
    for name in ("admin", "service", "no-reply"):
        assert passwords[name] not in output, name
    modes = {path: ldapnet.mail.exec(["stat", "-c", "%a %U:%G", path]).stdout.strip() for path in (
        "/etc/dovecot/ceres-ldap.conf.ext", "/etc/postfix/ceres-ldap-people.cf", "/etc/ldap/tls/privkey.pem")}
    assert modes == {"/etc/dovecot/ceres-ldap.conf.ext": "600 root:root",
                     "/etc/postfix/ceres-ldap-people.cf": "640 root:postfix",
                     "/etc/ldap/tls/privkey.pem": "640 root:openldap"}


def test_slapd_serves_ldaps_with_tls_1_2_or_better_and_no_plain_ldap(ldapnet, installed, ca_file):
    """slapd serves LDAPS on 636 with TLS 1.2 or newer and the mail host's certificate; nothing listens on 389."""
    for version, wanted in (("TLSv1_1", False), ("TLSv1_2", True), ("TLSv1_3", True)):
        shaken = ldapnet.probe("tls-version", "--host", MAIL, "--port", "636", "--version", version)
        assert shaken["handshake"] is wanted, (version, shaken)
    served = ldapnet.probe("certificate", "--host", MAIL, "--port", "636", "--cafile", ca_file)
    assert "mail.example.com" in served["san"], served
    plain = ldapnet.client.run([sys.executable, "-c", f"import socket; socket.create_connection(({MAIL!r}, 389), 5)"])
    assert plain.returncode != 0 and "refused" in plain.stderr.lower(), "nothing listens on 389"
    listening = ldapnet.mail.exec(["ss", "-Hltn", "sport = :389"]).stdout
    assert listening.strip() == ""


# --- people: one password for mail ------------------------------------------------------------------


def test_a_person_logs_in_to_imap_with_the_directory_password_and_a_wrong_one_is_refused(ldapnet, people, passwords):
    """A person the operator adds logs in to IMAP with their directory password; a wrong one is refused."""
    assert "exception" not in imap_login(ldapnet, "alice@example.com", passwords["alice"])
    refused = imap_login(ldapnet, "alice@example.com", passwords["alice"] + "-not")
    assert "AUTHENTICATIONFAILED" in refused.get("exception", ""), refused


def test_a_person_of_a_domain_the_stack_does_not_serve_has_no_mailbox(ldapnet, people, passwords):
    """A directory person whose address is in a domain the stack does not serve has no mailbox: the login is refused."""
    refused = imap_login(ldapnet, "carol@example.org", passwords["carol"])
    assert "AUTHENTICATIONFAILED" in refused.get("exception", ""), refused


def test_a_person_submits_on_587_and_the_mail_arrives_signed(ldapnet, people, passwords):
    """A directory person sends on 587 with their directory password; the mail arrives DKIM-signed and aligned."""
    subject = f"from alice {time.monotonic_ns()}"
    sent = submit(ldapnet, "alice@example.com", passwords["alice"], "alice@example.com", f"someone@{REMOTE_DOMAIN}", subject)
    assert sent.get("sent"), sent
    judged = verdict(ldapnet, subject)
    assert (judged["dkim"], judged["dkim_domain"], judged["dkim_selector"]) == ("pass", "example.com", "ceres"), judged
    assert judged["mail_from"] == "alice@example.com" and judged["dmarc_aligned"]


def test_a_person_sends_only_as_themselves(ldapnet, people, passwords):
    """Not as another person, nor as the stack's own addresses (the mailbox, its aliases)."""
    for sender in ("bob@example.com", "no-reply@example.com", "postmaster@example.com"):
        refused = submit(ldapnet, "alice@example.com", passwords["alice"], sender, f"someone@{REMOTE_DOMAIN}", f"as {sender}")
        assert "Sender address rejected" in refused.get("exception", ""), (sender, refused)


def test_mail_to_a_person_is_delivered_to_their_maildir(ldapnet, people, passwords):
    """Mail to a directory person lands in their maildir on the data disk; an unknown address is refused (550)."""
    subject = f"to bob {time.monotonic_ns()}"
    accepted = ldapnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", "bob@example.com",
                             "--subject", subject, host=ldapnet.remote)
    assert accepted.get("accepted"), accepted
    read = ldapnet.probe("imap", "--host", MAIL, "--port", "993", "--user", "bob@example.com", "--password-file",
                         secret_file(ldapnet, "imap", passwords["bob"]), "--subject", subject, "--wait", "30")
    assert read.get("found"), read
    stored = ldapnet.mail.exec(["grep", "-rl", subject, "/var/mail/vhosts/example.com/bob/Maildir/"]).stdout
    assert stored.strip(), "in bob's maildir on the data disk"
    unknown = ldapnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", "nobody@example.com",
                            "--subject", "to no one", host=ldapnet.remote)
    assert not unknown.get("accepted") and "550" in json.dumps(unknown), unknown


def test_the_no_reply_mailbox_still_works(ldapnet, people, passwords):
    """With a directory, the stack's own no-reply mailbox still logs in and sends DKIM-signed mail."""
    assert "exception" not in imap_login(ldapnet, "no-reply@example.com", passwords["no-reply"])
    subject = f"from no-reply {time.monotonic_ns()}"
    sent = submit(ldapnet, "no-reply@example.com", passwords["no-reply"], "no-reply@example.com",
                  f"someone@{REMOTE_DOMAIN}", subject)
    assert sent.get("sent"), sent
    assert verdict(ldapnet, subject)["dkim"] == "pass"


# --- Keycloak's federation changes a password ------------------------------------------------------


def test_a_password_changed_by_keycloak_is_the_mail_password_and_is_stored_hashed(ldapnet, ca_file, people, passwords):
    """What Keycloak WRITABLE does: bind as the service account, Password Modify with the new password."""
    new = "alice-second-Pa55"
    changed = ldap_probe(ldapnet, ca_file, "passwd", "--user", person_dn("alice"), "--new-password-file",
                         secret_file(ldapnet, "new", new), as_dn=SERVICE_ACCOUNT, password=passwords["service"])
    assert changed["ok"], changed
    assert "AUTHENTICATIONFAILED" in imap_login(ldapnet, "alice@example.com", passwords["alice"]).get("exception", "")
    assert "exception" not in imap_login(ldapnet, "alice@example.com", new)
    passwords["alice"] = new
    stored = stored_password(ldapnet, ca_file, passwords, "alice")
    assert stored.startswith("{ARGON2}$argon2") and new not in stored
    # and one an operator writes in clear (a plain modify, or the add above) is hashed too
    assert stored_password(ldapnet, ca_file, passwords, "bob").startswith("{ARGON2}$argon2")


# --- what no one else gets -----------------------------------------------------------------------------


def test_anonymous_can_neither_bind_nor_read(ldapnet, ca_file, people):
    """An anonymous client can neither bind to the directory nor read anything from it."""
    unbound = ldap_probe(ldapnet, ca_file, "search", "--base", BASE)
    assert unbound["entries"] == [] and not unbound["ok"], unbound
    anonymous = ldap_probe(ldapnet, ca_file, "bind")
    assert not anonymous["ok"] and "anonymous bind disallowed" in anonymous["message"], anonymous


def test_a_person_reads_their_own_entry_but_no_one_else_and_no_password_hash(ldapnet, ca_file, people, passwords):
    """A person reads their own entry but not its password hash, and no one else's entry."""
    as_alice = {"as_dn": person_dn("alice"), "password": passwords["alice"]}
    own = ldap_probe(ldapnet, ca_file, "search", "--base", person_dn("alice"), "--scope", "base",
                     "--attributes", "mail,userPassword", **as_alice)
    assert [e["attributes"] for e in own["entries"]] == [{"mail": ["alice@example.com"]}], own
    for base, scope in ((person_dn("bob"), "base"), (PEOPLE, "subtree")):
        others = ldap_probe(ldapnet, ca_file, "search", "--base", base, "--scope", scope, "--attributes", "mail,userPassword",
                            **as_alice)
        assert others["entries"] == [], others


def test_the_service_account_finds_people_but_never_a_password_hash(ldapnet, ca_file, people, passwords):
    """The service account finds every person but never a password hash, and reads nothing of cn=config."""
    found = ldap_probe(ldapnet, ca_file, "search", "--base", PEOPLE, "--filter", "(objectClass=inetOrgPerson)",
                       "--attributes", "uid,mail,userPassword", as_dn=SERVICE_ACCOUNT, password=passwords["service"])
    assert sorted(e["attributes"]["mail"][0] for e in found["entries"]) == sorted(PERSONS.values())
    assert all("userPassword" not in e["attributes"] for e in found["entries"])
    config = ldap_probe(ldapnet, ca_file, "search", "--base", "cn=config", as_dn=SERVICE_ACCOUNT, password=passwords["service"])
    assert config["entries"] == []


# --- a re-run, and a renewal ------------------------------------------------------------------------------


def test_a_rerun_changes_no_file_and_restarts_no_service(ldapnet, people):
    """With the local directory, a re-run of the whole install changes no file or entry and restarts no service."""
    files, services = (*CONFIG_FILES, *LDAP_FILES), (*SERVICES, "slapd")
    hashes, starts = ldapnet.file_hashes(files), ldapnet.service_starts(services)
    assert all("ActiveState=active" in state for state in starts.values()), starts
    again = ldapnet.install()
    assert [r.returncode for r in again] == [0] * len(ldapnet.deployment.commands), again[-1].stderr
    changes = [line for r in again for line in r.stdout.splitlines() if line.startswith(("updated ", "added ", "creating "))]
    assert changes == []
    assert ldapnet.file_hashes(files) == hashes
    assert ldapnet.service_starts(services) == starts


def test_a_certificate_renewed_by_certbot_reaches_slapd(ldapnet, installed):
    """The deploy hook the ldap stage installs refreshes slapd's copy of the certificate and restarts it."""
    before = ldapnet.service_starts(["slapd"])
    renewed = ldapnet.mail.exec(["certbot", "renew", "--force-renewal", "--no-random-sleep-on-renew"],
                                env={"REQUESTS_CA_BUNDLE": "/etc/ceres-mail/acme-ca.pem"}, timeout=300)
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    live, copy = (ldapnet.file_hashes([path]) for path in ("/etc/letsencrypt/live/ceres-mail/fullchain.pem",
                                                           "/etc/ldap/tls/fullchain.pem"))
    assert list(live.values()) == list(copy.values())
    assert ldapnet.service_starts(["slapd"]) != before and "ActiveState=active" in ldapnet.service_starts(["slapd"])["slapd"]
    served = ldapnet.mail.exec(["bash", "-c", "openssl s_client -connect 127.0.0.1:636 </dev/null 2>/dev/null"
                                " | openssl x509 -noout -fingerprint -sha256"]).stdout
    expected = ldapnet.mail.exec(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                                  "/etc/letsencrypt/live/ceres-mail/fullchain.pem"]).stdout
    assert served and served == expected


# --- 2. backups and restore: the host lost, rebuilt from the graph, restored ---------------------------

MARKER = "ceres-backup-marker-7f3a9c"  #: in every test message's subject and body: never in the repository
#: the person of step 1 whose mailbox the backup must bring back, besides the stack's no-reply
PERSON, PERSON_ADDRESS = "alice", PERSONS["alice"]
NO_REPLY = "no-reply@example.com"
#: the mail that the backup must bring back: subject -> (mailbox, flags set by the client)
MESSAGES = {
    f"{MARKER} one for alice": (PERSON_ADDRESS, "\\Flagged \\Seen"),
    f"{MARKER} two for alice": (PERSON_ADDRESS, ""),
    f"{MARKER} one for no-reply": (NO_REPLY, "\\Seen"),
}


@pytest.fixture(scope="module")
def mailbox_passwords(passwords) -> dict[str, str]:
    """The password of each mailbox the backup must bring back, by address, read when the backups begin: the
    person's is the one step 1 left her (Keycloak's Password Modify changed it), which the restore brings back."""
    return {NO_REPLY: passwords["no-reply"], PERSON_ADDRESS: passwords[PERSON]}


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
def delivered(ldapnet, ca_file, people, mailbox_passwords) -> dict[str, list[dict]]:
    """Mail to both mailboxes from the remote domain (the person the operator added in step 1, and the stack's
    no-reply), flags set by the clients: each mailbox as IMAP shows it before any backup."""
    for subject, (to, _) in MESSAGES.items():
        sent = ldapnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", to,
                             "--subject", subject)
        assert sent["accepted"], sent
    for subject, (to, flags) in MESSAGES.items():
        read = ldapnet.probe("imap", "--host", MAIL, "--port", "993", "--cafile", ca_file, "--user", to,
                             "--password-file", secret_file(ldapnet, "imap", mailbox_passwords[to]),
                             "--subject", subject)
        assert read["found"], (subject, read)
        if flags:
            mailbox(ldapnet, ca_file, to, mailbox_passwords[to], flags, subject)
    return {user: mailbox(ldapnet, ca_file, user, mailbox_passwords[user]) for user in (PERSON_ADDRESS, NO_REPLY)}


@pytest.fixture(scope="module")
def backed_up(ldapnet, delivered) -> subprocess.CompletedProcess:
    ran = run_backup(ldapnet)
    assert ran.returncode == 0, ldapnet.mail.exec(["journalctl", "-u", "ceres-mail-backup", "--no-pager"]).stdout[-3000:]
    return ran


# --- the backup stage, at the install ------------------------------------------------------------------


def test_the_backup_stage_makes_the_repository_and_schedules_the_runs(ldapnet, installed, backup_host):
    """The backup stage makes the repository on the backup host and enables the timer; secrets 0600, never printed."""
    stage = next(r for c, r in zip(ldapnet.deployment.commands, installed) if c.name.endswith("-install-backup"))
    assert "made the repository at sftp:root@backup.example.com:/restic/ceres" in stage.stdout
    assert (backup_host.repository_path / "ceres" / "config").is_file(), "restic's repository on the backup host"
    enabled = ldapnet.mail.exec(["systemctl", "is-enabled", "ceres-mail-backup.timer"])
    assert enabled.stdout.strip() == "enabled"
    for name in ("password", "ssh_key", "config.json"):
        shown = ldapnet.mail.exec(["stat", "-c", "%a %U", f"/etc/ceres-mail/backup/{name}"])
        assert shown.stdout.strip() == "600 root", name
    secrets = stdin_secrets(ldapnet, "-install-backup")
    for secret in (secrets["BACKUP_PASSWORD"], secrets["BACKUP_SSH_KEY"].splitlines()[1]):
        assert secret not in stage.stdout + stage.stderr


def test_a_rerun_of_the_backup_stage_changes_nothing(ldapnet, installed):
    """Re-running the backup stage changes and restarts nothing; the repository still opens with the stack's password."""
    command = next(c for c in ldapnet.deployment.commands if c.name.endswith("-install-backup"))
    files = ["/etc/ceres-mail/backup/config.json", "/etc/ceres-mail/backup/password", "/usr/local/sbin/ceres-mail-backup",
             "/etc/systemd/system/ceres-mail-backup.service", "/etc/systemd/system/ceres-mail-backup.timer"]
    before = ldapnet.file_hashes(files), ldapnet.service_starts(["ceres-mail-backup.timer"])
    again = ldapnet.ssh(command.create, command.stdin)
    assert again.returncode == 0, again.stderr
    assert "updated" not in again.stdout and "opens with this stack's password" in again.stdout
    assert (ldapnet.file_hashes(files), ldapnet.service_starts(["ceres-mail-backup.timer"])) == before


# --- a backup ------------------------------------------------------------------------------------------


def test_a_run_backs_up_both_mailboxes_and_holds_no_plaintext(ldapnet, backup_host, backed_up):
    """A backup run saves every mailbox, and the repository on the backup host holds no message in plaintext."""
    # alice's and no-reply's, and bob's: step 1 delivered mail to him
    assert "3 mailbox(es)" in backed_up.stdout + ldapnet.mail.exec(
        ["journalctl", "-u", "ceres-mail-backup", "--no-pager", "-o", "cat"]).stdout
    staged = subprocess.run(["grep", "-rl", MARKER, str(ldapnet.mail.path("/var/mail/ceres-backup"))],
                            capture_output=True, text=True)
    assert staged.stdout, "the staging copy holds the messages (the grep can find them)"
    stored = subprocess.run(["grep", "-rl", MARKER, str(backup_host.repository_path)], capture_output=True, text=True)
    assert stored.returncode == 1 and stored.stdout == "", "plaintext mail in the repository"


def test_backup_status_reports_the_last_backup(ldapnet, backed_up):
    """`mailctl backup status` reports the last backup as a success, in text and in JSON, over SSH as the operator."""
    shown = mailctl(ldapnet, "backup", "status")
    assert shown.returncode == 0, shown.stderr
    assert "ok    last success:" in shown.stdout and "3 mailbox(es)" in shown.stdout  # bob's of step 1 too
    as_json = json.loads(mailctl(ldapnet, "backup", "status", "--json").stdout)
    assert as_json["ok"] and as_json["host"]["last_run"]["result"] == "ok"


def test_verify_with_ssh_access_checks_the_backup(ldapnet, backed_up, ca_file):
    """With SSH access, `mailctl verify` also checks the backups: last success and last run both green."""
    argv = [sys.executable, "-m", "mailctl.cli", "-C", str(ldapnet.workdir / "stack"), "verify", "--stack", "e2e",
            "--resolver", ADDRESSES["dns"], "--ca-file", ca_file, "--json", "--ssh-host", MAIL,
            "--ssh-key", str(ldapnet.workdir / "deploy_key"), "--known-hosts", str(ldapnet.workdir / "known_hosts")]
    report = json.loads(ldapnet.client.run(argv, timeout=300).stdout)
    rows = {r["check"]: r["status"] for r in report["results"] if r["check"].startswith("backup")}
    assert rows == {"backup last success": "ok", "backup last run": "ok"}, report


# --- the host lost, rebuilt, restored ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt(ldapnet, backed_up, ca_file, mailbox_passwords) -> subprocess.CompletedProcess:
    """The VM lost: a fresh host at the same address, every command of the graph run on it again, then
    `mailctl backup restore` of the latest snapshot."""
    dkim_before = ldapnet.mail.path("/var/lib/rspamd/dkim/ceres.key").read_bytes()
    ldapnet.rebuild_mail_host()
    install_or_fail(ldapnet)
    assert ldapnet.mail.path("/var/lib/rspamd/dkim/ceres.key").read_bytes() == dkim_before, "the stack's key"
    assert not ldapnet.mail.path("/var/mail/vhosts/example.com/alice").exists(), "a fresh host"
    return mailctl(ldapnet, "backup", "restore")


def test_a_wrong_repository_password_fails_the_restore_clearly(ldapnet, rebuilt):
    """A restore with a wrong repository password fails (exit 3), saying so, and never echoes the password."""
    wrong = mailctl(ldapnet, "backup", "restore", "--password-file", "-", stdin="not-the-password\n")
    assert wrong.returncode == 3, wrong
    assert "the repository password does not open the repository at sftp:root@backup.example.com:/restic/ceres" \
        in wrong.stderr
    assert "not-the-password" not in wrong.stdout + wrong.stderr


def test_the_restore_brings_every_message_back_with_its_flags(ldapnet, rebuilt, delivered, ca_file, mailbox_passwords):
    """After a rebuild, `mailctl backup restore` brings back every message with its flags and the directory's people."""
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{PERSON_ADDRESS}: 2 message(s) restored" in rebuilt.stdout
    assert f"directory: added {len(PERSONS)} person(s)" in rebuilt.stdout  # every person step 1 added
    for user in (PERSON_ADDRESS, NO_REPLY):
        restored = mailbox(ldapnet, ca_file, user, mailbox_passwords[user])
        assert restored == delivered[user], user
    flagged = {m["subject"]: m["flags"] for m in delivered[PERSON_ADDRESS]}
    assert flagged[f"{MARKER} one for alice"] == "\\Flagged \\Seen"


def test_after_the_restore_mail_is_signed_with_the_same_key_and_delivered(ldapnet, rebuilt, ca_file, mailbox_passwords):
    """After a restore, sent mail still passes DKIM against the unchanged DNS record, and new mail is delivered."""
    sent = submit(ldapnet, NO_REPLY, mailbox_passwords[NO_REPLY], NO_REPLY, f"someone@{REMOTE_DOMAIN}",
                  "after the restore")
    assert sent["sent"], sent
    judged = verdict(ldapnet, "after the restore")
    assert judged["dkim"] == "pass", judged  # against the DNS record published before the VM was lost
    arrived = ldapnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", PERSON_ADDRESS,
                            "--subject", "new after the restore")
    assert arrived["accepted"], arrived
    read = ldapnet.probe("imap", "--host", MAIL, "--port", "993", "--cafile", ca_file, "--user", PERSON_ADDRESS,
                         "--password-file", secret_file(ldapnet, "imap", mailbox_passwords[PERSON_ADDRESS]),
                         "--subject", "new after the restore")
    assert read["found"], read


def test_an_unreachable_backup_host_fails_the_run_and_the_status_says_so(ldapnet, rebuilt, backup_host):
    """With the backup host down, the backup run fails and `backup status` says so (exit 1); the install only warns."""
    backup_host.stop()
    try:
        failed = run_backup(ldapnet)
        assert failed.returncode != 0
        shown = mailctl(ldapnet, "backup", "status")
        command = next(c for c in ldapnet.deployment.commands if c.name.endswith("-install-backup"))
        staged = ldapnet.ssh(command.create, command.stdin)
    finally:
        backup_host.start()
    assert shown.returncode == 1, shown
    assert "fail  last run: failed" in shown.stdout
    assert staged.returncode == 0, "an unreachable target only warns at install: the next run tries again"
    assert "WARNING: backups cannot reach" in staged.stderr
    assert f"sftp:root@{BACKUP_NAME}:/restic/ceres cannot be reached" in shown.stdout


# --- 3. the switch to an external directory: the operator's, over the network --------------------------

#: the operator's service account password, as an operator may pick it (a unique token to find it by, then
#: what a config file could misread: quotes, a dollar, a hash, a percent, a backslash, spaces)
BIND_TOKEN = "Zq7-mail-reader-4Kx"
EXTERNAL_BIND_PASSWORD = BIND_TOKEN + ' "quoted" $HOME #1 %u\\ x'
#: the directory's people: the same addresses, other passwords than the local directory's (a login that
#: works says which directory answered)
EXTERNAL_PEOPLE = {uid: (address, f"{uid}-corp-Pa55") for uid, address in PERSONS.items()}
STARTTLS_OID = "1.3.6.1.4.1.1466.20037"  #: RFC 4511's StartTLS extended operation
DIRECTORY_FILES = ("/etc/dovecot/ceres-ldap.conf.ext", "/etc/dovecot/conf.d/99-ceres-mail.ldap.conf",
                   "/etc/postfix/ceres-ldap-people.cf", "/etc/postfix/ceres-reserved-senders")


def external_config(url: str) -> dict:
    return {"ceres-mail:ldapMode": "external", "ceres-mail:ldapUrl": url, "ceres-mail:ldapBindDn": EXTERNAL_ACCOUNT,
            "ceres-mail:ldapBindPassword": EXTERNAL_BIND_PASSWORD}


@pytest.fixture(scope="module")
def directory(ldapnet) -> Directory:
    return start_directory(ldapnet.net, ldapnet.workdir / "directory", f"{DIRECTORY_ADDRESS}/{PREFIX}",
                           EXTERNAL_BIND_PASSWORD, EXTERNAL_PEOPLE)


class ExternalStack:
    """The stack of the module's host with ldapMode external at a URL of the directory's, as `pulumi up`
    applies it: the program re-recorded with the new stack file (its other keys kept: the backup target and
    its host key; the generated mailbox password, the webmail's des_key and the backup repository's password
    as the state keeps them pinned), and each remote command whose script or standard input changed run again,
    in the graph's order (pulumi-command runs an updated Command's create again; a Command no longer declared,
    the local directory's `ldap` stage, has no delete step and leaves the host as it is)."""

    def __init__(self, net, kept_config: dict):
        self.net, self.url, self.switches = net, None, 0
        self.kept_config = kept_config  #: the stack file's keys that stay: the backup target and its host key
        #: the mailbox password, the webmail's des_key and the repository password, as the state keeps them
        self.kept = net.kept_secrets()
        self.first: list[tuple[str, object]] = []  #: what the first switch (from the local directory) ran

    def use(self, url: str) -> list[tuple[str, object]]:
        """Switch to `url` (nothing if the host is there already); the (stage, CompletedProcess) run."""
        if url == self.url:
            return []
        self.switches += 1
        deployment = deploy(self.net.workdir / f"stack-external-{self.switches}", directory_url(ADDRESSES["acme"]),
                            self.net.pebble_listener_ca.read_text(), extra={**self.kept_config, **external_config(url)},
                            extra_records=OPERATOR_RECORDS,
                            mock_overrides=self.kept)
        ran = self.net.apply(deployment)
        for stage, result in ran:
            assert result.returncode == 0, f"{stage}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        self.url = url
        return ran


@pytest.fixture(scope="module")
def external(ldapnet, installed, passwords, directory, backup_config):
    """The operator trusts the directory's CA on the mail host first (the stack has no setting for it:
    acmeCaBundle is certbot's alone; README, "An external directory"), then switches the stack to it, ldaps://,
    the stack file's backup target kept."""
    ldapnet.mail.path("/usr/local/share/ca-certificates/example-corp-directory.crt").write_text(directory.ca_pem)
    updated = ldapnet.mail.exec(["update-ca-certificates"])
    assert updated.returncode == 0 and "1 added" in updated.stdout, updated.stdout + updated.stderr
    stack = ExternalStack(ldapnet, backup_config)
    stack.first = stack.use(directory.url())
    return stack


def tls_before_every_bind(directory: Directory, instance: str, port: int) -> dict[int, list[str]]:
    """The mail host's connections to `instance` on `port`, each checked: TLS established before any bind,
    and a bind only as the service account or a person. (Once slapd's log shows a bind on that port: slapd
    writes its log a moment after it answers, which a loaded machine stretches.)"""
    def connections_on_port() -> dict[int, list[str]]:
        return {n: lines for n, lines in directory.connections(instance, MAIL).items()
                if f"(IP={DIRECTORY_ADDRESS}:{port})" in lines[0]}

    linux.wait_until(lambda: any(" BIND dn=" in line for lines in connections_on_port().values() for line in lines),
                     20, f"a bind on port {port} in slapd's log", every=5)
    connections = connections_on_port()
    for number, lines in connections.items():
        binds = [i for i, line in enumerate(lines) if " BIND dn=" in line]
        tls = [i for i, line in enumerate(lines) if "TLS established" in line]
        assert not binds or (tls and tls[0] < binds[0]), (number, lines)
        assert all(f'dn="{EXTERNAL_ACCOUNT}"' in lines[i] or f',{PEOPLE}"' in lines[i] for i in binds), (number, lines)
    return connections


def test_the_switch_to_an_external_directory_runs_only_the_packages_mail_and_backup_stages(ldapnet, external):
    """The packages and mail stages, as for a host without backups, and the backup stage: its config.json
    names the local directory it exports with slapcat, and /etc/ldap among what it snapshots, which an
    external directory is not, so its script changes (its standard input does not: the state keeps the
    repository's password)."""
    assert [stage for stage, _ in external.first] == ["packages", "mail", "backup"]
    names = [c.name for c in ldapnet.deployment.commands]  # with an external directory: no ldap stage
    assert not any(n.endswith("-install-ldap") for n in names) and names[-1].endswith("-install-backup"), names
    mail = dict(external.first)["mail"]
    assert "== directory mailboxes: the people under ou=people,dc=example,dc=com" in mail.stdout
    assert "ceres-mail: mail.example.com ready for example.com" in mail.stdout
    output = "".join(result.stdout + result.stderr for _, result in external.first)
    assert BIND_TOKEN not in output


def test_external_a_person_logs_in_with_the_directory_password_and_no_other(ldapnet, passwords, external, directory):
    """(The failures first: Dovecot delays each further login from an address after a failed one, more with each,
    until one succeeds; this module's clients all come from one address.)"""
    external.use(directory.url())
    # a wrong password, and the local directory's (its slapd still runs on the host, no longer asked)
    for wrong in (EXTERNAL_PEOPLE["alice"][1] + "-not", passwords["alice"]):
        refused = imap_login(ldapnet, "alice@example.com", wrong)
        assert "AUTHENTICATIONFAILED" in refused.get("exception", ""), refused
    assert "exception" not in imap_login(ldapnet, "alice@example.com", EXTERNAL_PEOPLE["alice"][1])
    connections = tls_before_every_bind(directory, "corp", directory.port())
    assert any(f'BIND dn="{EXTERNAL_ACCOUNT}"' in line for lines in connections.values() for line in lines)
    assert any(f'BIND dn="uid=alice,{PEOPLE}"' in line for lines in connections.values() for line in lines)


def test_external_a_person_submits_on_587_and_the_mail_arrives_signed(ldapnet, external, directory):
    """With the operator's directory, a person sends on 587 only as themselves, and the mail arrives signed."""
    external.use(directory.url())
    subject = f"from alice via the operator's directory {time.monotonic_ns()}"
    sent = submit(ldapnet, "alice@example.com", EXTERNAL_PEOPLE["alice"][1], "alice@example.com",
                  f"someone@{REMOTE_DOMAIN}", subject)
    assert sent.get("sent"), sent
    judged = verdict(ldapnet, subject)
    assert (judged["dkim"], judged["dkim_domain"], judged["dkim_selector"]) == ("pass", "example.com", "ceres"), judged
    assert judged["mail_from"] == "alice@example.com" and judged["dmarc_aligned"]
    refused = submit(ldapnet, "alice@example.com", EXTERNAL_PEOPLE["alice"][1], "bob@example.com",
                     f"someone@{REMOTE_DOMAIN}", "as bob")
    assert "Sender address rejected" in refused.get("exception", ""), refused


def test_external_mail_to_a_person_is_delivered_and_to_no_one_refused(ldapnet, external, directory):
    """With the operator's directory, mail to a person is delivered; mail to an address it does not know is refused."""
    external.use(directory.url())
    subject = f"to bob via the operator's directory {time.monotonic_ns()}"
    accepted = ldapnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", "bob@example.com",
                             "--subject", subject, host=ldapnet.remote)
    assert accepted.get("accepted"), accepted
    read = ldapnet.probe("imap", "--host", MAIL, "--port", "993", "--user", "bob@example.com", "--password-file",
                         secret_file(ldapnet, "imap", EXTERNAL_PEOPLE["bob"][1]), "--subject", subject, "--wait", "30")
    assert read.get("found"), read
    unknown = ldapnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", "nobody@example.com",
                            "--subject", "to no one", host=ldapnet.remote)
    assert not unknown.get("accepted") and "550" in json.dumps(unknown), unknown


def test_external_the_bind_password_is_in_no_world_readable_file(ldapnet, external, directory):
    """The external directory's bind password is only in Dovecot's (0600) and Postfix's (0640) LDAP files."""
    external.use(directory.url())
    found = ldapnet.mail.exec(["grep", "-rlF", "--devices=skip", "-e", BIND_TOKEN, "/etc", "/var", "/run", "/tmp",
                               "/root", "/home", "/usr/local", "/opt", "/srv"], timeout=300)
    holders = found.stdout.split()
    modes = {path: ldapnet.mail.exec(["stat", "-c", "%a %U:%G", path]).stdout.strip() for path in holders}
    assert modes == {"/etc/dovecot/ceres-ldap.conf.ext": "600 root:root",
                     "/etc/postfix/ceres-ldap-people.cf": "640 root:postfix"}, modes


def test_external_a_rerun_of_the_mail_stage_changes_nothing(ldapnet, external, directory):
    """With the operator's directory, a re-run of the mail stage changes no file and restarts no service."""
    external.use(directory.url())
    files, services = (*CONFIG_FILES, *DIRECTORY_FILES), SERVICES
    hashes, starts = ldapnet.file_hashes(files), ldapnet.service_starts(services)
    mail = next(c for c in ldapnet.deployment.commands if c.name.endswith("-install-mail"))
    again = ldapnet.ssh(mail.create, mail.stdin)
    assert again.returncode == 0, again.stderr
    assert [line for line in again.stdout.splitlines() if line.startswith(("updated ", "added ", "creating ", "removed "))] == []
    assert ldapnet.file_hashes(files) == hashes
    assert ldapnet.service_starts(services) == starts


def test_external_over_ldap_with_starttls_people_log_in_send_and_receive(ldapnet, external, directory):
    """Over ldap:// with StartTLS, people log in, send and receive, and every bind comes only after TLS is up."""
    ran = external.use(directory.url(tls="ldap"))
    assert [stage for stage, _ in ran] in (["mail"], ["packages", "mail"])
    refused = imap_login(ldapnet, "bob@example.com", EXTERNAL_PEOPLE["bob"][1] + "-not")
    assert "AUTHENTICATIONFAILED" in refused.get("exception", ""), refused
    assert "exception" not in imap_login(ldapnet, "bob@example.com", EXTERNAL_PEOPLE["bob"][1])
    subject = f"from bob over StartTLS {time.monotonic_ns()}"
    sent = submit(ldapnet, "bob@example.com", EXTERNAL_PEOPLE["bob"][1], "bob@example.com", f"someone@{REMOTE_DOMAIN}", subject)
    assert sent.get("sent"), sent
    assert verdict(ldapnet, subject)["dkim"] == "pass"
    accepted = ldapnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", "alice@example.com",
                             "--subject", f"to alice over StartTLS {time.monotonic_ns()}", host=ldapnet.remote)
    assert accepted.get("accepted"), accepted
    connections = tls_before_every_bind(directory, "corp", directory.port(tls="ldap"))
    assert connections and all(any(line.endswith("STARTTLS") for line in lines) for lines in connections.values()
                               if any(" BIND dn=" in line for line in lines)), connections


@pytest.mark.parametrize("instance, tls", [("untrusted", "ldaps"), ("untrusted", "ldap"), ("plain", "ldap")],
                         ids=["ldaps-certificate-from-another-ca", "starttls-certificate-from-another-ca",
                              "ldap-without-starttls"])
def test_external_a_directory_without_trusted_tls_is_never_sent_a_password(ldapnet, external, directory, instance, tls):
    """TLS is required and checked, not opportunistic: the people's logins and mail wait (a temporary
    failure), and the directory sees no bind at all (neither the service account's password nor a person's)."""
    ran = external.use(directory.url(instance, tls))
    assert [stage for stage, _ in ran] in (["mail"], ["packages", "mail"])
    port = directory.port(instance, tls)
    refused = imap_login(ldapnet, "alice@example.com", EXTERNAL_PEOPLE["alice"][1])
    assert "UNAVAILABLE" in refused.get("exception", ""), refused
    waiting = ldapnet.probe("send", "--host", MAIL, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", "alice@example.com",
                            "--subject", "to alice, directory unreachable", host=ldapnet.remote)
    code = waiting.get("code") or waiting.get("refused", {}).get("alice@example.com", [0])[0]
    assert not waiting.get("accepted") and 400 <= code < 500, waiting
    connections = {n: lines for n, lines in directory.connections(instance, MAIL).items()
                   if f"(IP={DIRECTORY_ADDRESS}:{port})" in lines[0]}
    assert connections, "the mail host did try the directory"
    assert not [line for lines in connections.values() for line in lines if " BIND " in line], connections
    if tls == "ldap":  # over ldap://, every connection asks for StartTLS first, and goes no further without it
        assert all(lines[1].endswith(f"op=0 EXT oid={STARTTLS_OID}") for lines in connections.values()), connections
