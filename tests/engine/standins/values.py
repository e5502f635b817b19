"""Property values as the engine sends them: JSON with markers for secrets and values not yet known."""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable

# The wire's markers, as pulumi.runtime.rpc writes them (tests/engine/test_standins.py holds them to the SDK's).
# Written out rather than imported: a plugin process that imports pulumi.runtime runs the whole SDK's import.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def secret(value: Any) -> dict:
    """A value the engine must keep encrypted (outputs such as a generated password)."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def plain(value: Any) -> Any:
    """The value with every secret marker removed, at any depth (what the cloud is told)."""
    if is_secret(value):
        return plain(value["value"])
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def is_unknown(value: Any) -> bool:
    return value == UNKNOWN or (is_secret(value) and is_unknown(value["value"]))


def _leaves(value: Any, path: str) -> Iterable[tuple[str, Any]]:
    if is_secret(value):
        yield from _leaves(value["value"], path)
    elif isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def changed_paths(olds: dict, news: dict, ignore: Iterable[str] = ()) -> set[str]:
    """Leaf paths (`disks[0].size`) whose value differs; a value not yet known counts as changed."""
    old_leaves, new_leaves = dict(_leaves(olds, "")), dict(_leaves(news, ""))
    changed = {
        path for path in old_leaves.keys() | new_leaves.keys()
        if old_leaves.get(path) != new_leaves.get(path) or is_unknown(new_leaves.get(path))
    }
    return {path for path in changed if not matches(path, ignore)}


def matches(path: str, patterns: Iterable[str]) -> bool:
    """True when `path` is one of `patterns` or lies under one (`disks[*].importFrom`, `*` for all)."""
    return any(
        fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + ".*")
        or fnmatch.fnmatchcase(path, pattern + "[*")
        for pattern in (p.replace("[*]", "[[]*[]]") if "[*]" in p else p for p in patterns)
    )


def with_unknowns(properties: dict, names: Iterable[str]) -> dict:
    """A preview's outputs: the inputs as given, each computed output not yet known."""
    return {**properties, **{name: UNKNOWN for name in names if name not in properties}}
