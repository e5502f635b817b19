"""One password everywhere (issue 16, README "One password everywhere (LDAP)"), through the graph's own `pulumi up`:
a directory added to the running stack, a real slapd on the mail host and the real Keycloak federating it.

The operator's scenario: a live stack (ldapMode off) gets `ldapMode: local`, with `ldapClientCidrs` the address
CERES's Keycloak egresses from (the SSO host of the test internet; not the operator's machine, not the rest of
the internet), and one `pulumi up`. That up installs slapd (the `ldap` stage, after the packages stage brought
it), gives the directory's people mailboxes (the mail stage), opens LDAPS to the SSO host only, and creates the
CERES realm's LDAP federation in the real Keycloak, which connects over LDAPS and checks the mail host's
certificate against the only CA it trusts (the test ACME CA that issued it). Then, as the people and an
attacker use it:

- a person the operator adds to the directory (ldapadd as root on the host) signs in to Keycloak (a token of
  the realm), reads mail over IMAPS and submits on 587 with the one directory password; the mail arrives at
  the other domain's MTA signed;
- a password reset in Keycloak (admin API, WRITABLE federation) goes to the directory through Password Modify,
  hashed as {ARGON2}: the old password is refused everywhere, the new one works everywhere;
- a wrong password is refused by Keycloak, IMAPS and submission;
- anonymous reads nothing, a person reads no one else, the service account reads no hash;
- LDAPS answers the SSO host only; nothing listens on 389;
- a second up changes nothing.

Where it runs: inside test_up.py's scenario, just before the destroy test (tests/e2e/conftest.py,
RUNS_BEFORE). Adding a directory to a stack that has lived (rotated DKIM key and password, replaced VM, an
interrupted up) is what an operator does; and no later test but the destroy has to know about a directory,
while the destroy then shows that the federation, which the stack owns, goes with it and the adopted realm
stays (asserted there). Earlier, every later reinstall (VM replacement, the interrupted up) would run the
ldap stage too and their stage lists would have to follow. Run alone (`-k test_ldap_up`), it switches the
stack the first up built.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pulumi.automation import ConfigValue

from components.builders.inputs import LdapInputs
from components.builders.install_script import SLAPD_LDAPI
from mailctl.verify.model import OK
from mailctl.zone import stack_settings
from tests.e2e.conftest import (ADDRESSES, CONFIG_FILES, DOMAIN, MAIL_HOST, PYTHON, REALM, SERVICES, STACK, host_state,
                                imap_login, mailctl_verify, password_file, stages_started_since, submit, tcp_open)
from tests.engine.harness import EngineRun
from tests.engine.standins.keycloak_federation import MASK
from tests.mailnet.scenario import LDAP_STAGE_ORDER

pytestmark = pytest.mark.slow

MAIL = ADDRESSES["mail"]
LDAP_PROBE = Path(__file__).resolve().parents[1] / "mailnet" / "ldap_probe.py"
SSO_EGRESS = f"{ADDRESSES['sso']}/32"  #: where CERES's Keycloak connects from: the only directory client
PASSWORD = "random:index/randomPassword:RandomPassword"
#: the stages the switch runs: packages (slapd and the LDAP modules join the list), ldap (new), mail (mailboxes)
SWITCH_STAGES = tuple(f"ceres-mail-server{s}" for s in LDAP_STAGE_ORDER
                      if s in ("-install-packages", "-install-ldap", "-install-mail"))
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


def leaked(secret_values: dict[str, str], *shown: str) -> list[str]:
    """The names of the secrets something in `shown` contains."""
    return sorted(name for name, value in secret_values.items() if any(value in text for text in shown))


@pytest.fixture(scope="module")
def directory(e2e, deployed) -> Directory:
    """`ldapMode: local` and `ldapClientCidrs: [the SSO host]` set on the running stack, then one up."""
    assert e2e.stack.get_all_config().get("ceres-mail:ldapMode", ConfigValue("off")).value == "off", \
        "the scenario's stack has no directory before this module"
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


# --- the switch ----------------------------------------------------------------------------------------------


def test_adding_the_directory_runs_the_ldap_stage_then_mail_and_federates_the_realm(e2e, directory):
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
    assert leaked(directory.secrets, json.dumps(federation), directory.run.output, state) == [], \
        "a secret is in Keycloak's answer, the up's output or the stored state"


def test_mailctl_verify_from_the_sso_network_shows_the_directory_green(e2e, directory):
    """Run where the directory is open (ldapClientCidrs): its certificate and an anonymous search, with the
    rest of verify."""
    verify = mailctl_verify(e2e, host=e2e.sso.host)
    assert verify.returncode == 0, verify.stdout[-6000:] + verify.stderr[-2000:]
    rows = {r["check"]: (r["status"], r["detail"]) for r in json.loads(verify.stdout)["results"]
            if r["check"].startswith("ldap ")}
    assert {check: status for check, (status, _) in rows.items()} == {
        f"ldap {MAIL_HOST}:636 ldaps": OK, f"ldap {MAIL_HOST}:636 anonymous": OK}, rows
    assert leaked(directory.secrets, verify.stdout, verify.stderr) == []


# --- one password ----------------------------------------------------------------------------------------------


def test_a_directory_person_signs_in_to_keycloak_and_imaps_and_submits_with_one_password(e2e, directory, people,
                                                                                          login_client):
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
    answers = sign_ins(e2e, "erin", people["erin"] + "-not", "erin, a wrong password")
    assert refused_as_wrong(answers) == {"keycloak": True, "imaps": True, "submission": True}, answers


# --- who reads what, and from where ----------------------------------------------------------------------------


def test_anonymous_reads_nothing_and_no_one_reads_another_persons_password(e2e, directory, people):
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
    assert tcp_open(e2e.sso.host, 636), "LDAPS from where Keycloak connects"
    assert not tcp_open(e2e.remote, 636), "no LDAPS from the internet"
    assert not tcp_open(e2e.client, 636), "nor from the operator's machine: it is not in ldapClientCidrs"
    host = e2e.cloud.vm_host()
    assert host.exec(["ss", "-Hltn", "sport = :389"]).stdout.strip() == "", "no plain LDAP listener at all"
    assert host.exec(["ss", "-Hltn", "sport = :636"]).stdout.strip() != ""


# --- at rest ---------------------------------------------------------------------------------------------------


def test_a_second_up_changes_nothing(e2e, directory):
    files, services = CONFIG_FILES + LDAP_FILES, SERVICES + ("slapd",)
    before, federation_before = host_state(e2e, files, services), federation_config(e2e)
    started = time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-4000:]
    assert run.changed() == {}
    assert stages_started_since(e2e, started) == [], "no install stage ran"
    assert host_state(e2e, files, services) == before
    assert federation_config(e2e) == federation_before
    assert leaked(directory.secrets, run.output) == []
