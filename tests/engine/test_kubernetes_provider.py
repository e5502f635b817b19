"""Which kubernetes provider code runs, and why it stands for the pinned pulumi-kubernetes 4.34.2.

The module proxy serves the provider only at one commit (January 2026, the 4.2x line), older than the
4.34.2 Python SDK the program pins. The program uses two of its resource types, core/v1 Secret and
apps/v1 DeploymentPatch. These tests ask the built plugin itself for its schema and check that, for those
two types, every input the pinned SDK can send is one the plugin knows, so the engine tests exercise
the same contract a real 4.34.2 provider would be held to.
"""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from tests.engine.standins.model import input_schema

USED_TYPES = {
    "kubernetes:core/v1:Secret": ("pulumi_kubernetes.core.v1", "SecretArgs"),
    "kubernetes:apps/v1:DeploymentPatch": ("pulumi_kubernetes.apps.v1", "DeploymentPatchArgs"),
}


@pytest.fixture(scope="module")
def provider_schema(engine_tools) -> dict:
    """The schema the built plugin serves (GetSchema), as the engine would ask for it."""
    plugin = subprocess.Popen([str(engine_tools.kubernetes_provider), "127.0.0.1:1"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        port = plugin.stdout.readline().strip()
        # the schema is about 5 MB, over gRPC's default 4 MB limit
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
            stub = provider_pb2_grpc.ResourceProviderStub(channel)
            return json.loads(stub.GetSchema(provider_pb2.GetSchemaRequest(version=0), timeout=60).schema)
    finally:
        plugin.kill()
        plugin.wait()


def test_the_plugin_says_which_commit_it_was_built_from(provider_schema, engine_tools):
    """It reports the module version it was built from (the build keys its folder by that version and its
    one trim, the component resources left out)."""
    folder = engine_tools.kubernetes_provider.parent.name
    built_from = folder.removeprefix("pulumi-resource-kubernetes-v").removesuffix("-no-components")
    assert provider_schema["name"] == "kubernetes"
    assert provider_schema["version"] == built_from


@pytest.mark.parametrize("token", sorted(USED_TYPES))
def test_every_input_the_pinned_sdk_sends_is_known_to_the_plugin(provider_schema, token):
    """Every input the pinned SDK can send for a Secret or DeploymentPatch is one the built plugin knows."""
    module, class_name = USED_TYPES[token]
    args = getattr(__import__(module, fromlist=[class_name]), class_name)
    sdk_inputs = set(input_schema(args))
    plugin_inputs = set(provider_schema["resources"][token]["inputProperties"])
    assert sdk_inputs - plugin_inputs == set()
