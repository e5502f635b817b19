"""The engine's side of a stand-in plugin: the ResourceProvider gRPC service, for any `StandIn`.

A plugin is a process the engine starts as `pulumi-resource-<name> <engine address>`; it prints the port
it serves on, then answers Check, Diff, Create, Read, Update and Delete. Everything provider-specific
(what a resource computes, what replaces it, what the cloud holds) lives in the `StandIn` the process
serves; this module only translates between the protocol and plain Python values.
"""

from __future__ import annotations

import json
from concurrent import futures

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import plugin_pb2, provider_pb2, provider_pb2_grpc

from tests.engine.standins.model import StandIn, StandInError
from tests.engine.standins.values import UNKNOWN, changed_paths, plain, with_unknowns

DiffResponse = provider_pb2.DiffResponse
PropertyDiff = provider_pb2.PropertyDiff


def _from_struct(struct: struct_pb2.Struct) -> dict:
    """Wire properties as plain JSON values (secrets and unknowns keep their wire markers)."""
    return _integers(json_format.MessageToDict(struct)) if struct is not None else {}


def _integers(value):
    # Struct numbers are doubles; the SDKs' integer properties (ports, sizes, ids) read back as ints.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integers(item) for item in value]
    return value


def _to_struct(value: dict) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(value)))
    return struct


class _Service(provider_pb2_grpc.ResourceProviderServicer):
    def __init__(self, standin: StandIn):
        self.standin = standin

    def _abort(self, context, error: Exception):
        context.abort(grpc.StatusCode.UNKNOWN, f"{self.standin.name} (stand-in): {error}")

    # --- plugin and provider configuration ------------------------------------------------------------

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=self.standin.version)

    def GetSchema(self, request, context):
        return provider_pb2.GetSchemaResponse(schema=json.dumps({"name": self.standin.name, "version": self.standin.version}))

    def CheckConfig(self, request, context):
        news = _from_struct(request.news)
        failures = [provider_pb2.CheckFailure(property=path, reason=reason)
                    for path, reason in self.standin.check_config(news)]
        return provider_pb2.CheckResponse(inputs=request.news, failures=failures)

    def DiffConfig(self, request, context):
        olds, news = _from_struct(request.old_inputs or request.olds), _from_struct(request.news)
        # A provider whose configuration changes is reconfigured, never replaced: replacing it would replace
        # every resource it manages.
        changed = sorted(changed_paths(olds, news, ignore=("version",)))
        return DiffResponse(changes=DiffResponse.DIFF_SOME if changed else DiffResponse.DIFF_NONE, diffs=changed)

    def Configure(self, request, context):
        # the provider's own configuration (a URL, credentials): the stand-ins that call an API log in with it
        self.standin.config = plain(_from_struct(request.args)) if request.HasField("args") else {
            key.rsplit(":", 1)[-1]: value for key, value in request.variables.items()}
        return provider_pb2.ConfigureResponse(acceptSecrets=True, supportsPreview=True, acceptResources=True)

    def Cancel(self, request, context):
        return empty_pb2.Empty()

    def GetMapping(self, request, context):
        return provider_pb2.GetMappingResponse()

    # --- resources ------------------------------------------------------------------------------------

    def Check(self, request, context):
        try:
            inputs, failures = self.standin.check(request.type, _from_struct(request.news))
        except StandInError as error:
            self._abort(context, error)
        return provider_pb2.CheckResponse(
            inputs=_to_struct(inputs),
            failures=[provider_pb2.CheckFailure(property=path, reason=reason) for path, reason in failures],
        )

    def Diff(self, request, context):
        olds = _from_struct(request.old_inputs) or _from_struct(request.olds)
        news = _from_struct(request.news)
        changed, replaces = self.standin.diff(request.type, olds, news, tuple(request.ignoreChanges))
        if not changed:
            return DiffResponse(changes=DiffResponse.DIFF_NONE)
        detailed = {
            path: PropertyDiff(kind=PropertyDiff.UPDATE_REPLACE if path in replaces else PropertyDiff.UPDATE, inputDiff=True)
            for path in changed
        }
        return DiffResponse(
            changes=DiffResponse.DIFF_SOME,
            diffs=sorted({path.split(".", 1)[0].split("[", 1)[0] for path in changed}),
            replaces=sorted({path.split(".", 1)[0].split("[", 1)[0] for path in replaces}),
            detailedDiff=detailed,
            hasDetailedDiff=True,
        )

    def Create(self, request, context):
        inputs = _from_struct(request.properties)
        try:
            if request.preview:
                return provider_pb2.CreateResponse(
                    properties=_to_struct(with_unknowns(inputs, self.standin.kind(request.type).computed)))
            resource_id, outputs = self.standin.create(request.type, request.urn, inputs)
        except StandInError as error:
            self._abort(context, error)
        return provider_pb2.CreateResponse(id=resource_id, properties=_to_struct(outputs))

    def Read(self, request, context):
        try:
            found = self.standin.read(request.type, request.id, _from_struct(request.properties),
                                       _from_struct(request.inputs))
        except StandInError as error:
            self._abort(context, error)
        if found is None:
            return provider_pb2.ReadResponse()  # gone from the cloud: the engine drops it from the state
        outputs, inputs = found
        return provider_pb2.ReadResponse(id=request.id, properties=_to_struct(outputs), inputs=_to_struct(inputs))

    def Update(self, request, context):
        olds, news = _from_struct(request.olds), _from_struct(request.news)
        try:
            if request.preview:
                # what the update computes again is not known until it ran
                recomputed = {name: UNKNOWN for name in self.standin.kind(request.type).recomputed}
                return provider_pb2.UpdateResponse(properties=_to_struct({**olds, **news, **recomputed}))
            outputs = self.standin.update(request.type, request.urn, request.id, olds, news)
        except StandInError as error:
            self._abort(context, error)
        return provider_pb2.UpdateResponse(properties=_to_struct(outputs))

    def Delete(self, request, context):
        try:
            self.standin.delete(request.type, request.id, _from_struct(request.properties), request.urn)
        except StandInError as error:
            self._abort(context, error)
        return empty_pb2.Empty()


def serve(standin: StandIn) -> None:
    """Serve until the engine stops the plugin: the port goes to stdout, as the plugin protocol asks."""
    # The schema the kinds are checked against, before the first call: the engine sends calls in parallel (a
    # refresh reads every resource at once), and threads importing one SDK module at the same time can see it
    # half initialized
    standin.schema
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    provider_pb2_grpc.add_ResourceProviderServicer_to_server(_Service(standin), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()  # the engine kills the plugin when it is done with it

