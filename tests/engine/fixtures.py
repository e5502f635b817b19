"""Session fixtures shared by the engine and end-to-end layers: the built tools and one k3s per session.

Loaded for the whole test session (tests/conftest.py's pytest_plugins): in one process the two layers
share one k3s; under pytest's workers each layer's worker starts its own (every port it takes is free).
"""

from __future__ import annotations

import pytest
import yaml

from tests.engine.harness import REPO, EngineTools
from tests.engine.k3s import K3s

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
