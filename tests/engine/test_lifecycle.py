"""`pulumi up`, again, after one change, `--target`, and `destroy` under the real engine.

The first part is a world: one staging stack (staging_up), after its first up, taken through its life in file
order: read, up again, previews of single changes, a targeted up, a DKIM selector published, the VM replaced,
a password rotated and the stack refreshed. Each step leaves the stack at rest for the next. The rest make
stacks of their own (prod, and stacks deployed by the program as it was before a move)."""

from __future__ import annotations

import contextlib

import pulumi
import pytest
from pulumi.automation import ConfigValue

from components import platform, providers
from mailctl.diff import diff_plans
from mailctl.recorder import record
from tests.engine.fixtures import CERES_REALM_FIELDS
from tests.engine.harness import run_engine
from tests.engine.standins.remote_commands import RUN_LOG

REALM = "keycloak:index/realm:Realm"
PASSWORD = "random:index/randomPassword:RandomPassword"
RECORD = "cloudflare:index/dnsRecord:DnsRecord"


def urn_of(run_or_state, type_: str, name_suffix: str) -> str:
    urns = run_or_state if isinstance(run_or_state, (list, set, dict)) else run_or_state.ops()
    [urn] = [u for u in urns if u.split("::")[-2].endswith(type_) and u.endswith(name_suffix)]
    return urn


@contextlib.contextmanager
def config_changed(stack, key: str, value: str):
    """`ceres-mail:<key>` set to `value` in the stack file for the block, then back as it was (the key
    removed if it was not set): the world's next step starts from the stack file it had."""
    name = f"ceres-mail:{key}"
    before = stack.get_all_config().get(name)
    stack.set_config(name, ConfigValue(value))
    try:
        yield
    finally:
        if before is None:
            stack.remove_config(name)
        else:
            stack.set_config(name, ConfigValue(before.value, secret=before.secret))


# --- the world: one staging stack taken through its life (staging_up, tests/engine/conftest.py) ---------


def test_first_up_adopts_the_realm_and_owns_only_its_smtp_block(staging_up):
    """The first up adopts CERES's realm as it is and sets only its SMTP block; the realm is kept on destroy."""
    project, stack, first = staging_up
    realm_urn = urn_of(first, REALM, "-keycloak-realm")
    assert first.ops()[realm_urn] == ("import", "update"), "adopted as it is, then given its SMTP block"
    [realm] = [r for r in project.export(stack)["resources"] if r["urn"] == realm_urn]
    # staging protects nothing, so it can be destroyed; the realm is never deleted all the same
    assert realm["importID"] == "ceres" and not realm.get("protect") and realm["retainOnDelete"]
    held = project.world_items("keycloak", "Realm")["ceres"]
    assert {key: held[key] for key in CERES_REALM_FIELDS} == CERES_REALM_FIELDS, "every other field as CERES had it"
    assert held["smtpServer"]["host"] == "mail.staging.example.net"
    assert held["smtpServer"]["auth"]["username"] == "no-reply@staging.example.net"


def test_the_state_dates_the_signing_key_for_the_age_advisory(staging_up):
    """The engine records when it made each resource; `mailctl policy --state` reads that from `pulumi
    stack export` and advises once the signing key is older than dkimMaxAgeDays (the stack output)."""
    import datetime

    from mailctl.state import created_times
    from policy.rules import evaluate

    project, stack, _ = staging_up
    export = project.cli("stack", "export", "--stack", stack.name).stdout
    created = created_times(export)
    [key_urn] = [urn for urn in created if urn.endswith("::ceres-mail-dkim-key-ceres")]
    made = created[key_urn]
    assert abs((datetime.datetime.now(datetime.timezone.utc) - made).total_seconds()) < 3600, "made by this up"
    plan = record(project.work_dir, "staging")
    aged = lambda now: [v["message"] for v in evaluate(plan.resources, outputs=(plan.stack_urn, plan.outputs),  # noqa: E731
                                                       created=created, now=now)
                        if v["policy"] == "dkim-key-not-too-old"]
    assert aged(made + datetime.timedelta(days=300)) == []
    [message] = aged(made + datetime.timedelta(days=366))
    assert message.startswith("the DKIM key of selector ceres has signed for 366 days, more than dkimMaxAgeDays (365)")


def test_a_second_up_changes_nothing(staging_up):
    """A second `pulumi up` changes nothing and runs no install stage again."""
    project, stack, first = staging_up
    runs_before = (project.world / "command" / RUN_LOG).read_text()
    second = run_engine(stack.up, expect_no_changes=True)
    assert second.ok, second.output[-3000:]
    assert second.changed() == {}
    assert (project.world / "command" / RUN_LOG).read_text() == runs_before, "no install stage ran again"


