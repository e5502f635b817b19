"""The recorder: the Pulumi program run against a recording mock engine, giving a Plan offline.

Pulumi's Python SDK can run a program against mocks (`pulumi.runtime.set_mocks`). The recording monitor
below keeps every registration the program makes — type, name, parent, dependencies, inputs as the SDK
serialised them (so secrets and unknowns are still marked), options — and turns it into a `Plan` with no
cloud, credentials or Pulumi CLI. `mailctl plan`, the policy pack and the graph tests all use it.

Secrets are redacted at the moment they are recorded: a secret value never enters a Plan at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import threading
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

from google.protobuf import json_format

from mailctl.plan import Plan, PlannedResource, SECRET, UNKNOWN_TEXT
from mailctl.stackfile import StackConfig, load_stack
from policy.rules import evaluate

STACK_TYPE = "pulumi:pulumi:Stack"


def _redact(value: Any) -> Any:
    """Turn a serialised property value into plan form: secrets -> [secret], unknowns -> marker,
    resource references -> their URN, assets -> a description."""
    from pulumi.runtime import rpc

    if isinstance(value, str):
        return UNKNOWN_TEXT if value == rpc.UNKNOWN else value
    if isinstance(value, list):
        return [_redact(item) for item in value]
    if isinstance(value, dict):
        signature = value.get(rpc._special_sig_key)
        if signature == rpc._special_secret_sig:
            return SECRET
        if signature == rpc._special_resource_sig:
            return value.get("urn", UNKNOWN_TEXT)
        if signature in (rpc._special_asset_sig, rpc._special_archive_sig):
            return {"asset": value.get("path") or value.get("uri") or "(inline text)"}
        return {key: _redact(item) for key, item in sorted(value.items())}
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Struct numbers are doubles; ports and sizes read better as ints
    return value


def _unwrap_secrets(value: Any) -> Any:
    """Deserialised inputs with every secret wrapper (at any depth) replaced by its value."""
    from pulumi.runtime import rpc

    if rpc.is_rpc_secret(value):
        return _unwrap_secrets(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {key: _unwrap_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(item) for item in value]
    return value


def _close_worker_loop() -> None:
    """Close the event loop the SDK's mock made for this worker thread, if it made one.

    The SDK registers resources from executor threads, and its mock monitor runs coroutines there on a
    loop of the thread's own that nobody closes; Python 3.12 reports such a loop when the garbage collector
    finds it at exit ("Invalid file descriptor: -1"), which an operator would read as a crash."""
    if threading.current_thread() is threading.main_thread():
        return
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return  # none was made
    if not loop.is_running():
        loop.close()
        asyncio.set_event_loop(None)


@contextlib.contextmanager
def _no_source_positions():
    """Register without the source position of each resource, which a recording never keeps.

    The engine shows a resource's source position in its diagnostics; the SDK finds it for every
    registration by extracting the whole Python stack with its source lines, and to give those lines
    linecache reads every file on the stack in full, the SDKs' generated modules of thousands of lines
    included (about 15 ms and 2 MiB for the prod stack). Offline nothing reads it, so the SDK is handed
    the empty trace it sends itself when it finds no frame of the program's; the Plan is the same."""
    from pulumi.runtime import resource as runtime_resource

    original = getattr(runtime_resource, "_get_stack_trace", None)
    if original is None:  # an SDK without it: nothing to skip
        yield
        return
    runtime_resource._get_stack_trace = runtime_resource.source_pb2.StackTrace
    try:
        yield
    finally:
        runtime_resource._get_stack_trace = original


def _struct_to_plan(struct) -> dict[str, Any]:
    return _redact(json_format.MessageToDict(struct, preserving_proto_field_name=True))


@dataclass
class _Recording:
    resources: list[PlannedResource] = field(default_factory=list)
    stack_urn: str = ""


RawInputsHook = Callable[[str, str, dict[str, Any]], None]


def _make_monitor(mocks, recording: _Recording, raw_inputs_hook: RawInputsHook | None):
    from pulumi.runtime import rpc
    from pulumi.runtime.mocks import MockMonitor

    class RecordingMonitor(MockMonitor):
        """A MockMonitor that records each registration and behaves like the engine where it matters:
        URNs as the engine builds them, additionalSecretOutputs wrapped as secrets."""

        def make_urn(self, parent: str, type_: str, name: str) -> str:
            # As the engine builds it: the qualified type is the parent's whole qualified type, then this
            # type ("Platform$mail:Dns$…DnsRecord"); the root Stack is left out. The SDK's mock keeps only
            # the parent's own type, which gives other URNs than a real preview from the third level on.
            if parent and parent != recording.stack_urn:
                type_ = parent.split("::")[2] + "$" + type_
            return super().make_urn("", type_, name)

        def RegisterResource(self, request):
            try:
                return self._record(request)
            finally:
                _close_worker_loop()

        def _record(self, request):
            response = super().RegisterResource(request)
            if request.type == STACK_TYPE:
                recording.stack_urn = response.urn
                return response
            if raw_inputs_hook is not None:
                raw_inputs_hook(response.urn, request.type, _unwrap_secrets(rpc.deserialize_properties(request.object)))
            recording.resources.append(_planned(request, response.urn, recording.stack_urn))
            _wrap_secret_outputs(request, response)
            return response

    return RecordingMonitor(mocks)


