"""ldapMode local on a real Debian host: slapd installed by the stack's own stages, and one password for
mail and Keycloak (README, "One password everywhere").

One test internet of the module's own (tests/mailnet: DNS, pebble, the remote MTA of example.net, a client)
and one mail host, first-booted from the snippets of the stack recorded with `ldapMode: local` and
installed over SSH with the graph's own commands, `ldap` stage included. The directory is then used as its
users would: an operator adds people as the root DN, they read and send mail with their directory password,
Keycloak's federation (the service account) changes a password with the Password Modify extended operation,
and attackers (anonymous, another person) read nothing.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

from tests.mailnet.fixtures import install_or_fail, open_mailnet
from tests.mailnet.scenario import ADDRESSES, LDAP_STAGE_ORDER, PREFIX, REMOTE_DOMAIN
from tests.test_native_stack import CONFIG_FILES, SERVICES
from tests.testnet import linux

pytestmark = pytest.mark.slow

LDAP_PROBE = Path(__file__).resolve().parent / "mailnet" / "ldap_probe.py"
MAIL = ADDRESSES["mail"]
BASE = "dc=example,dc=com"
PEOPLE = f"ou=people,{BASE}"
ADMIN = f"cn=admin,{BASE}"
SERVICE_ACCOUNT = f"cn=ceres-mail,{BASE}"
#: the stack as prod's, with a directory on the mail host; LDAPS open to the test's client network
LDAP_CONFIG = {"ceres-mail:ldapMode": "local",
               "ceres-mail:ldapClientCidrs": [f"{ADDRESSES['client'].rsplit('.', 1)[0]}.0/{PREFIX}"]}
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


@pytest.fixture(scope="module")
def ldapnet(tmp_path_factory, shared_apt_proxy):
    with open_mailnet(tmp_path_factory.mktemp("ldapnet"), shared_apt_proxy, LDAP_CONFIG) as net:
        yield net


@pytest.fixture(scope="module")
def installed(ldapnet):
    return install_or_fail(ldapnet)


def stdin_secrets(net, suffix: str) -> dict[str, str]:
    """What the graph gives the stage `*<suffix>` on its standard input, decoded."""
    command = next(c for c in net.deployment.commands if c.name.endswith(suffix))
    return {name: base64.b64decode(value).decode() for name, value in (l.split("=", 1) for l in command.stdin.splitlines())}


def secret_file(net, name: str, value: str) -> str:
    """A 0600 file holding `value`, for a probe's --password-file."""
    path = net.workdir / f"secret-{name}"
    path.write_text(value)
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def passwords(ldapnet, installed) -> dict[str, str]:
    """Every password of the test: the stack's (from the stages' stdin) and each person's first one."""
    ldap, mail = stdin_secrets(ldapnet, "-install-ldap"), stdin_secrets(ldapnet, "-install-mail")
    return {"admin": ldap["LDAP_ADMIN_PASSWORD"], "service": ldap["LDAP_BIND_PASSWORD"],
            "no-reply": mail["MAILBOX_PASSWORD"], **{uid: f"{uid}-first-Pa55" for uid in PERSONS}}


@pytest.fixture(scope="module")
def ca_file(ldapnet, installed) -> str:
    """pebble's root, which the mail host's certificate chains to."""
    fetched = ldapnet.probe("fetch", "--host", ADDRESSES["acme"], "--cafile", str(ldapnet.pebble_listener_ca),
                            "--path", f"https://{ADDRESSES['acme']}:15000/roots/0")
    path = ldapnet.workdir / "pebble-root.pem"
    path.write_text(fetched["body"])
    return str(path)