def _engine_changes(run) -> dict[str, tuple[str, set[str]]]:
    """URN -> (changed | replaced, the top-level inputs that changed), from a preview's steps."""
    changes = {}
    for event in run.events:
        pre = event.resource_pre_event
        if pre is None or pre.metadata.op.value in ("same", "read"):
            continue
        action = "replaced" if pre.metadata.op.value in ("replace", "create-replacement", "delete-replaced") else "changed"
        if action == "changed" and pre.metadata.type == "command:remote:Command":
            action = "re-runs"  # pulumi-command runs `create` again on an update (mailctl plan --diff says so)
        paths = set(pre.metadata.detailed_diff or {}) or set(pre.metadata.diffs or [])
        changes[pre.metadata.urn] = (action, {p.split(".", 1)[0].split("[", 1)[0] for p in paths})
    return changes


@pytest.mark.parametrize(
    "key, value", [("dnsTtl", 600), ("mailFromName", "CERES Staging"), ("acmeEmail", "ops@staging.example.net")]
)
def test_one_config_change_shows_in_the_preview_as_in_mailctl_plan_diff(staging_up, key, value):
    """One config change shows in `pulumi preview` as `mailctl plan --diff` shows it: same resources, actions, inputs."""
    project, stack, first = staging_up
    base = record(project.work_dir, "staging")
    with config_changed(stack, key, str(value)):
        head = record(project.work_dir, "staging")
        preview = run_engine(stack.preview, diff=True)
    offline = {
        change.urn: (change.action, {p.split(".", 1)[0].split("[", 1)[0] for p in change.inputs})
        for change in diff_plans(base, head)
    }
    assert preview.ok, preview.output[-3000:]
    assert offline, f"changing {key} changes something"
    assert _engine_changes(preview) == offline


def test_targeted_preview_and_up_touch_only_the_target(staging_up):
    """`--target` previews and changes only the targeted record; every other record keeps its TTL."""
    project, stack, first = staging_up
    mx = urn_of(first, RECORD, "-mx-staging.example.net")
    with config_changed(stack, "dnsTtl", "900"):
        preview = run_engine(stack.preview, target=[mx])
        assert preview.ok, preview.output[-3000:]
        assert preview.changed() == {mx: ("update",)}
        up = run_engine(stack.up, target=[mx])
        assert up.ok, up.output[-3000:]
        assert up.changed() == {mx: ("update",)}
        records = project.world_items("cloudflare", "DnsRecord").values()
        assert {r["name"]: r["ttl"] for r in records if r["type"] == "MX"} == {"staging.example.net": 900}
        assert {r["ttl"] for r in records if r["type"] != "MX"} == {300}, "untargeted records keep their TTL"
    back = run_engine(stack.up, target=[mx])  # the key set back, the target follows: the stack at rest
    assert back.ok and back.changed() == {mx: ("update",)}, back.output[-3000:]


def test_publishing_a_next_dkim_selector_adds_its_key_and_records_and_changes_nothing_else(staging_up):
    """Step 1 of a rotation: the next key is made and published, the signing key and the host stay."""
    project, stack, first = staging_up
    runs_before = (project.world / "command" / RUN_LOG).read_text()
    # as `mailctl dkim rotate` says to: item by item, the object field by field (the key is untyped in
    # Pulumi.yaml, since Pulumi has no type for a list of strings and objects)
    reason = "next key, published 2026-11-26; signs from step 2 of the rotation"
    stack.set_config("ceres-mail:dkimPublishedSelectors[0].selector", ConfigValue("ceres2026"), path=True)
    stack.set_config("ceres-mail:dkimPublishedSelectors[0].reason", ConfigValue(reason), path=True)
    up = run_engine(stack.up)
    assert up.ok, up.output[-3000:]
    created = {urn.rsplit("::", 1)[-1] for urn, steps in up.changed().items() if steps == ("create",)}
    assert created == {"ceres-mail-dkim-key-ceres2026", "ceres-mail-dns-txt-ceres2026._domainkey.staging.example.net"}
    assert set(up.changed()) == {urn for urn in up.changed() if urn.rsplit("::", 1)[-1] in created}
    assert (project.world / "command" / RUN_LOG).read_text() == runs_before, "no install stage ran"
    [record_] = [r for r in project.world_items("cloudflare", "DnsRecord").values()
                 if r.get("name") == "ceres2026._domainkey.staging.example.net"]
    assert record_["comment"] == "Published, not signing: " + reason


