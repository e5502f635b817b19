"""Policy: each rule passes the committed stacks and fails a crafted bad plan with its own message, in
the plan and through the CrossGuard adapter alike."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from components.builders.dns_records import DKIM_PUBLISHED_WHY, TLSA_PUBLISHED_WHY
from mailctl.plan import Plan
from policy.pack import policies
from policy.rules import (
    COMMAND,
    DNS_RECORD,
    FIREWALL_RULES,
    PRIVATE_KEY,
    REALM,
    RULES,
    USER_FEDERATION,
    VM,
    ZONE_DNSSEC,
    evaluate,
)


def mandatory(plan: Plan) -> list[dict]:
    return [v for v in plan.policy if v["level"] == "mandatory"]


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_committed_stacks_pass_every_mandatory_rule(plans, stack):
    """The committed prod and staging stacks break no mandatory rule."""
    assert mandatory(plans[stack]) == []


def test_advisories_say_what_the_observation_start_leaves_open(plans):
    """The committed stacks get only the advisories expected: prod's DMARC still at p=none, staging's missing AAAA."""
    assert [v["policy"] for v in plans["prod"].policy] == ["dmarc-moves-past-none"]
    assert [v["policy"] for v in plans["staging"].policy] == ["ipv6-published"], "staging has no IPv6"


def first(plan: Plan, type_: str, **match):
    return next(r for r in plan.resources if r.type == type_ and all(r.inputs.get(k) == v for k, v in match.items()))


def with_inputs(resource, **inputs):
    return replace(resource, inputs={**resource.inputs, **inputs})


def broken(plan: Plan) -> dict[str, list]:
    """rule name -> the prod plan's resources with one changed the way that rule forbids."""
    spf = first(plan, DNS_RECORD, type="TXT", name="example.com")
    dmarc = first(plan, DNS_RECORD, type="TXT", name="_dmarc.example.com")
    a = first(plan, DNS_RECORD, type="A")
    realm, vm = first(plan, REALM), first(plan, VM)
    dkim = next(r for r in plan.of_type(PRIVATE_KEY) if r.name.endswith("-dkim-key-ceres"))
    command = next(r for r in plan.of_type(COMMAND) if r.name.endswith("-install-mail"))
    firewall = first(plan, FIREWALL_RULES)
    smtp_elsewhere = {**realm.inputs["smtpServer"], "host": "smtp.example.org"}
    mx = [r for r in plan.of_type(DNS_RECORD) if r.inputs["type"] == "MX"]
    dkim_txt = first(plan, DNS_RECORD, type="TXT", name="ceres._domainkey.example.com")
    cases = {
        "dns-record-not-proxied": [with_inputs(a, proxied=True)],
        "spf-strict-and-resolvable": [with_inputs(spf, content='"v=spf1 mx +all"')],
        "dkim-key-strong": [with_inputs(dkim, rsaBits=1024)],
        "dkim-published-says-why": [with_inputs(dkim_txt, name="ceres2026._domainkey.example.com", comment=DKIM_PUBLISHED_WHY)],
        "dkim-key-not-too-old": [dkim, stack_resource(plan)],  # made long ago: see made_long_ago
        "protected-where-it-matters": [replace(realm, options={**realm.options, "protect": False})],
        "secret-inputs-are-secret": [with_inputs(first(plan, "pulumi:providers:cloudflare"), apiToken="plain-token")],
        "ssh-pins-host-key": [with_inputs(command, connection={"host": "203.0.113.25", "user": "ceres"})],
        "ssh-not-open-to-the-world": [with_inputs(firewall, rules=[{"action": "ACCEPT", "type": "in", "proto": "tcp", "dport": "22"}])],
        "directory-not-open-to-the-world": [with_inputs(firewall, rules=[{"action": "ACCEPT", "type": "in", "proto": "tcp", "dport": "636",
                                                                           "source": "0.0.0.0/0"}])],
        "directory-over-tls": [replace(realm, type=USER_FEDERATION, inputs={"connectionUrl": "ldap://ldap.example.com", "startTls": False})],
        "ceres-secret-consistent": [a, with_inputs(realm, smtpServer=smtp_elsewhere)],
        "dmarc-for-every-mail-domain": [*mx],
        "dmarc-moves-past-none": [dmarc],
        "dns-record-says-why": [with_inputs(a, comment="")],
        "mail-vm-starts-on-boot": [with_inputs(vm, onBoot=False)],
        "transport-security-published": [*mx],
        "ipv6-published": [a],
        "backups-configured": [vm],  # the VM of a protected stack, and no backup stage
        # a TLSA (DANE on) in a protected stack whose MTA-STS policy only tests
        "tls-published-says-why": [replace(with_inputs(a, type="TLSA", name="_25._tcp.mail.example.com",
                                                      comment=TLSA_PUBLISHED_WHY.format(service="smtp (25)")),
                                          urn=a.urn.rsplit("::", 1)[0] + "::ceres-mail-dns-tlsa-_25._tcp.mail.example.com-tls2")],
        "mta-sts-enforced-with-dane": [with_inputs(a, type="TLSA", name="_25._tcp.mail.example.com"),
                                       stack_resource(plan)],
    }
    return cases


NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.timezone.utc)


def stack_resource(plan: Plan):
    """The root Stack resource as CrossGuard shows it: its props are the stack's outputs."""
    realm = first(plan, REALM)
    return replace(realm, type="pulumi:pulumi:Stack", urn=plan.stack_urn, inputs=plan.outputs,
                   options={"protect": False, "ignoreChanges": []})


def made_long_ago(plan: Plan, days: float = 400) -> dict[str, datetime.datetime]:
    """Creation times as a state export gives them: the signing DKIM key made `days` ago."""
    key = next(r for r in plan.of_type(PRIVATE_KEY) if r.name.endswith("-dkim-key-ceres"))
    return {key.urn: NOW - datetime.timedelta(days=days)}


def test_the_realm_may_be_unprotected_in_staging_but_never_deletable(plans):
    """staging leaves its realm unprotected so the stack can be destroyed; the realm stays (retainOnDelete)."""
    realm = first(plans["staging"], REALM)
    judged = lambda resource: [v["message"] for v in evaluate([resource]) if v["policy"] == "protected-where-it-matters"]  # noqa: E731
    assert judged(realm) == []
    [message] = judged(replace(realm, options={**realm.options, "retainOnDelete": False}))
    assert "retain_on_delete=True" in message


def test_every_rule_has_a_crafted_violation(prod_plan):
    """Every policy rule has a crafted bad plan here, so no rule goes untested."""
    assert set(broken(prod_plan)) == {rule.name for rule in RULES}


@pytest.mark.parametrize("name", [rule.name for rule in RULES])
def test_rule_reports_its_crafted_violation(prod_plan, name):
    """Each rule catches its crafted violation, with a message long enough to act on."""
    violations = [v for v in evaluate(broken(prod_plan)[name], created=made_long_ago(prod_plan), now=NOW)
                  if v["policy"] == name]
    assert violations, f"{name} found nothing"
    assert all(len(v["message"]) > 30 for v in violations)


def record_with(project_dir, **tampered):
    """The prod plan of a program that bypasses settings validation with `tampered` values, as a bug in
    the program would: the policy is the net under the settings' own checks."""
    import pulumi

    from components import settings as stack_settings
    from components.builders.ceres_env import STACK_OUTPUT
    from components.platform import MailPlatform
    from mailctl.recorder import record

    def program(stack_keys):
        settings = stack_settings.load(stack_keys=stack_keys).model_copy(update=tampered)
        pulumi.export(STACK_OUTPUT, MailPlatform("ceres-mail", settings).ceres_env)

    return record(project_dir, "prod", program=program)


def consistency(plan: Plan) -> list[str]:
    return [v["message"] for v in plan.policy if v["policy"] == "ceres-secret-consistent"]


def test_ceres_consistency_is_judged_on_what_the_program_records(project_dir):
    """CERES's Secret is one secret offline; the rule reads CERES from the stack output and Keycloak from
    its realm, both as the program recorded them: a port the host does not serve is caught in each."""
    assert consistency(record_with(project_dir)) == []
    messages = consistency(record_with(project_dir, smtp_port=2525))
    assert sorted(messages) == [
        "CERES (stack output ceresSmtp): port 2525 with STARTTLS: RFC 6409 STARTTLS submission is port 587",
        "Keycloak realm ceres: port 2525 with STARTTLS: RFC 6409 STARTTLS submission is port 587",
    ]


