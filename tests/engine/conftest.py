"""Fixtures of the real-engine layer: a scratch project per test, or one stack per module (the built tools and
k3s: fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.fixtures import CERES_REALM_FIELDS, kubeconfig_for, reset_ceres
from tests.engine.harness import EngineProject, run_engine
from tests.engine.standins.keycloak_realms import REALM


def seed_realm(project: EngineProject, name: str = "ceres") -> dict:
    """CERES's realm as it exists in Keycloak before the first `pulumi up`."""
    realm = {"realm": name, **CERES_REALM_FIELDS}
    folder = project.world / "keycloak" / REALM.rsplit(":", 1)[1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(realm))
    return realm


@pytest.fixture
def engine_project(tmp_path: Path, engine_tools, k3s):
    """A scratch project factory: `engine_project(stack_file)` gives an EngineProject whose kubeconfig
    reaches the session's k3s, with CERES's realm already in the stand-in Keycloak."""

    def make(stack_file: str = "staging") -> EngineProject:
        project = EngineProject(tmp_path / stack_file, engine_tools, kubeconfig=kubeconfig_for(k3s, stack_file))
        seed_realm(project)
        return project

    yield make
    reset_ceres(k3s)


@pytest.fixture(scope="module")
def staging_up(tmp_path_factory, engine_tools, k3s):
    """The module's staging-like stack after its first `pulumi up`: (project, stack, the first run). One per
    module, a world of its own: the module's tests take it through its life in file order, and each leaves it
    as an operator would (a changed key set back, a converging up), so the next step starts from a stack at
    rest. Before the module's tests that make stacks of their own (engine_project), whose cleanup resets
    CERES's namespaces under this stack."""
    project = EngineProject(tmp_path_factory.mktemp("world") / "staging", engine_tools,
                            kubeconfig=kubeconfig_for(k3s, "staging"))
    seed_realm(project)
    stack = project.stack("staging")
    first = run_engine(stack.up)
    assert first.ok, first.output[-3000:]
    yield project, stack, first
    reset_ceres(k3s)
