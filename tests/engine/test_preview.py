"""`pulumi preview` of the committed stacks (and of a variant with keys they leave off) under the real engine,
with the policy pack under CrossGuard, against what `mailctl plan` says offline."""

from __future__ import annotations

from typing import Any

import pytest

from mailctl.plan import SECRET, UNKNOWN_TEXT
from mailctl.recorder import record
from tests.engine.harness import REPO, run_engine

STACK_TYPE = "pulumi:pulumi:Stack"
#: a committed stack with keys no committed stack sets yet: name -> (the stack it starts from, its keys)
VARIANTS = {"prod-dnssec": ("prod", {"dnssec": True, "extraDomains": [f"example.org={'1' * 32}"]})}
PREVIEWED = ("prod", "staging", "home", *VARIANTS)  #: every committed stack, and the variants


@pytest.fixture(scope="module")
def previews(engine_tools, k3s, tmp_path_factory):
    """stack -> (offline plan, the real preview with the policy pack), made once for the module."""
    from tests.engine.conftest import seed_realm
    from tests.engine.fixtures import kubeconfig_for
    from tests.engine.harness import EngineProject

    made = {}
    for name in PREVIEWED:
        base, keys = VARIANTS.get(name, (name, {}))
        project = EngineProject(tmp_path_factory.mktemp(name), engine_tools, kubeconfig=kubeconfig_for(k3s, base))
        seed_realm(project)
        stack = project.stack(base, config=keys)
        run = run_engine(stack.preview, json_steps=True, policy_packs=[project.policy_pack], diff=True)
        # a variant's stack file is the project's own (its secrets encrypted there, which the recorder never reads)
        made[name] = (record(project.work_dir if keys else REPO, base), run, project)
    return made


@pytest.mark.parametrize("stack", PREVIEWED)
def test_real_cli_accepts_the_stack_file_and_the_policy_pack_passes(previews, stack):
    """The CLI checks the stack file against Pulumi.yaml's config block, then CrossGuard runs the pack."""
    plan, run, project = previews[stack]
    assert run.ok, run.output[-3000:]
    assert [v for v in run.violations if v["level"] == "mandatory"] == []


@pytest.mark.parametrize("stack", PREVIEWED)
def test_crossguard_and_the_offline_plan_give_the_same_verdicts(previews, stack):
    """CrossGuard and `mailctl plan` give the same verdicts: same rules, on the same resources, at the same levels."""
    plan, run, project = previews[stack]
    engine = {(v["policy"], v["urn"], v["level"]) for v in run.violations}
    offline = {(v["policy"], v["urn"], v["level"]) for v in plan.policy}
    assert engine == offline


def _registered(run) -> dict[str, dict]:
    """What the program registered, without what the engine adds by itself (the root stack, and the
    default providers of resources that name no provider)."""
    def added_by_engine(urn: str, state: dict) -> bool:
        return state.get("type") == STACK_TYPE or (
            state.get("type", "").startswith("pulumi:providers:") and urn.rsplit("::", 1)[-1].startswith("default"))

    return {urn: state for urn, state in run.registrations.items() if not added_by_engine(urn, state)}


def _agrees(offline: Any, engine: Any, path: str, problems: list[str]) -> None:
    """Offline values known before apply must be what the engine registered; a secret is a secret in both."""
    if offline == UNKNOWN_TEXT:
        return
    if isinstance(offline, dict) and isinstance(engine, dict):
        for key, value in offline.items():
            _agrees(value, engine.get(key), f"{path}.{key}", problems)
    elif isinstance(offline, list) and isinstance(engine, list) and len(offline) == len(engine):
        for index, (a, b) in enumerate(zip(offline, engine)):
            _agrees(a, b, f"{path}[{index}]", problems)
    elif offline != engine:
        problems.append(f"{path}: offline {offline!r}, engine {engine!r}")