def _planned(request, urn: str, stack_urn: str | None) -> PlannedResource:
    """A registration as the plan shows it: its inputs redacted, the options that matter to an operator."""
    return PlannedResource(
        urn=urn,
        type=request.type,
        name=request.name,
        parent=None if request.parent in ("", stack_urn) else request.parent,
        custom=bool(request.custom),
        dependencies=sorted(set(request.dependencies)),
        inputs=_struct_to_plan(request.object),
        options={
            "protect": request.protect if request.HasField("protect") else False,
            "retainOnDelete": request.retainOnDelete if request.HasField("retainOnDelete") else False,
            "ignoreChanges": sorted(request.ignoreChanges),
            "importId": request.importId or None,
            # replaced whenever one of these is (a new VM must get its install again)
            "replaceWith": sorted(request.replace_with),
            # the old one goes before the new one comes (a VM's static address holds one host)
            "deleteBeforeReplace": bool(request.deleteBeforeReplace),
            # a provider reference is "<urn>::<id>"; the id is unknown in a preview
            "provider": request.provider.rsplit("::", 1)[0] if request.provider else None,
        },
    )


def _wrap_secret_outputs(request, response) -> None:
    """As the engine does: the outputs a resource declares secret (additionalSecretOutputs) come back
    wrapped as secrets, so the program's Outputs of them are secret too."""
    from pulumi.runtime import rpc
    from pulumi.runtime.sync_await import _sync_await

    secret_outputs = set(request.additionalSecretOutputs)
    if not secret_outputs or response.object is None:
        return
    state = rpc.deserialize_properties(response.object, keep_unknowns=True)
    wrapped = {
        key: {rpc._special_sig_key: rpc._special_secret_sig, "value": value} if key in secret_outputs else value
        for key, value in state.items()
    }
    response.object.CopyFrom(_sync_await(rpc.serialize_properties(wrapped, {})))



def record(
    project_dir: Path,
    stack: str,
    program: Callable[[tuple[str, ...]], Any] | None = None,
    known_outputs: bool = False,
    raw_inputs_hook: RawInputsHook | None = None,
    mock_overrides: dict[str, dict] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> Plan:
    """Run the program of `project_dir` for `stack` offline and return its Plan.

    `known_outputs=False` is a preview: what providers compute is "(known after apply)". With True the
    mocks return realistic computed values (keys, passwords, ids), as after an apply; tests use it to
    prove that known secret values are still redacted.
    `raw_inputs_hook(urn, type, inputs)` sees each resource's inputs BEFORE redaction, secrets included;
    it exists for tests that compare values across resources (e.g. the pinned host key) and must never
    be used to print anything. `mock_overrides` ({resource name: outputs}) fixes what the mock providers
    compute, e.g. a rotated password. `secrets` ({full key: value}) are `secure:` values as the CLI hands
    them over once decrypted: what a stack file holds encrypted, which the recorder itself cannot decrypt.
    Raises SettingsError (bad config) or StackFileError (unreadable stack file).
    """
    config = load_stack(project_dir, stack).with_secrets(secrets or {})
    # A fresh context: the SDK keeps its engine, config and root stack in context variables, so every
    # recording starts clean even when several run in one process (the tests do).
    # Its own event loop too, closed when done: a loop left for the garbage collector can fail noisily at
    # interpreter exit ("Invalid file descriptor: -1"), which an operator would read as a crash.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return contextvars.Context().run(
            _record_in_context, config, program, known_outputs, raw_inputs_hook, mock_overrides
        )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


@contextlib.contextmanager
def _sdk_objects_left_alone():
    """Keep the garbage collector off the ~400,000 objects the imported SDKs hold while the program runs.

    They live as long as the process; a full collection that walks them all (0.2-0.3 s) frees nothing of
    theirs, and the recording's own objects tip the collector into one. Frozen, they are skipped; the
    recording's garbage is still collected, and everything is handed back to the collector afterwards."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _record_in_context(config: StackConfig, program, known_outputs: bool, raw_inputs_hook, mock_overrides) -> Plan:
    import pulumi
    from pulumi.runtime import config as runtime_config, mocks as runtime_mocks, rpc
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from mailctl.mock_outputs import OfflineMocks

    if program is None:
        from components.program import run as program

    runtime_config.set_all_config(config.values, list(config.secret_keys))
    recording = _Recording()
    mocks = OfflineMocks(known_outputs=known_outputs, overrides=mock_overrides)
    runtime_mocks.set_mocks(
        mocks,
        project=config.project,
        stack=config.stack,
        preview=not known_outputs,
        monitor=_make_monitor(mocks, recording, raw_inputs_hook),
    )
    with _no_source_positions(), _sdk_objects_left_alone():
        _sync_await(run_pulumi_func(lambda: program(config.stack_keys)))

    stack = pulumi.runtime.get_root_resource()
    serialized = _sync_await(rpc.serialize_properties(stack.outputs, {})) if stack.outputs else None
    plan = Plan(
        project=config.project,
        stack=config.stack,
        resources=recording.resources,
        outputs=_struct_to_plan(serialized) if serialized is not None else {},
    )
    plan.policy = evaluate(plan.resources, outputs=(plan.stack_urn, plan.outputs))
    return plan
