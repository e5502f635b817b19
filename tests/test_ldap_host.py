"""ldapMode local, then external, on a real Debian host: slapd installed by the stack's own stages, and one
password for mail and Keycloak (README, "One password everywhere"); then the operator's own directory over
the network.

One test internet of the module's own (tests/mailnet: DNS, pebble, the remote MTA of example.net, a client)
and one mail host, first-booted from the snippets of the stack recorded with `ldapMode: local` and
installed over SSH with the graph's own commands, `ldap` stage included. The directory is then used as its
users would: an operator adds people as the root DN, they read and send mail with their directory password,
Keycloak's federation (the service account) changes a password with the Password Modify extended operation,
and attackers (anonymous, another person) read nothing.

Then the same host is switched to `ldapMode: external`, as `pulumi up` would after the stack file changed:
the stack re-recorded with the operator's directory ldap.example.com (tests/mailnet/directory.py: slapd in a
namespace of the test internet, set up by the test, its certificate from the operator's own CA, which the
operator first adds to the host's CA store) and the commands whose script or input changed run over SSH. Its
people log in, send and receive with the directory's passwords, over ldaps:// and over ldap:// with StartTLS;
a directory whose certificate the host does not trust, or one that offers no StartTLS, never gets a bind.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from components.builders.dns_records import Record
from tests.mailnet.acme import directory_url
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
from tests.mailnet.scenario import ADDRESSES, LDAP_STAGE_ORDER, PREFIX, REMOTE_DOMAIN, STAGE_ORDER, deploy

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


#: the operator's directory (ldapMode external, below): its address, and its name in the operator's DNS
DIRECTORY_ADDRESS = "203.0.113.38"
DIRECTORY_RECORD = Record("example.com", "ldap.example.com", "A", DIRECTORY_ADDRESS, 300,
                          "test: the operator's directory, outside the stack")


@pytest.fixture(scope="module")
def ldapnet(tmp_path_factory, shared_apt_proxy):
    with open_mailnet(tmp_path_factory.mktemp("ldapnet"), shared_apt_proxy, LDAP_CONFIG,
                      extra_records=(DIRECTORY_RECORD,)) as net:
        yield net


@pytest.fixture(scope="module")
def installed(ldapnet):
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


# --- the install --------------------------------------------------------------------------------------


def test_the_ldap_stage_runs_between_tls_and_mail_and_says_the_directory_is_ready(ldapnet, installed):
    names = [c.name for c in ldapnet.deployment.commands]
    assert [next(s for s in LDAP_STAGE_ORDER if n.endswith(s)) for n in names] == list(LDAP_STAGE_ORDER)
    ldap = installed[LDAP_STAGE_ORDER.index("-install-ldap")]
    assert f"ceres-mail: directory {BASE} ready (people under {PEOPLE})" in ldap.stdout
    assert "ceres-mail: mail.example.com ready for example.com" in installed[LDAP_STAGE_ORDER.index("-install-mail")].stdout


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


# --- ldapMode external: the operator's directory, over the network -----------------------------------------

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
    applies it: the program re-recorded with the new stack file (the generated mailbox password the state
    keeps pinned, and the webmail's des_key), and each remote command whose script or standard input changed run again, in the graph's
    order (pulumi-command runs an updated Command's create again; a Command no longer declared, the local
    directory's `ldap` stage, has no delete step and leaves the host as it is)."""

    def __init__(self, net):
        self.net, self.url, self.switches = net, None, 0
        self.kept = net.kept_secrets()  #: the mailbox password and the webmail's des_key, as the state keeps them
        self.first: list[tuple[str, object]] = []  #: what the first switch (from the local directory) ran

    def use(self, url: str) -> list[tuple[str, object]]:
        """Switch to `url` (nothing if the host is there already); the (stage, CompletedProcess) run."""
        if url == self.url:
            return []
        self.switches += 1
        deployment = deploy(self.net.workdir / f"stack-external-{self.switches}", directory_url(ADDRESSES["acme"]),
                            self.net.pebble_listener_ca.read_text(), extra=external_config(url),
                            extra_records=(DIRECTORY_RECORD,),
                            mock_overrides=self.kept)
        ran = self.net.apply(deployment)
        for stage, result in ran:
            assert result.returncode == 0, f"{stage}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        self.url = url
        return ran


@pytest.fixture(scope="module")
def external(ldapnet, installed, passwords, directory):
    """The operator trusts the directory's CA on the mail host first (the stack has no setting for it:
    acmeCaBundle is certbot's alone; README, "An external directory"), then switches the stack to it, ldaps://."""
    ldapnet.mail.path("/usr/local/share/ca-certificates/example-corp-directory.crt").write_text(directory.ca_pem)
    updated = ldapnet.mail.exec(["update-ca-certificates"])
    assert updated.returncode == 0 and "1 added" in updated.stdout, updated.stdout + updated.stderr
    stack = ExternalStack(ldapnet)
    stack.first = stack.use(directory.url())
    return stack


def tls_before_every_bind(directory: Directory, instance: str, port: int) -> dict[int, list[str]]:
    """The mail host's connections to `instance` on `port`, each checked: TLS established before any bind,
    and a bind only as the service account or a person."""
    connections = {n: lines for n, lines in directory.connections(instance, MAIL).items()
                   if f"(IP={DIRECTORY_ADDRESS}:{port})" in lines[0]}
    for number, lines in connections.items():
        binds = [i for i, line in enumerate(lines) if " BIND dn=" in line]
        tls = [i for i, line in enumerate(lines) if "TLS established" in line]
        assert not binds or (tls and tls[0] < binds[0]), (number, lines)
        assert all(f'dn="{EXTERNAL_ACCOUNT}"' in lines[i] or f',{PEOPLE}"' in lines[i] for i in binds), (number, lines)
    return connections


def test_the_switch_to_an_external_directory_runs_only_the_packages_and_mail_stages(ldapnet, external):
    assert [stage for stage, _ in external.first] == ["packages", "mail"]
    assert [next(s for s in STAGE_ORDER if c.name.endswith(s)) for c in ldapnet.deployment.commands] == list(STAGE_ORDER)
    mail = external.first[-1][1]
    assert "== directory mailboxes: the people under ou=people,dc=example,dc=com" in mail.stdout
    assert "ceres-mail: mail.example.com ready for example.com" in mail.stdout
    output = "".join(result.stdout + result.stderr for _, result in external.first)
    assert BIND_TOKEN not in output


def test_external_a_person_logs_in_with_the_directory_password_and_no_other(ldapnet, passwords, external, directory):
    """(The failures first: Dovecot delays each further login from an address after a failed one, more with each,
    until one succeeds; tests/test_ldap_host.py's clients all come from one address.)"""
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
    external.use(directory.url())
    found = ldapnet.mail.exec(["grep", "-rlF", "--devices=skip", "-e", BIND_TOKEN, "/etc", "/var", "/run", "/tmp",
                               "/root", "/home", "/usr/local", "/opt", "/srv"], timeout=300)
    holders = found.stdout.split()
    modes = {path: ldapnet.mail.exec(["stat", "-c", "%a %U:%G", path]).stdout.strip() for path in holders}
    assert modes == {"/etc/dovecot/ceres-ldap.conf.ext": "600 root:root",
                     "/etc/postfix/ceres-ldap-people.cf": "640 root:postfix"}, modes


def test_external_a_rerun_of_the_mail_stage_changes_nothing(ldapnet, external, directory):
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