def ldap_probe(net, ca_file: str, name: str, *args: str, as_dn: str = "", password: str = "") -> dict:
    """An ldap_probe.py run from the client namespace over LDAPS (bound as `as_dn`, or not at all)."""
    auth = ("--dn", as_dn, "--password-file", secret_file(net, "bind", password)) if as_dn else ()
    result = net.client.run([sys.executable, str(LDAP_PROBE), name, "--host", MAIL, "--cafile", ca_file, *auth, *args],
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def person_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


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


def submit(net, user: str, password: str, sender: str, to: str, subject: str) -> dict:
    return net.probe("submit", "--host", MAIL, "--port", "587", "--user", user, "--password-file",
                     secret_file(net, "submit", password), "--sender", sender, "--to", to, "--subject", subject)


def verdict(net, subject: str, timeout: float = 60) -> dict:
    """What the remote MTA decided about the message with `subject`, once it arrived."""
    linux.wait_until(lambda: any(v["subject"] == subject for v in net.verdicts()), timeout, f"mail {subject!r}", every=1)
    return next(v for v in net.verdicts() if v["subject"] == subject)


def stored_password(net, ca_file: str, passwords: dict, uid: str) -> str:
    """userPassword of a person, as the root DN reads it."""
    found = ldap_probe(net, ca_file, "search", "--base", person_dn(uid), "--scope", "base", "--attributes", "userPassword",
                       as_dn=ADMIN, password=passwords["admin"])
    return found["entries"][0]["attributes"]["userPassword"][0]


# --- the install --------------------------------------------------------------------------------------


def test_the_ldap_stage_runs_between_tls_and_mail_and_says_the_directory_is_ready(ldapnet, installed):
    names = [c.name for c in ldapnet.deployment.commands]
    assert [next(s for s in LDAP_STAGE_ORDER if n.endswith(s)) for n in names] == list(LDAP_STAGE_ORDER)
    ldap = installed[LDAP_STAGE_ORDER.index("-install-ldap")]
    assert f"ceres-mail: directory {BASE} ready (people under {PEOPLE})" in ldap.stdout
    assert "ceres-mail: mail.example.com ready for example.com" in installed[-1].stdout


def test_no_secret_in_the_output_and_the_files_that_hold_them_are_closed(ldapnet, installed, passwords):
    output = "".join(r.stdout + r.stderr for r in installed)
    for name in ("admin", "service", "no-reply"):
        assert passwords[name] not in output, name
    modes = {path: ldapnet.mail.exec(["stat", "-c", "%a %U:%G", path]).stdout.strip() for path in (
        "/etc/dovecot/ceres-ldap.conf.ext", "/etc/postfix/ceres-ldap-people.cf", "/etc/ldap/tls/privkey.pem")}
    assert modes == {"/etc/dovecot/ceres-ldap.conf.ext": "600 root:root",
                     "/etc/postfix/ceres-ldap-people.cf": "640 root:postfix",
                     "/etc/ldap/tls/privkey.pem": "640 root:openldap"}


def test_slapd_serves_ldaps_with_tls_1_2_or_better_and_no_plain_ldap(ldapnet, installed, ca_file):
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
    assert "exception" not in imap_login(ldapnet, "alice@example.com", passwords["alice"])
    refused = imap_login(ldapnet, "alice@example.com", passwords["alice"] + "-not")
    assert "AUTHENTICATIONFAILED" in refused.get("exception", ""), refused


def test_a_person_of_a_domain_the_stack_does_not_serve_has_no_mailbox(ldapnet, people, passwords):
    refused = imap_login(ldapnet, "carol@example.org", passwords["carol"])
    assert "AUTHENTICATIONFAILED" in refused.get("exception", ""), refused


def test_a_person_submits_on_587_and_the_mail_arrives_signed(ldapnet, people, passwords):
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
    unbound = ldap_probe(ldapnet, ca_file, "search", "--base", BASE)
    assert unbound["entries"] == [] and not unbound["ok"], unbound
    anonymous = ldap_probe(ldapnet, ca_file, "bind")
    assert not anonymous["ok"] and "anonymous bind disallowed" in anonymous["message"], anonymous


def test_a_person_reads_their_own_entry_but_no_one_else_and_no_password_hash(ldapnet, ca_file, people, passwords):
    as_alice = {"as_dn": person_dn("alice"), "password": passwords["alice"]}
    own = ldap_probe(ldapnet, ca_file, "search", "--base", person_dn("alice"), "--scope", "base",
                     "--attributes", "mail,userPassword", **as_alice)
    assert [e["attributes"] for e in own["entries"]] == [{"mail": ["alice@example.com"]}], own
    for base, scope in ((person_dn("bob"), "base"), (PEOPLE, "subtree")):
        others = ldap_probe(ldapnet, ca_file, "search", "--base", base, "--scope", scope, "--attributes", "mail,userPassword",
                            **as_alice)
        assert others["entries"] == [], others


def test_the_service_account_finds_people_but_never_a_password_hash(ldapnet, ca_file, people, passwords):
    found = ldap_probe(ldapnet, ca_file, "search", "--base", PEOPLE, "--filter", "(objectClass=inetOrgPerson)",
                       "--attributes", "uid,mail,userPassword", as_dn=SERVICE_ACCOUNT, password=passwords["service"])
    assert sorted(e["attributes"]["mail"][0] for e in found["entries"]) == sorted(PERSONS.values())
    assert all("userPassword" not in e["attributes"] for e in found["entries"])
    config = ldap_probe(ldapnet, ca_file, "search", "--base", "cn=config", as_dn=SERVICE_ACCOUNT, password=passwords["service"])
    assert config["entries"] == []


# --- a re-run, and a renewal ------------------------------------------------------------------------------


def test_a_rerun_changes_no_file_and_restarts_no_service(ldapnet, people):
    files, services = (*CONFIG_FILES, *LDAP_FILES), (*SERVICES, "slapd")
    hashes, starts = ldapnet.file_hashes(files), ldapnet.service_starts(services)
    assert all("ActiveState=active" in state for state in starts.values()), starts
    again = ldapnet.install()
    assert [r.returncode for r in again] == [0] * len(LDAP_STAGE_ORDER), again[-1].stderr
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
