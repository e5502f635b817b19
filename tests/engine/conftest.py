"""Fixtures of the real-engine layer: a scratch project per test (the built tools and k3s: fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.fixtures import CERES_REALM_FIELDS, kubeconfig_for, reset_ceres
from tests.engine.harness import EngineProject
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
