"""Running the program under the real Pulumi engine: the CLI built by `make engine`, a file backend.

Each test gets an `EngineProject`: a scratch folder with Pulumi.yaml and a copy of a stack file whose
`secure:` values are real secrets (encrypted with a passphrase provider), a file backend, its own
PULUMI_HOME and a "world" folder the stand-in providers keep the cloud in. The program runs inline
through the Automation API (the SDK serves the language runtime itself, since the Python language host's
Go module is not served here); the policy pack runs under the real CrossGuard through `policy_shim`, an
executable the engine starts as an analyzer plugin.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPTS = REPO / "tests" / "engine" / "build"
STANDIN_NAMES = ("random", "tls", "command", "proxmoxve", "cloudflare", "keycloak")
PASSPHRASE = "ceres-mail-engine-tests"  # protects only throwaway test stacks in a temporary folder


def built(script: str) -> Path:
    """The path a build script prints (it builds once per machine; later calls return at once)."""
    result = subprocess.run(["bash", str(BUILD_SCRIPTS / script)], check=True, capture_output=True, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class EngineTools:
    """The binaries `make engine` builds."""

    pulumi: Path
    kubernetes_provider: Path
    k3s: Path

    @classmethod
    def build(cls) -> "EngineTools":
        return cls(built("pulumi-cli.sh"), built("kubernetes-provider.sh"), built("k3s.sh"))


def write_executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def plugin_bin(folder: Path, tools: EngineTools) -> Path:
    """A folder for PATH holding the CLI, the real kubernetes plugin and the stand-in plugins."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in STANDIN_NAMES:
        write_executable(
            folder / f"pulumi-resource-{name}",
            f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m tests.engine.standins {name} "$@"\n',
        )
    (folder / "pulumi-resource-kubernetes").symlink_to(tools.kubernetes_provider)
    (folder / "pulumi").symlink_to(tools.pulumi)
    return folder


def policy_shim(folder: Path) -> Path:
    """The project's policy pack as an executable analyzer plugin (the engine passes its address as $1).

    Users with a normal Pulumi install pass the folder (`--policy-pack policy`); the folder form needs the
    Python language host, which cannot be built here, so the tests start the same pack directly."""
    pack = REPO / "policy"
    return write_executable(
        folder / "ceres-mail-policy-pack",
        f'#!/bin/sh\ncd "{pack}"\nexec "{sys.executable}" -u -m pulumi.policy "$1" "{pack}"\n',
    )


