"""Reading Pulumi.yaml and Pulumi.<stack>.yaml the way the Pulumi CLI does, without the CLI.

The CLI hands a program its stack's config with project defaults applied, every value as a string
(objects and lists as JSON), and the names of the keys that are secrets. `StackConfig` is exactly that,
so the offline recorder feeds the program what `pulumi preview` would, except that `secure:` values stay
encrypted: they become a placeholder that is itself marked secret, and show as [secret].
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

# libyaml's parser where PyYAML has it (its wheels do): the same safe loader and the same values, without
# the pure-Python one's ~25 ms for Pulumi.yaml on every plan
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# What a `secure:` value becomes offline. It is marked secret like the real value would be, so it can
# only ever show as [secret]; tests assert it never appears in clear.
SECURE_PLACEHOLDER = "offline-placeholder-for-a-secure-value"


class StackFileError(Exception):
    """A stack or project file that cannot be read; the message says which and why."""


@dataclass(frozen=True)
class StackConfig:
    """A stack's config as the Pulumi CLI would hand it to the program."""

    project: str
    stack: str
    values: dict[str, str]  #: full key ("ceres-mail:domain") -> string value
    secret_keys: tuple[str, ...]  #: full keys whose values are secrets
    stack_keys: tuple[str, ...]  #: keys of the project namespace that the stack file itself sets

    def with_secrets(self, secrets: Mapping[str, str]) -> "StackConfig":
        """This config with `secrets` ({full key: value}) as the CLI hands `secure:` values over once
        decrypted, which the offline reader itself cannot do (the tests give real secrets this way)."""
        if not secrets:
            return self
        return replace(self, values=dict(sorted({**self.values, **secrets}.items())),
                       secret_keys=tuple(sorted({*self.secret_keys, *secrets})))


def _as_config_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_SafeLoader)


def load_project(project_dir: Path) -> dict[str, Any]:
    path = project_dir / "Pulumi.yaml"
    try:
        return _load_yaml(path.read_text())
    except OSError as error:
        raise StackFileError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise StackFileError(f"{path.name} is not valid YAML: {error}") from None


def stack_names(project_dir: Path) -> list[str]:
    """Stacks that have a Pulumi.<stack>.yaml next to Pulumi.yaml."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))


def load_stack(project_dir: Path, stack: str) -> StackConfig:
    project = load_project(project_dir)
    name = project["name"]
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = ", ".join(stack_names(project_dir)) or "none"
        raise StackFileError(f"no stack file {path.name} for stack {stack!r} (stacks here: {known})")
    try:
        stack_file = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise StackFileError(f"{path.name} is not valid YAML: {error}") from None

    values: dict[str, str] = {}
    secret_keys: list[str] = []
    # Project-level defaults first (as the CLI applies them), then the stack's own values.
    for key, declaration in (project.get("config") or {}).items():
        full_key = key if ":" in key else f"{name}:{key}"
        if isinstance(declaration, dict) and "default" in declaration:
            values[full_key] = _as_config_string(declaration["default"])
    stack_keys: list[str] = []
    # A secret in clear is not marked secret here, like any plain value: the settings refuse it
    # (components.settings.clear_secrets), declared in Pulumi.yaml or not, before anything shows a value.
    for full_key, value in (stack_file.get("config") or {}).items():
        if full_key.startswith(f"{name}:"):
            stack_keys.append(full_key.split(":", 1)[1])
        if isinstance(value, dict) and set(value) == {"secure"}:
            values[full_key] = SECURE_PLACEHOLDER
            secret_keys.append(full_key)
        else:
            values[full_key] = _as_config_string(value)
    return StackConfig(
        project=name,
        stack=stack,
        values=dict(sorted(values.items())),
        secret_keys=tuple(sorted(secret_keys)),
        stack_keys=tuple(sorted(stack_keys)),
    )