@pytest.mark.parametrize("stack", PREVIEWED)
def test_offline_plan_is_what_the_engine_registered(previews, stack):
    """Same URNs, types, parents, dependencies, options, and every input known offline."""
    plan, run, project = previews[stack]
    assert run.ok, run.output[-3000:]
    engine = _registered(run)
    stack_urn = next(urn for urn, state in run.registrations.items() if state.get("type") == STACK_TYPE)
    assert sorted(engine) == sorted(r.urn for r in plan.resources)
    problems: list[str] = []
    for resource in plan.resources:
        state = engine[resource.urn]
        where = resource.urn.rsplit("::", 1)[-1]
        expected = {
            "type": resource.type,
            "parent": resource.parent or stack_urn,
            "dependencies": sorted(resource.dependencies),
            "protect": resource.options["protect"],
            "retainOnDelete": resource.options["retainOnDelete"],
            "ignoreChanges": sorted(resource.options["ignoreChanges"]),
            "importID": resource.options["importId"],
        }
        actual = {
            "type": state.get("type"),
            "parent": state.get("parent"),
            "dependencies": sorted(state.get("dependencies") or []),
            "protect": state.get("protect", False),
            "retainOnDelete": state.get("retainOnDelete", False),
            "ignoreChanges": sorted(state.get("ignoreChanges") or []),
            "importID": state.get("importID") or None,
        }
        problems += [f"{where} {key}: offline {expected[key]!r}, engine {actual[key]!r}"
                     for key in expected if expected[key] != actual[key]]
        if resource.options["provider"]:
            problems += [] if (state.get("provider") or "").startswith(resource.options["provider"] + "::") else [
                f"{where} provider: offline {resource.options['provider']}, engine {state.get('provider')}"]
        if resource.custom:
            _agrees(resource.inputs, state.get("inputs") or {}, where, problems)
    assert problems == []


@pytest.mark.parametrize("stack", PREVIEWED)
def test_the_preview_shows_no_secret(previews, stack):
    """Every secret the stack was given shows as [secret], never in clear, in the engine's own output."""
    plan, run, project = previews[stack]
    assert project.secret_values, "the stack file's secure: keys were given real secrets"
    rendered = run.output + repr(run.events)
    assert [key for key, value in project.secret_values.items() if value in rendered] == []
    providers = {urn: state for urn, state in run.registrations.items() if "::ceres-mail-provider-" in urn}
    assert all(SECRET in str(state["inputs"]) for state in providers.values()), providers.keys()


def test_the_real_preview_refuses_a_key_under_a_misspelt_namespace(engine_project):
    """The CLI itself accepts `ceres-mial:dmarcPolicy` and hands it to no one who reads it; the program
    sees every key the engine passes and stops the preview, naming it."""
    project = engine_project("staging")
    stack = project.stack("staging", config={"ceres-mial:dmarcPolicy": "reject"})
    run = run_engine(stack.preview)
    assert not run.ok
    assert "ceres-mial:dmarcPolicy: is in namespace 'ceres-mial', which nothing reads" in run.output
    assert "Traceback" not in run.output


def test_the_real_preview_refuses_an_optional_secret_in_clear(engine_project):
    """An optional secret cannot be declared in Pulumi.yaml, so the CLI hands its value over even in clear:
    the program sees that the engine did not mark it secret and stops the preview, naming the key and the
    command to use, never the value."""
    project = engine_project("staging")
    in_clear = "s3-secret-key-in-clear-never-printed"
    stack = project.stack("staging", config={"backupTarget": "s3:https://s3.example.com/ceres-backups/mail",
                                             "backupS3SecretKey": in_clear},
                          secret_config={"backupS3AccessKey": "AKIAEXAMPLEKEY"})
    run = run_engine(stack.preview)
    assert not run.ok
    assert ("ceres-mail:backupS3SecretKey: is in clear in Pulumi.staging.yaml" in run.output
            and "`pulumi config set --secret backupS3SecretKey`" in run.output), run.output[-2000:]
    assert "backupS3AccessKey: is in clear" not in run.output, "the key set with --secret is not in clear"
    assert in_clear not in run.output  # (the engine's own debug events list the stack's plain config)
    assert "Traceback" not in run.output