class EngineProject:
    """One scratch project: Pulumi.yaml, stack files with real secrets, a file backend, a world."""

    def __init__(self, root: Path, tools: EngineTools, kubeconfig: str = ""):
        self.root = root
        self.work_dir = root / "project"
        self.world = root / "world"
        self.kubeconfig = kubeconfig
        self.tools = tools
        self.secret_values: dict[str, str] = {}  #: config key -> the secret it was given (never printed)
        for folder in (self.work_dir, self.world, root / "state", root / "home"):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "Pulumi.yaml", self.work_dir / "Pulumi.yaml")
        bin_dir = plugin_bin(root / "bin", tools)
        self.policy_pack = str(policy_shim(root / "bin"))
        self.env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PULUMI_BACKEND_URL": f"file://{root / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_HOME": str(root / "home"),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "CERES_STANDIN_WORLD": str(self.world),
        }

    def stack(self, name: str, source: str | None = None, config: dict[str, Any] | None = None,
              secret_config: dict[str, str] | None = None, transforms: tuple[Callable, ...] = ()):
        """Create stack `name` from the repository's Pulumi.<source>.yaml (default: the same name).

        `config` overrides plain keys (None removes one); every `secure:` key of the file gets a fresh
        real secret, `secret_config` chooses some of them. `transforms` (Pulumi resource transforms)
        change what the program registers, to stand for a program someone got wrong."""
        from pulumi import automation

        document = yaml.safe_load((REPO / f"Pulumi.{source or name}.yaml").read_text())
        values = document.get("config") or {}
        secure = sorted(key for key, value in values.items() if isinstance(value, dict) and set(value) == {"secure"})
        plain_values = {key: value for key, value in values.items() if key not in secure}
        for key, value in (config or {}).items():
            full = key if ":" in key else f"ceres-mail:{key}"
            if value is None:
                plain_values.pop(full, None)
            else:
                plain_values[full] = value
        (self.work_dir / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": plain_values}, sort_keys=True))

        chosen = {key if ":" in key else f"ceres-mail:{key}": value for key, value in (secret_config or {}).items()}
        stack = automation.create_stack(
            stack_name=name, project_name="ceres-mail", program=self.program(name, transforms),
            opts=self._workspace_options(),
        )
        secret_values = {key: chosen.get(key) or self._secret_for(key) for key in secure} | chosen
        stack.set_all_config({key: automation.ConfigValue(value, secret=True) for key, value in secret_values.items()})
        self.secret_values.update(secret_values)
        return stack

    def select(self, name: str, transforms: tuple[Callable, ...] = ()):
        """The existing stack `name`, running the program with other transforms (none: the program as is)."""
        from pulumi import automation

        return automation.select_stack(stack_name=name, project_name="ceres-mail",
                                       program=self.program(name, transforms), opts=self._workspace_options())

    def _workspace_options(self):
        from pulumi import automation

        return automation.LocalWorkspaceOptions(
            work_dir=str(self.work_dir),
            env_vars=self.env,
            # the built CLI, by its folder (<root>/bin/pulumi), not whatever `pulumi` PATH holds
            pulumi_command=automation.PulumiCommand(root=str(self.tools.pulumi.parent.parent)),
        )

    def _secret_for(self, key: str) -> str:
        if key.endswith(":kubeconfig") and self.kubeconfig:
            return self.kubeconfig
        return secrets.token_urlsafe(24)

    def program(self, name: str, transforms: tuple[Callable, ...] = ()) -> Callable[[], None]:
        work_dir = self.work_dir

        def run() -> None:
            import pulumi

            from components import program
            from mailctl.stackfile import load_stack

            for transform in transforms:
                pulumi.runtime.register_resource_transform(transform)
            program.run(load_stack(work_dir, name).stack_keys)

        return run

    def export(self, stack) -> dict:
        """The stack's state as `pulumi stack export` gives it, secrets encrypted (the Automation API's
        export_stack adds --show-secrets, which is not what is stored)."""
        return json.loads(self.cli("stack", "export", "--stack", stack.name).stdout)["deployment"]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The built CLI run in this project with its backend, for what the Automation API does not offer."""
        return subprocess.run([str(self.tools.pulumi), *args, "--cwd", str(self.work_dir)], env={**os.environ, **self.env},
                              capture_output=True, text=True, check=check)

    def world_items(self, provider: str, type_name: str) -> dict[str, dict]:
        folder = self.world / provider / type_name
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


# --- what one engine operation did ----------------------------------------------------------------------


@dataclass
class EngineRun:
    """One preview or up: did it succeed, what it printed, the engine's events and step states."""

    ok: bool
    output: str
    events: list
    steps: list[dict]

    @property
    def violations(self) -> list[dict]:
        """Policy violations as the engine reported them: policy, level, urn, message."""
        return sorted(
            ({"policy": e.policy_event.policy_name, "level": e.policy_event.enforcement_level,
              "urn": e.policy_event.resource_urn or "", "message": e.policy_event.message}
             for e in self.events if e.policy_event),
            key=lambda v: (v["urn"], v["policy"], v["message"]),
        )

    @property
    def registrations(self) -> dict[str, dict]:
        """URN -> the state the engine planned for it (preview --json's newState)."""
        return {step["urn"]: step.get("newState") or {} for step in self.steps}

    def ops(self) -> dict[str, tuple[str, ...]]:
        """URN -> the steps the engine took for it, in order (create, same, update, replace, import, ...);
        an adopted resource has two: import, then update."""
        ops: dict[str, tuple[str, ...]] = {}
        for event in self.events:
            if event.resource_pre_event:
                metadata = event.resource_pre_event.metadata
                ops[metadata.urn] = (*ops.get(metadata.urn, ()), metadata.op.value)
        return ops

    def changed(self) -> dict[str, tuple[str, ...]]:
        """URN -> steps, for the resources whose steps change something (not only same or read)."""
        return {urn: steps for urn, steps in self.ops().items() if set(steps) - {"same", "read"}}


def run_engine(operation: Callable, json_steps: bool = False, **kwargs) -> EngineRun:
    """Run `stack.preview` or `stack.up` and keep what it said, whether it succeeded or not."""
    from pulumi.automation import CommandError

    events: list = []
    lines: list[str] = []
    if json_steps:
        kwargs["json"] = True
    else:
        kwargs["on_output"] = lines.append
    try:
        result = operation(on_event=events.append, **kwargs)
        ok, output = True, result.stdout
    except CommandError as error:
        ok, output = False, str(error)
    steps = []
    if json_steps and ok:
        steps = json.loads(output).get("steps", [])
    return EngineRun(ok=ok, output=output if json_steps else "\n".join(lines) + output, events=events, steps=steps)
