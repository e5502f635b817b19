"""`mailctl plan --diff`: what a pull request changes, offline, secrets still redacted."""

from __future__ import annotations

import json

from mailctl.cli import main
from mailctl.diff import diff_plans, render_diff
from mailctl.recorder import record
from tests.conftest import stack_config


def plan_of(scratch_project, name: str, **changes):
    config = stack_config("staging")
    config.update({f"ceres-mail:{k}": v for k, v in changes.items()})
    return record(scratch_project(name, config), name)


def test_same_stack_has_no_changes(plans):
    """A plan diffed against itself shows no change, printed as `no changes`."""
    assert diff_plans(plans["staging"], plans["staging"]) == []
    assert render_diff([]) == "no changes\n"


def test_a_ttl_change_changes_every_record_in_place(scratch_project):
    """A new dnsTtl changes every DNS record in place, its TTL alone; nothing else changes."""
    base, head = plan_of(scratch_project, "base"), plan_of(scratch_project, "base", dnsTtl=600)
    changes = diff_plans(base, head)
    assert {c.type for c in changes} == {"cloudflare:index/dnsRecord:DnsRecord"}
    assert all(c.action == "changed" and c.inputs == {"ttl": {"before": 300, "after": 600}} for c in changes)


def test_moving_the_vm_to_another_node_is_a_replacement(scratch_project):
    """Moving the VM to another Proxmox node shows as the VM's replacement, with the node it moves to."""
    base, head = plan_of(scratch_project, "base"), plan_of(scratch_project, "base", proxmoxNode="pve-lab2")
    vm = next(c for c in diff_plans(base, head) if c.type == "proxmoxve:index/vmLegacy:VmLegacy")
    assert vm.action == "replaced" and vm.inputs["nodeName"] == {"before": "pve-lab", "after": "pve-lab2"}


def test_a_changed_install_script_re_runs_its_stage_and_shows_as_a_line_diff(scratch_project):
    """pulumi-command runs `create` again on any change: the reviewer sees which stage runs again on the
    host, and what changed in its script, line by line."""
    base = plan_of(scratch_project, "base")
    head = plan_of(scratch_project, "base", acmeEmail="ops@staging.example.net")
    changes = diff_plans(base, head)
    tls = next(c for c in changes if c.name.endswith("-install-tls"))
    assert tls.action == "re-runs"
    assert {c.name for c in changes if c.action == "re-runs"} == {tls.name}
    text = render_diff(changes)
    assert "~> ceres-mail-server-install-tls  command:remote:Command  (re-runs)" in text
    assert "      --- before" in text and "      +++ after" in text
    added = [line for line in text.splitlines() if line.startswith("      +") and "ops@staging.example.net" in line]
    assert added, text
    assert "1 re-runs" in text.splitlines()[-1]


def test_an_extra_domain_adds_its_records(scratch_project):
    """Adding an extra domain shows its records, MX and DMARC among them, as added."""
    base = plan_of(scratch_project, "base")
    head = plan_of(scratch_project, "base", extraDomains=["example.org=11111111111111111111111111111111"])
    added = {c.name for c in diff_plans(base, head) if c.action == "added"}
    assert {"ceres-mail-dns-mx-example.org", "ceres-mail-dns-txt-_dmarc.example.org"} <= added


def test_a_changed_secret_stays_redacted(scratch_project):
    """The Keycloak client secret changes in the stack file: the diff can only say [secret] on both sides."""
    base = plan_of(scratch_project, "base")
    head = plan_of(scratch_project, "base", keycloakClientSecret={"secure": "v1:b3RoZXI="}, keycloakClientId="other")
    provider = next(c for c in diff_plans(base, head) if c.type == "pulumi:providers:keycloak")
    assert provider.inputs == {"clientId": {"before": "ceres-mail-admin", "after": "other"}}
    assert "offline-placeholder" not in render_diff(diff_plans(base, head))


def test_two_stacks_compare_by_name_and_a_urn_diff_across_stacks_is_refused(tmp_path, capsys):
    """staging against prod: by URN everything is removed and added (each URN names its stack), so the
    diff is refused up front, before any removal list; by name it shows what really differs."""
    saved = tmp_path / "staging.json"
    assert main(["plan", "--stack", "staging", "--json"]) == 0
    saved.write_text(capsys.readouterr().out)
    assert main(["plan", "--stack", "prod", "--diff", str(saved)]) == 2
    refused = capsys.readouterr()
    assert refused.out == "" and "is a plan of stack 'staging', not 'prod'" in refused.err
    assert "--by-name" in refused.err and "--allow-other-stack" in refused.err
    assert main(["plan", "--stack", "prod", "--diff", str(saved), "--allow-other-stack", "--json"]) == 0
    assert {c["action"] for c in json.loads(capsys.readouterr().out)} == {"added", "removed"}
    main(["plan", "--stack", "prod", "--diff", str(saved), "--by-name", "--json"])
    captured = capsys.readouterr()
    assert captured.err == ""
    changes = {c["name"]: c for c in json.loads(captured.out)}
    assert changes["ceres-mail-vm-vm"]["action"] == "replaced", "another node"
    assert changes["ceres-mail-vm-vm"]["inputs"]["nodeName"] == {"before": "pve-lab", "after": "pve1"}
    assert "ceres-mail-provider-cloudflare" not in changes, "the same provider in both stacks: no change"
    assert changes["ceres-mail-dns-aaaa-mail.example.com"]["action"] == "added", "only prod has IPv6"