def test_ceres_and_keycloak_submitting_differently_is_a_violation(prod_plan):
    """CERES and Keycloak submitting differently (465 with implicit TLS, 587 with STARTTLS) is refused, both named."""
    realm = first(prod_plan, REALM)
    implicit = with_inputs(realm, smtpServer={**realm.inputs["smtpServer"], "port": 465, "starttls": False, "ssl": True})
    stack = replace(realm, type="pulumi:pulumi:Stack", urn=prod_plan.stack_urn, inputs=prod_plan.outputs)
    [violation] = [v for v in evaluate([first(prod_plan, DNS_RECORD, type="A"), implicit, stack])
                   if v["policy"] == "ceres-secret-consistent"]
    assert "CERES and Keycloak submit differently" in violation["message"]
    assert "465" in violation["message"] and "587" in violation["message"]


def test_more_than_ten_spf_lookups_is_mandatory(prod_plan):
    """An SPF record needing more than 10 DNS lookups is a mandatory violation, with its count (RFC 7208 4.6.4)."""
    spf = first(prod_plan, DNS_RECORD, type="TXT", name="example.com")
    content = '"v=spf1 mx ' + " ".join(f"include:s{i}.example.net" for i in range(10)) + ' -all"'
    [violation] = evaluate([with_inputs(spf, content=content)])
    assert "11 DNS lookups" in violation["message"]


def test_staging_vm_need_not_be_protected(plans):
    """Staging's unprotected VM breaks no rule, so staging can be torn down."""
    vm = first(plans["staging"], VM)
    assert vm.options["protect"] is False and not evaluate([vm])


def test_zone_dnssec_is_protected_in_a_protected_stack(scratch_project):
    """A protected stack's zone DNSSEC cannot be deleted by accident: unprotected, the policy refuses it, naming its zone."""
    from mailctl.recorder import record
    from tests.conftest import stack_config

    plans = {stack: record(scratch_project(stack, stack_config(stack, {"ceres-mail:dnssec": True})), stack)
             for stack in ("prod", "staging")}
    [signed] = plans["prod"].of_type(ZONE_DNSSEC)
    assert signed.options["protect"] is True and mandatory(plans["prod"]) == []
    [violation] = evaluate([replace(signed, options={**signed.options, "protect": False})])
    assert violation["policy"] == "protected-where-it-matters" and violation["level"] == "mandatory"
    assert "zone 023e105f4ecef8ad9ca31a8372d0c353 in protected stack prod is not protected" in violation["message"]
    assert "docs/dns.md" in violation["message"]
    [unprotected] = plans["staging"].of_type(ZONE_DNSSEC)
    assert unprotected.options["protect"] is False and evaluate([unprotected]) == []


def test_opaque_values_are_not_violations(prod_plan):
    """A value not known yet (DKIM content) or secret is judged by the engine later, not guessed at."""
    spf = first(prod_plan, DNS_RECORD, type="TXT", name="example.com")
    assert evaluate([with_inputs(spf, content="(known after apply)")]) == []
    command = next(r for r in prod_plan.of_type(COMMAND) if r.name.endswith("-install-mail"))
    assert command.inputs["connection"] == "[secret]" and evaluate([command]) == []


def test_a_host_key_not_known_yet_is_pinned_and_a_missing_one_is_not(prod_plan):
    """In a preview the generated host key is not known yet: that is not a missing key."""
    command = next(r for r in prod_plan.of_type(COMMAND) if r.name.endswith("-install-mail"))
    pending = {"host": "203.0.113.25", "user": "ceres", "hostKey": "(known after apply)"}
    assert evaluate([with_inputs(command, connection=pending)]) == []
    [violation] = evaluate([with_inputs(command, connection={**pending, "hostKey": ""})])
    assert violation["policy"] == "ssh-pins-host-key"


def test_crossguard_numbers_reach_the_rules_as_integers():
    """The engine's numbers are doubles on the wire; rules compare sizes as integers, as offline."""
    from policy.pack import plan_values

    assert plan_values({"rsaBits": 1024.0, "ttl": 300.5}) == {"rsaBits": 1024, "ttl": 300.5}
    assert type(plan_values({"rsaBits": 1024.0})["rsaBits"]) is int


def options_of(resource) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=resource.options["protect"],
        ignore_changes=resource.options["ignoreChanges"],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )


@pytest.mark.parametrize("name", [rule.name for rule in RULES])
def test_crossguard_adapter_reports_the_same(prod_plan, name):
    """Through the CrossGuard pack each rule reports what `mailctl plan` does; rules needing resource ages stay out."""
    resources = broken(prod_plan)[name]
    reported: list[str] = []
    rule = next(r for r in RULES if r.name == name)
    if rule.needs_state:
        assert name not in {p.name for p in policies()}, "CrossGuard shows no resource its age: not in the pack"
        return
    policy = {p.name: p for p in policies()}[name]
    if rule.check:
        for resource in resources:
            args = ResourceValidationArgs(resource.type, resource.inputs, resource.urn, resource.name,
                                          options_of(resource), None, {})
            # the engine runs a resource's remediation pass before its analysis; a rule that needs secret
            # marks looks in the first and reports in the second
            if policy.has_remediation():
                policy.remediate(args)
            policy.validate(args, lambda message, urn=None: reported.append(message))
    else:
        stack = [PolicyResource(r.type, r.inputs, r.urn, r.name, options_of(r), None, None, [], {}) for r in resources]
        policy.validate(StackValidationArgs(stack, {}), lambda message, urn=None: reported.append(message))
    assert reported == [v["message"] for v in evaluate(resources) if v["policy"] == name]


def test_secrecy_is_judged_with_the_marks_the_remediation_pass_keeps():
    """pulumi_policy drops secret marks before a validation; its remediation pass keeps them, inside proxies
    that unwrap on every read. The secrecy rule reads past the proxies, so a secret passes and plain text
    does not."""
    from pulumi_policy.deserialize import deserialize_properties
    from pulumi_policy.proxy import unknown_checking_proxy

    from policy.pack import plan_values

    secret_sig = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}
    wire = {"apiToken": {**secret_sig, "value": "t0ken"}, "nested": {"password": "plain"},
            "clientSecret": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"}
    as_remediation_sees_it = unknown_checking_proxy(deserialize_properties(wire, True))
    assert as_remediation_sees_it["apiToken"] == "t0ken", "the proxies hide the mark on read"
    policy = {p.name: p for p in policies()}["secret-inputs-are-secret"]
    args = ResourceValidationArgs("pulumi:providers:cloudflare", as_remediation_sees_it, "urn:x", "x",
                                  PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), []), None, {})
    reported: list[str] = []
    assert policy.remediate(args) is None, "the pass only looks; nothing is changed"
    policy.validate(args, lambda message, urn=None: reported.append(message))
    assert reported == ["nested.password is plain text: pass it as a Pulumi secret (config get_secret, Output.secret)"]
    with pytest.raises(Exception) as not_applicable:
        policy.validate(args, lambda message, urn=None: None)  # no remediation pass ran (another level)
    assert "remediation pass" in not_applicable.value.reason
    assert type(plan_values(as_remediation_sees_it)["apiToken"]).__name__ == "Secret"
    assert plan_values(as_remediation_sees_it)["clientSecret"] == "(known after apply)"


def test_mandatory_violation_makes_plan_exit_nonzero(monkeypatch, capsys):
    """A mandatory violation makes `mailctl plan` exit 1, printed as `[mandatory] <rule>: <message>`."""
    from mailctl import cli
    from policy import rules

    always = rules.Rule("always-fails", "test rule", "mandatory", lambda r, c: ["bad"] if r.type == VM else [])
    monkeypatch.setattr(rules, "RULES", (*rules.RULES, always))
    assert cli.main(["plan", "--stack", "staging"]) == 1
    assert "[mandatory] always-fails: bad" in capsys.readouterr().out


def test_mailctl_policy_judges_a_saved_plan(tmp_path, prod_plan, capsys):
    """A plan saved in a PR run can be judged later, with no credentials."""
    from mailctl import cli

    saved = tmp_path / "plan.json"
    saved.write_text(prod_plan.to_json())
    assert cli.main(["policy", str(saved)]) == 0
    [resource] = broken(prod_plan)["dns-record-not-proxied"]
    bad = Plan.from_dict(prod_plan.to_dict())
    bad.resources = [resource if r.urn == resource.urn else r for r in bad.resources]
    saved.write_text(bad.to_json())
    capsys.readouterr()
    assert cli.main(["policy", str(saved)]) == 1
    assert "[mandatory] dns-record-not-proxied:" in capsys.readouterr().out
    saved.write_text("{not json")
    assert cli.main(["policy", str(saved)]) == 2


# --- DKIM rotation: published keys say why, the signing key's age ------------------------------------------


