"""What a stand-in provider is: its resource kinds, the SDK schema they are checked against, its world.

`StandIn` does the work shared by every provider: it refuses properties the pinned SDK does not know,
fills the provider's defaults, diffs into update or replace, and keeps each resource in the "world" (a
folder standing for the cloud: one JSON file per resource, so a later `pulumi up`, refresh or import finds
what an earlier one made). A `Kind` says what is particular to one resource type.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import uuid
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Callable

from tests.engine.standins.values import changed_paths, matches, plain

WORLD_ENV = "CERES_STANDIN_WORLD"


class StandInError(Exception):
    """A request the real provider would refuse; the message reaches the operator through the engine."""


# --- the schema, from the pinned SDK ------------------------------------------------------------------


def sdk_module(token: str):
    """The SDK module that declares a type token: `proxmoxve:firewall/rulesLegacy:RulesLegacy` ->
    pulumi_proxmoxve.firewall; `tls:index/privateKey:PrivateKey` -> pulumi_tls."""
    package, module, _ = token.split(":")
    top = importlib.import_module(f"pulumi_{package}")
    section = module.split("/", 1)[0]
    return top if section == "index" else importlib.import_module(f"pulumi_{package}.{section}")


def _properties(cls) -> dict[str, Any]:
    """Wire name -> getter of every property an SDK class declares."""
    return {
        getattr(member.fget, "_pulumi_name", attribute): member.fget
        for attribute, member in vars(cls).items()
        if isinstance(member, property)
    }


@lru_cache(maxsize=None)
def input_schema(args_class) -> dict[str, tuple]:
    """Wire name -> the nested Args classes its value may hold, for every input of an SDK Args class."""
    module = importlib.import_module(args_class.__module__)
    package = importlib.import_module(args_class.__module__.rsplit(".", 1)[0])
    schema = {}
    for name, getter in _properties(args_class).items():
        annotation = str(getter.__annotations__.get("return", ""))
        nested = []
        for class_name in sorted(set(re.findall(r"\b(\w+Args)\b", annotation))):
            found = getattr(module, class_name, None) or getattr(package, class_name, None)
            if isinstance(found, type):
                nested.append(found)
        schema[name] = tuple(nested)
    return schema


def class_path(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def schema_closure(roots) -> dict[str, dict[str, list[str]]]:
    """Class path -> wire name -> the class paths of the nested Args classes it may hold, for the Args classes
    `roots` and every one they nest, at any depth."""
    closure: dict[str, dict[str, list[str]]] = {}
    pending = list(roots)
    while pending:
        args_class = pending.pop()
        if class_path(args_class) in closure:
            continue
        inputs = input_schema(args_class)
        closure[class_path(args_class)] = {name: [class_path(c) for c in nested] for name, nested in inputs.items()}
        pending.extend(c for nested in inputs.values() for c in nested)
    return closure


@dataclass(frozen=True)
class Schema:
    """The inputs a stand-in checks against, read from the pinned SDK once per machine and SDK version.

    Why a cache: the SDKs are large (pulumi_cloudflare's input classes take seconds of CPU to import), and the
    engine starts every plugin again for each `pulumi` command, so reading them every time cost the engine
    and end-to-end layers minutes. The file lives in the machine cache (tests/machine_cache.py), named by the
    SDK's version and this module's source."""

    inputs: dict[str, dict[str, list[str]]]  #: class path -> wire name -> nested class paths
    resources: dict[str, str]  #: type token -> the class path of its Args
    provider: str  #: the class path of the provider's configuration Args

    def input_names(self, token: str) -> set[str]:
        return set(self.inputs[self.resources[token]])

    def unknown_properties(self, args_path: str, value: Any, path: str = "") -> list[tuple[str, str]]:
        """(path, reason) for each property, at any depth, that the SDK's Args classes do not declare."""
        if not isinstance(value, dict):
            return []
        inputs = self.inputs[args_path]
        failures = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key.startswith("__"):
                continue  # the engine's own bookkeeping (__defaults, __internal)
            if key not in inputs:
                name = args_path.rsplit(":", 1)[1]
                failures.append((where, f"unknown property {where!r}: {name} has no such input"))
                continue
            item = plain(item)
            for nested in inputs[key][:1]:
                # a nested object, or a list of them
                elements = list(enumerate(item)) if isinstance(item, list) else [(None, item)]
                for index, element in elements:
                    failures += self.unknown_properties(nested, element,
                                                        where if index is None else f"{where}[{index}]")
        return failures


def load_schema(package: str, version: str, kinds: dict, provider_args: str) -> Schema:
    """The Schema of `kinds` and the provider's `provider_args` in SDK `package` at `version`: from the machine
    cache, else from the SDK (and then saved there for the next plugin start)."""
    from tests import machine_cache  # the engine starts this module as a plugin: keep its imports few

    cached = machine_cache.root() / "engine" / "standin-schemas" / \
        f"{package}-{version}-{machine_cache.digest(Path(__file__).read_bytes(), *sorted(kinds))}.json"
    if cached.exists():
        return Schema(**json.loads(cached.read_text()))
    provider = getattr(importlib.import_module(package), provider_args)
    resources = {token: kind.sdk_args for token, kind in kinds.items()}
    schema = Schema(schema_closure([provider, *resources.values()]),
                    {token: class_path(args) for token, args in resources.items()}, class_path(provider))
    write_json(cached, vars(schema))  # plugins start side by side
    return schema


def write_json(path: Path, value: dict) -> None:
    """`value` as sorted JSON at `path`, through a temporary name of its own, so a reader never sees half a
    file and two writers side by side never mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True))
    temporary.replace(path)


# --- the world: what the cloud holds ------------------------------------------------------------------


class World:
    """One provider's cloud, as files: <world>/<provider>/<type>/<id>.json holding the resource's
    properties. The tests read it to see what the engine really did (and seed it with what already exists,
    such as CERES's realm)."""

    def __init__(self, provider: str, root: Path | None = None):
        root = root or Path(os.environ.get(WORLD_ENV, ""))
        if not str(root):
            raise StandInError(f"{WORLD_ENV} is not set: the stand-in has no world to keep resources in")
        self.root = root / provider

    def _path(self, token: str, resource_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", resource_id)
        return self.root / token.rsplit(":", 1)[1] / f"{safe}.json"

    def get(self, token: str, resource_id: str) -> dict | None:
        path = self._path(token, resource_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def put(self, token: str, resource_id: str, properties: dict) -> None:
        write_json(self._path(token, resource_id), properties)  # the engine creates resources side by side

    def remove(self, token: str, resource_id: str) -> None:
        self._path(token, resource_id).unlink(missing_ok=True)

    def all(self, token: str) -> dict[str, dict]:
        folder = self.root / token.rsplit(":", 1)[1]
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


# --- kinds and the stand-in -----------------------------------------------------------------------------


Compute = Callable[[dict, "Context"], dict]


@dataclass(frozen=True)
class Context:
    """What a kind's functions may use besides the inputs: the world, the URN, the current outputs."""

    world: World
    urn: str
    token: str
    previous: dict = field(default_factory=dict)  #: the outputs before an update, {} on create


def random_id(inputs: dict, context: Context) -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Kind:
    """One resource type of a stand-in provider."""

    token: str
    defaults: dict = field(default_factory=dict)  #: inputs the real provider fills in when not given
    replace_on: tuple[str, ...] = ()  #: input paths whose change replaces the resource ("*" for all)
    compute: Compute | None = None  #: outputs the real provider computes at create
    recompute: Compute | None = None  #: outputs it computes again on update (default: keep)
    make_id: Callable[[dict, Context], str] = random_id
    create_hook: Callable[[dict, Context], None] | None = None  #: refuses what the cloud would refuse
    computed: tuple[str, ...] = ()  #: names of the computed outputs (unknown in a preview)
    recomputed: tuple[str, ...] = ()  #: the computed outputs an update changes (unknown in its preview)
    #: what the cloud does once the world holds the change ("create", "update" or "delete", the resource's
    #: outputs): in the end-to-end layer it acts on the test internet (boots a host, serves a zone)
    after: Callable[[str, dict, Context], None] | None = None
    #: the resource lives in the stack's state alone, as pulumi-random's do: no cloud holds it, so the world
    #: keeps no copy and a refresh reads back what the state holds (the real provider shares one id, "none",
    #: among all its resources, so a copy keyed by id would mix them up)
    state_only: bool = False
    #: where the cloud files the resource, from its id and outputs (default: its id). Proxmox files a volume
    #: on its node's own storage, so two nodes may each hold `local:iso/<file>`, the same id
    stored_as: Callable[[str, dict], str] | None = None

    def key(self, resource_id: str, properties: dict) -> str:
        """The resource's key in the world."""
        return self.stored_as(resource_id, plain(properties)) if self.stored_as else resource_id

    @property
    def sdk_args(self):
        return getattr(sdk_module(self.token), self.token.rsplit(":", 1)[1] + "Args")


@dataclass
class StandIn:
    """A stand-in provider: its name as the engine knows it, the SDK version it answers for, its kinds."""

    name: str
    kinds: dict[str, Kind]
    provider_args: str = "ProviderArgs"  #: the SDK class that declares the provider's configuration
    config: dict = field(default_factory=dict)  #: the provider's configuration, once the engine configured it

    @property
    def version(self) -> str:
        from importlib.metadata import version

        return version(f"pulumi_{self.name}")

    @cached_property
    def schema(self) -> Schema:
        return load_schema(f"pulumi_{self.name}", self.version, self.kinds, self.provider_args)

    def kind(self, token: str) -> Kind:
        try:
            return self.kinds[token]
        except KeyError:
            raise StandInError(f"resource type {token} is not one this stand-in knows") from None

    @property
    def world(self) -> World:
        return World(self.name)

    def check_config(self, news: dict) -> list[tuple[str, str]]:
        config = {key: value for key, value in news.items() if key not in ("version", "pluginDownloadURL")}
        return self.schema.unknown_properties(self.schema.provider, config)

    def check(self, token: str, news: dict) -> tuple[dict, list[tuple[str, str]]]:
        kind = self.kind(token)
        failures = self.schema.unknown_properties(self.schema.resources[token], news)
        inputs = {**kind.defaults, **{key: value for key, value in news.items() if value is not None}}
        return inputs, failures

    def diff(self, token: str, olds: dict, news: dict, ignore: tuple[str, ...]) -> tuple[set[str], set[str]]:
        kind = self.kind(token)
        old_inputs = {key: value for key, value in olds.items() if not key.startswith("__")}
        new_inputs = {key: value for key, value in news.items() if not key.startswith("__")}
        # the old state holds outputs too: compare only what the program gives as inputs
        input_names = self.schema.input_names(token)
        old_inputs = {key: value for key, value in old_inputs.items() if key in input_names}
        changed = changed_paths(old_inputs, new_inputs, ignore)
        return changed, {path for path in changed if matches(path, kind.replace_on)}

    def create(self, token: str, urn: str, inputs: dict) -> tuple[str, dict]:
        kind = self.kind(token)
        context = Context(self.world, urn, token)
        if kind.create_hook:
            kind.create_hook(plain(inputs), context)
        computed = kind.compute(plain(inputs), context) if kind.compute else {}
        outputs = {**inputs, **computed}
        resource_id = kind.make_id(plain(outputs), context)
        if not kind.state_only:
            context.world.put(token, kind.key(resource_id, outputs), plain(outputs))
        if kind.after:
            kind.after("create", plain(outputs), context)
        return resource_id, outputs

    def read(self, token: str, resource_id: str, properties: dict, inputs: dict | None = None
             ) -> tuple[dict, dict] | None:
        """The resource as the cloud holds it now: (outputs, inputs), or None once it is gone. A refresh
        passes the inputs the state holds: the cloud's current value of each of those, and no more (a value
        the provider chose, such as a VM's id or MAC address, stays an output, as the real providers keep
        it). An import passes none: every input the cloud holds."""
        kind = self.kind(token)  # a type it does not know is refused
        held = properties if kind.state_only else self.world.get(token, kind.key(resource_id, properties))
        if held is None:
            return None
        return held, self.inputs_read_back(token, held, inputs)

    def inputs_read_back(self, token: str, held: dict, inputs: dict | None) -> dict:
        """The inputs a read gives back for what the cloud holds (see read)."""
        if inputs:
            return {key: held.get(key, value) for key, value in inputs.items()}
        input_names = self.schema.input_names(token)
        return {key: value for key, value in held.items() if key in input_names}

    def update(self, token: str, urn: str, resource_id: str, olds: dict, news: dict) -> dict:
        kind = self.kind(token)
        context = Context(self.world, urn, token, previous=plain(olds))
        outputs = {**olds, **news}
        if kind.recompute:
            outputs.update(kind.recompute(plain(outputs), context))
        if not kind.state_only:
            context.world.put(token, kind.key(resource_id, outputs), plain(outputs))
        if kind.after:
            kind.after("update", plain(outputs), context)
        return outputs

    def delete(self, token: str, resource_id: str, properties: dict, urn: str = "") -> None:
        kind = self.kind(token)
        if not kind.state_only:
            self.world.remove(token, kind.key(resource_id, properties))
        if kind.after:
            kind.after("delete", plain(properties), Context(self.world, urn, token, previous=plain(properties)))