def test_cli_diff_in_text_and_json(tmp_path, capsys):
    """`mailctl plan --diff` prints `no changes` for an unchanged stack, and each change's URN and inputs with --json."""
    saved = tmp_path / "base.json"
    assert main(["plan", "--stack", "staging", "--json"]) == 0
    saved.write_text(capsys.readouterr().out)
    assert main(["plan", "--stack", "staging", "--diff", str(saved)]) == 0
    assert capsys.readouterr().out == "no changes\n"
    assert main(["plan", "--stack", "prod", "--diff", str(saved), "--json", "--allow-other-stack"]) == 0
    changes = json.loads(capsys.readouterr().out)
    assert {"urn", "type", "name", "action", "inputs"} <= set(changes[0])
    assert {c["action"] for c in changes} >= {"added", "removed"}, "prod and staging differ in their URNs"


def test_switching_dkim_to_a_selector_the_base_did_not_publish_is_a_mandatory_problem(scratch_project):
    """Step 2 of a rotation is safe only after step 1: the new selector's record served before it signs."""
    from mailctl.diff import transition_problems

    before = plan_of(scratch_project, "base")
    skipped = plan_of(scratch_project, "skipped", dkimSelector="ceres2026")
    [problem] = transition_problems(before, skipped)
    assert problem["level"] == "mandatory" and "dkimPublishedSelectors: [ceres2026]" in problem["message"]

    published = plan_of(scratch_project, "published", dkimPublishedSelectors=["ceres2026"])
    switched = plan_of(scratch_project, "switched", dkimSelector="ceres2026", dkimPublishedSelectors=["ceres"])
    assert transition_problems(before, published) == [], "step 1: publish ahead"
    assert transition_problems(published, switched) == [], "step 2: switch to the published one"
    assert transition_problems(switched, plan_of(scratch_project, "retired", dkimSelector="ceres2026")) == [], "step 3"


def test_plan_diff_exits_1_on_a_dkim_switch_that_skips_publishing(scratch_project, tmp_path, capsys, monkeypatch):
    """`mailctl plan --diff` exits 1 when DKIM switches to a selector the base plan did not publish."""
    base = tmp_path / "base.json"
    base.write_text(plan_of(scratch_project, "prod").to_json())
    project = scratch_project("prod", {**stack_config("prod"), "ceres-mail:dkimSelector": "ceres2026"})
    assert main(["-C", str(project), "plan", "--stack", "prod", "--diff", str(base)]) == 1
    assert "[mandatory] dkim-switch-after-publishing" in capsys.readouterr().out


def test_serving_a_tls_key_whose_tlsa_the_base_did_not_publish_is_a_mandatory_problem(scratch_project):
    """Step 2 of a TLS key rollover is safe only after step 1: the new key's TLSA published before it is served."""
    from mailctl.diff import transition_problems

    before = plan_of(scratch_project, "base", dane=True)
    skipped = plan_of(scratch_project, "skipped", dane=True, tlsKeySelector="tls2")
    [problem] = transition_problems(before, skipped)
    assert (problem["policy"], problem["level"]) == ("tls-switch-after-publishing", "mandatory")
    assert problem["message"].startswith("tlsKeySelector switches to tls2, which base's base plan did not publish: ")
    assert "First publish it (tlsPublishedKeys: [tls2])" in problem["message"]

    published = plan_of(scratch_project, "published", dane=True, tlsPublishedKeys=["tls2"])
    switched = plan_of(scratch_project, "switched", dane=True, tlsKeySelector="tls2", tlsPublishedKeys=["tls1"])
    assert transition_problems(before, published) == [], "step 1: publish ahead"
    assert transition_problems(published, switched) == [], "step 2: serve the published one"
    assert transition_problems(switched, plan_of(scratch_project, "retired", dane=True, tlsKeySelector="tls2")) == []
    plain = plan_of(scratch_project, "plain")
    assert transition_problems(plain, skipped) == [], "turning dane on: no TLSA pinned a key before"


def test_plan_diff_exits_1_on_a_tls_key_switch_that_skips_publishing(scratch_project, tmp_path, capsys):
    """`mailctl plan --diff` exits 1 when the served TLS key switches to one whose TLSA the base did not publish."""
    base = tmp_path / "base.json"
    dane = {**stack_config("prod"), "ceres-mail:dane": True}
    base.write_text(record(scratch_project("prod", dane), "prod").to_json())
    project = scratch_project("prod", {**dane, "ceres-mail:tlsKeySelector": "tls2"})
    assert main(["-C", str(project), "plan", "--stack", "prod", "--diff", str(base)]) == 1
    out = capsys.readouterr().out
    assert "[mandatory] tls-switch-after-publishing: tlsKeySelector switches to tls2" in out