def test_a_published_selector_with_a_reason_passes_and_one_without_is_advised(scratch_project):
    """A DKIM selector published but not signing passes with a reason given, and is advised without one."""
    from mailctl.recorder import record
    from tests.conftest import stack_config

    def advisories(published):
        config = {**stack_config("prod"), "ceres-mail:dkimPublishedSelectors": published}
        plan = record(scratch_project("prod", config), "prod")
        return [v["message"] for v in plan.policy if v["policy"] == "dkim-published-says-why"]

    [message] = advisories(["ceres2026"])
    assert message.startswith("ceres2026._domainkey.example.com is published but does not sign, and no reason is given")
    assert "{selector: ceres2026, reason: ...}" in message
    assert advisories([{"selector": "ceres2026", "reason": "next key, published 2026-11-26"}]) == []


def test_only_the_signing_key_past_its_age_is_advised(prod_plan):
    """Only the signing DKIM key older than dkimMaxAgeDays is advised, with the rotate command; with no age, nothing."""
    subjects = [*prod_plan.resources, stack_resource(prod_plan)]
    aged = lambda created: [v for v in evaluate(subjects, created=created, now=NOW)  # noqa: E731
                            if v["policy"] == "dkim-key-not-too-old"]
    [violation] = aged(made_long_ago(prod_plan, days=400))
    assert violation["level"] == "advisory"
    assert violation["message"] == ("the DKIM key of selector ceres has signed for 400 days, more than dkimMaxAgeDays "
                                    "(365): rotate it (mailctl dkim rotate --stack prod --to <new selector>)")
    assert aged(made_long_ago(prod_plan, days=364)) == [], "younger than dkimMaxAgeDays"
    assert aged({}) == [], "no state, no age: nothing is guessed"
    other = next(r for r in prod_plan.of_type(PRIVATE_KEY) if not r.name.endswith("-dkim-key-ceres"))
    assert aged({other.urn: NOW - datetime.timedelta(days=4000)}) == [], "only the signing DKIM key's age counts"


def test_mailctl_policy_reads_ages_from_a_state_export(prod_plan, tmp_path, capsys):
    """`pulumi stack export` records `created` per resource; dkimMaxAgeDays comes from the stack output."""
    from mailctl.cli import main

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(prod_plan.to_json())
    made = made_long_ago(prod_plan, days=800)
    export = {"version": 3, "deployment": {"resources": [
        {"urn": urn, "created": moment.isoformat().replace("+00:00", "Z")} for urn, moment in made.items()
    ] + [{"urn": "urn:pulumi:prod::ceres-mail::pulumi:pulumi:Stack::ceres-mail-prod"}]}}
    state = tmp_path / "state.json"
    state.write_text(json.dumps(export))
    main(["policy", str(plan_file), "--state", str(state)])
    out = capsys.readouterr().out
    assert "[advisory] dkim-key-not-too-old: the DKIM key of selector ceres has signed for" in out
    main(["policy", str(plan_file)])
    assert "dkim-key-not-too-old" not in capsys.readouterr().out, "without the state there is no age"

    state.write_text("{}")
    assert main(["policy", str(plan_file), "--state", str(state)]) == 2
    assert "--state: " + str(state) + " is not the output of `pulumi stack export`" in capsys.readouterr().err


def test_a_protected_stack_with_dane_is_asked_to_enforce_mta_sts_until_it_does(scratch_project):
    """prod with dane gets the enforce-MTA-STS advisory while mtaStsMode is testing, and not once it enforces."""
    from mailctl.recorder import record
    from tests.conftest import stack_config

    def advised(edits: dict) -> list[str]:
        plan = record(scratch_project("prod", stack_config("prod", {"ceres-mail:dane": True, **edits})), "prod")
        return [v["message"] for v in plan.policy if v["policy"] == "mta-sts-enforced-with-dane"]

    [message] = advised({})
    assert "set mtaStsMode to enforce" in message
    assert advised({"ceres-mail:mtaStsMode": "enforce"}) == []


def test_a_published_tls_key_without_a_reason_is_named_once_and_a_reason_quiets_it(scratch_project):
    """Mid-rollover, a next TLS key published without a reason gets one advisory naming it; with a reason, none."""
    from mailctl.recorder import record
    from tests.conftest import stack_config

    def advised(published: list) -> list[str]:
        config = stack_config("prod", {"ceres-mail:dane": True, "ceres-mail:tlsPublishedKeys": published})
        plan = record(scratch_project("rollover", config), "rollover")
        return [v["message"] for v in plan.policy if v["policy"] == "tls-published-says-why"]

    [message] = advised(["tls2"])
    assert "the TLS key tls2 is published" in message and "tlsPublishedKeys" in message
    assert advised([{"selector": "tls2", "reason": "next key, served from 2026-12-20"}]) == []