def test_a_replaced_vm_gets_its_mail_stack_installed_again(staging_up):
    """A new VM is an empty host at the same address: every install command runs on it again, in order."""
    project, stack, first = staging_up
    runs_log = project.world / "command" / RUN_LOG
    runs_before = runs_log.read_text().splitlines()
    stack.set_config("ceres-mail:proxmoxNode", ConfigValue("pve-lab2"))  # the VM moves: a new VM
    up = run_engine(stack.up)
    assert up.ok, up.output[-3000:]
    replaced = {urn.rsplit("::", 1)[-1] for urn, steps in up.changed().items() if "create-replacement" in steps}
    # the server's remote commands (not the passwords it generates, which stay with the stack)
    stages = [urn.rsplit("::", 1)[-1] for urn in first.ops() if "$command:remote:Command::" in urn]
    assert "ceres-mail-vm-vm" in replaced
    assert set(stages) <= replaced, f"not run on the new VM: {sorted(set(stages) - replaced)}"
    runs_after = runs_log.read_text().splitlines()[len(runs_before):]
    assert len(runs_after) == len(stages), "each stage ran once on the new VM"


def test_a_rotated_password_leaves_every_other_secret_in_the_state_through_a_refresh(staging_up):
    """A rotation (`pulumi up --replace` of the mailbox password, as the README says) makes a new password;
    a `pulumi refresh` after it reads every key and password back as the state holds it, so the next
    preview has nothing to do: no other secret is drawn again behind the operator's back."""
    project, stack, first = staging_up
    password = urn_of(first, PASSWORD, "-mailbox-password")
    rotated = run_engine(stack.up, replace=[password])
    assert rotated.ok, rotated.output[-3000:]
    assert "create-replacement" in rotated.changed()[password]
    refreshed = run_engine(stack.refresh)
    assert refreshed.ok, refreshed.output[-3000:]
    after = run_engine(stack.preview)
    assert after.ok, after.output[-3000:]
    assert after.changed() == {}, f"the refresh kept every password and key: {after.output[-3000:]}"


# --- stacks of their own ----------------------------------------------------------------------------------


def test_destroy_is_refused_for_protected_resources_and_retain_on_delete_is_honoured(engine_project):
    """prod protects its VM, records, keys and the realm: destroy stops; once unprotected, destroy
    removes what the stack owns and leaves the VM and CERES's realm in place (retainOnDelete)."""
    project = engine_project("prod")
    stack = project.stack("prod")
    up = run_engine(stack.up)
    assert up.ok, up.output[-3000:]
    refused = run_engine(stack.destroy)
    assert not refused.ok and "protected" in refused.output
    assert project.world_items("proxmoxve", "VmLegacy"), "nothing was deleted"

    project.cli("state", "unprotect", "--all", "--yes", "--stack", "prod")
    destroyed = run_engine(stack.destroy)
    assert destroyed.ok, destroyed.output[-3000:]
    assert list(project.world_items("proxmoxve", "VmLegacy")) == ["2501"], "the VM is retained"
    assert "ceres" in project.world_items("keycloak", "Realm"), "CERES's realm is retained"
    assert project.world_items("cloudflare", "DnsRecord") == {}
    assert project.world_items("proxmoxve", "FileLegacy") == {}


def providers_under_the_platform(former_parent):
    """The layout before the providers moved to the top of the stack: under the Platform component.
    (Transforms cannot change a parent, so the test swaps the options the providers are made with.)"""
    return pulumi.ResourceOptions(parent=former_parent)


def up_as_before(project, module, attribute: str, before):
    """A staging stack deployed by the program as it was before a move (`module.attribute` was `before`):
    the stack and its first up."""
    stack = project.stack("staging")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, attribute, before)
        first = run_engine(stack.up)
    assert first.ok, first.output[-3000:]
    return stack, first


def assert_the_program_as_it_is_changes_nothing(stack) -> None:
    moved = run_engine(stack.preview, diff=True)
    assert moved.ok, moved.output[-3000:]
    assert moved.changed() == {}


def test_a_stack_deployed_with_the_providers_under_the_platform_keeps_them(engine_project):
    """Moving the providers renames them; their alias makes the move a rename, not a new provider that
    would replace every resource it manages."""
    stack, first = up_as_before(engine_project("staging"), providers, "provider_options", providers_under_the_platform)
    assert any("Platform$pulumi:providers:" in urn for urn in first.ops())
    assert_the_program_as_it_is_changes_nothing(stack)


def single_dkim_key(name, settings, keep):
    """The stack's one DKIM key, declared as it was before keys were per selector."""
    import pulumi_tls as tls

    return {settings.dkim_selector: tls.PrivateKey(f"{name}-dkim-key", algorithm="RSA",
                                                   rsa_bits=settings.dkim_key_bits, opts=keep)}


def test_a_stack_with_the_single_dkim_key_keeps_it_when_keys_go_per_selector(engine_project):
    """The signing selector's key is known by the old name too: the move renames it, and no record,
    install stage or key changes (a new key would break every signature in flight)."""
    stack, first = up_as_before(engine_project("staging"), platform, "dkim_keys_by_selector", single_dkim_key)
    assert any(urn.endswith("::ceres-mail-dkim-key") for urn in first.ops())
    assert_the_program_as_it_is_changes_nothing(stack)
