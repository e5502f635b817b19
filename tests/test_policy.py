"""Policy: each rule passes the committed stacks and fails a crafted bad resource, in the plan and in the
CrossGuard adapter alike."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

from mailctl.plan import Plan
from policy.pack import policies
from policy.rules import DNS_RECORD, REALM, RULES, VM, evaluate


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_committed_stacks_pass_every_rule(plans, stack):
    assert plans[stack].policy == []


def first(plan: Plan, type_: str, **match):
    return next(r for r in plan.resources if r.type == type_ and all(r.inputs.get(k) == v for k, v in match.items()))


def broken(plan: Plan):
    """(rule name, a resource of prod changed the way that rule forbids)"""
    spf = first(plan, DNS_RECORD, type="TXT", name="example.com")
    dmarc = first(plan, DNS_RECORD, type="TXT", name="_dmarc.example.com")
    a = first(plan, DNS_RECORD, type="A")
    realm = first(plan, REALM)
    vm = first(plan, VM)
    return [
        ("dns-record-not-proxied", replace(a, inputs={**a.inputs, "proxied": True})),
        ("spf-refuses-other-senders", replace(spf, inputs={**spf.inputs, "content": "v=spf1 mx +all"})),
        ("keycloak-realm-protected", replace(realm, options={**realm.options, "protect": False})),
        ("dns-record-says-why", replace(a, inputs={**a.inputs, "comment": ""})),
        ("dmarc-sends-reports", replace(dmarc, inputs={**dmarc.inputs, "content": "v=DMARC1; p=none"})),
        ("mail-vm-starts-on-boot", replace(vm, inputs={**vm.inputs, "onBoot": False})),
    ]


def test_every_rule_has_a_crafted_violation(prod_plan):
    assert {name for name, _ in broken(prod_plan)} == {rule.name for rule in RULES}


@pytest.mark.parametrize("index", range(len(RULES)))
def test_rule_reports_its_crafted_violation(prod_plan, index):
    name, resource = broken(prod_plan)[index]
    violations = evaluate([resource])
    assert [v["policy"] for v in violations] == [name], violations
    assert violations[0]["urn"] == resource.urn and len(violations[0]["message"]) > 30


def test_opaque_values_are_not_violations(prod_plan):
    """A value not known yet (DKIM content) or secret is judged by the engine later, not guessed at."""
    spf = first(prod_plan, DNS_RECORD, type="TXT", name="example.com")
    assert evaluate([replace(spf, inputs={**spf.inputs, "content": "(known after apply)"})]) == []


@pytest.mark.parametrize("index", range(len(RULES)))
def test_crossguard_adapter_reports_the_same(prod_plan, index):
    name, resource = broken(prod_plan)[index]
    policy = {p.name: p for p in policies()}[name]
    reported: list[str] = []
    options = PolicyResourceOptions(
        protect=resource.options["protect"],
        ignore_changes=resource.options["ignoreChanges"],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    args = ResourceValidationArgs(resource.type, resource.inputs, resource.urn, resource.name, options, None)
    policy.validate(args, lambda message, urn=None: reported.append(message))
    assert reported == [v["message"] for v in evaluate([resource])]


def test_mandatory_violation_makes_plan_exit_nonzero(monkeypatch, capsys):
    from mailctl import cli
    from policy import rules

    always = rules.Rule("always-fails", "test rule", "mandatory", lambda t, p, o: ["bad"] if t == VM else [])
    monkeypatch.setattr(rules, "RULES", (*rules.RULES, always))
    assert cli.main(["plan", "--stack", "staging"]) == 1
    assert "[mandatory] always-fails: bad" in capsys.readouterr().out


def test_mailctl_policy_judges_a_saved_plan(tmp_path, prod_plan, capsys):
    """A plan saved in a PR run can be judged later, with no credentials."""
    from mailctl import cli

    saved = tmp_path / "plan.json"
    saved.write_text(prod_plan.to_json())
    assert cli.main(["policy", str(saved)]) == 0
    name, resource = broken(prod_plan)[0]
    bad = Plan.from_dict(prod_plan.to_dict())
    bad.resources = [resource if r.urn == resource.urn else r for r in bad.resources]
    saved.write_text(bad.to_json())
    capsys.readouterr()
    assert cli.main(["policy", str(saved)]) == 1
    assert f"[mandatory] {name}:" in capsys.readouterr().out
    saved.write_text("{not json")
    assert cli.main(["policy", str(saved)]) == 2
