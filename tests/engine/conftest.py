"""Fixtures of the real-engine layer: the built tools, one k3s per session, a scratch project per test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.engine.harness import REPO, EngineProject, EngineTools
from tests.engine.k3s import K3s
from tests.engine.standins.keycloak_realms import REALM

# What CERES already has in its cluster and its Keycloak before this stack touches them.
CERES_NAMESPACES = ("ceres", "ceres-staging")
CERES_DEPLOYMENT = "ceres"
CERES_REALM_FIELDS = {
    "displayName": "CERES",
    "displayNameHtml": "<b>CERES</b>",
    "enabled": True,
    "loginTheme": "ceres",
    "registrationAllowed": False,
    "resetPasswordAllowed": True,
    "accessTokenLifespan": "5m0s",
}


@pytest.fixture(scope="session")
def engine_tools() -> EngineTools:
    """The Pulumi CLI, the kubernetes provider and k3s; `make engine` built them (this returns at once)."""
    return EngineTools.build()


def _ceres_deployment(namespace: str) -> dict:
    """CERES's Deployment, scaled to zero: k3s runs no pods here, and the kubernetes provider waits for a
    patched Deployment's rollout, which with no replicas is complete once the controller has seen it."""
    labels = {"app": CERES_DEPLOYMENT}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": CERES_DEPLOYMENT, "namespace": namespace},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "ceres", "image": "ceres.example/ceres:1"}]}}},
    }


def reset_ceres(server: K3s) -> None:
    """CERES's namespaces as CERES keeps them, without anything a test's stack put there."""
    for namespace in CERES_NAMESPACES:
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        server.kubectl("delete", "secret", "--all", "-n", namespace, "--ignore-not-found")
        server.kubectl("delete", "deployment", CERES_DEPLOYMENT, "-n", namespace, "--ignore-not-found")
        server.apply(_ceres_deployment(namespace))


@pytest.fixture(scope="session")
def k3s(engine_tools, tmp_path_factory):
    """A real Kubernetes API with CERES's namespaces and its Deployment, as the cluster has them."""
    server = K3s(engine_tools.k3s, tmp_path_factory.mktemp("k3s")).start()
    try:
        reset_ceres(server)
        yield server
    finally:
        server.stop()


def kubeconfig_for(k3s: K3s, stack: str) -> str:
    """k3s's admin kubeconfig with its context named as the stack file's `kubeContext`, so the stack
    files are used as they are."""
    context = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"].get("ceres-mail:kubeContext")
    document = yaml.safe_load(k3s.kubeconfig)
    if context:
        document["contexts"][0]["name"] = context
        document["current-context"] = context
    return yaml.safe_dump(document)


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
