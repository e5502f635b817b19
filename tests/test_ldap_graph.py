"""One password everywhere: what `ldapMode` adds to the graph, offline (the recorded plan of the program)."""

from __future__ import annotations

from mailctl.recorder import record
from policy.rules import FIREWALL_RULES, USER_FEDERATION
from tests.conftest import one, stack_config
from tests.placeholders import SECURE

PASSWORD = "random:index/randomPassword:RandomPassword"
COMMAND = "command:remote:Command"
REALM = "keycloak:index/realm:Realm"
CLIENTS = ["10.42.0.0/16", "fd00:42::/56"]
EXTERNAL = {"ldapMode": "external", "ldapUrl": "ldap://ldap.corp.example.net", "ldapBaseDn": "dc=corp,dc=example,dc=net",
            "ldapUsersDn": "ou=staff,dc=corp,dc=example,dc=net", "ldapBindDn": "cn=mail,ou=services,dc=corp,dc=example,dc=net",
            "ldapBindPassword": SECURE}


def plan_of(scratch_project, **changes):
    config = stack_config("prod")
    config.update({f"ceres-mail:{key}": value for key, value in changes.items()})
    return record(scratch_project("prod", config), "prod")


def directory_rules(plan) -> list[tuple[str, str]]:
    rules = one(plan, FIREWALL_RULES).inputs["rules"]
    return [(rule["dport"], rule.get("source", "")) for rule in rules if rule.get("dport") in ("389", "636")]


def test_off_adds_nothing(prod_plan):
    """With ldapMode off there is no federation, no directory password and no LDAP port open."""
    assert not prod_plan.of_type(USER_FEDERATION)
    assert not [r for r in prod_plan.of_type(PASSWORD) if "-ldap-" in r.name]
    assert directory_rules(prod_plan) == []


def test_local_makes_its_passwords_opens_ldaps_to_the_clients_only_and_federates_after_the_install(scratch_project):
    """ldapMode local: two protected passwords, LDAPS open to the client networks only, federation after the install."""
    plan = plan_of(scratch_project, ldapMode="local", ldapClientCidrs=CLIENTS)
    passwords = {r.name: r for r in plan.of_type(PASSWORD) if "-ldap-" in r.name}
    assert sorted(passwords) == ["ceres-mail-ldap-admin-password", "ceres-mail-ldap-bind-password"]
    assert all(r.options["protect"] for r in passwords.values()), "protected in prod, like the mailbox password"
    assert directory_rules(plan) == [("636", "10.42.0.0/16"), ("636", "fd00:42::/56")], "LDAPS to the clients, no 389"

    federation = one(plan, USER_FEDERATION)
    assert {k: federation.inputs[k] for k in ("connectionUrl", "startTls", "usersDn", "bindDn", "bindCredential",
                                               "editMode", "usePasswordModifyExtendedOp")} == {
        "connectionUrl": "ldaps://mail.example.com", "startTls": False, "usersDn": "ou=people,dc=example,dc=com",
        "bindDn": "cn=ceres-mail,dc=example,dc=com", "bindCredential": "[secret]", "editMode": "WRITABLE",
        "usePasswordModifyExtendedOp": True}
    assert federation.options["protect"] and not federation.options["retainOnDelete"], "the stack's own, unlike the realm"
    last_stage = [c for c in plan.of_type(COMMAND) if not c.name.endswith(("-install-webmail", "-install-fail2ban",
                                                                            "-install-backup"))][-1]
    assert one(plan, REALM).urn in federation.dependencies
    assert one(plan, COMMAND, "-install-mail").urn in federation.dependencies, "slapd answers once the install ran"
    assert passwords["ceres-mail-ldap-bind-password"].urn in federation.dependencies
    assert last_stage.name.endswith("-install-mail")
    assert [v for v in plan.policy if v["level"] == "mandatory"] == []


def test_external_binds_with_the_operators_secret_over_starttls_and_opens_nothing(scratch_project):
    """ldapMode external binds with the operator's secret over StartTLS; it makes no password and opens no port."""
    plan = plan_of(scratch_project, **EXTERNAL, keycloakLdapEditMode="READ_ONLY")
    assert not [r for r in plan.of_type(PASSWORD) if "-ldap-" in r.name], "the operator's password, none made"
    assert directory_rules(plan) == []
    federation = one(plan, USER_FEDERATION)
    assert (federation.inputs["connectionUrl"], federation.inputs["startTls"], federation.inputs["editMode"]) == (
        "ldap://ldap.corp.example.net", True, "READ_ONLY")
    assert federation.inputs["usersDn"] == "ou=staff,dc=corp,dc=example,dc=net"
    assert federation.inputs["bindCredential"] == "[secret]"
    assert not [d for d in federation.dependencies if "-install-" in d], "an external directory is there already"
    assert [v for v in plan.policy if v["level"] == "mandatory"] == []


def test_the_plan_text_shows_the_federation_and_never_its_credential(scratch_project):
    """The text plan shows the federation's URL and its firewall rule, and the bind credential only as [secret]."""
    from mailctl.render import render_text

    text = render_text(plan_of(scratch_project, ldapMode="local", ldapClientCidrs=CLIENTS))
    assert "connectionUrl: ldaps://mail.example.com" in text and "bindCredential: [secret]" in text
    assert "LDAPS from directory client network 10.42.0.0/16 only" in text
