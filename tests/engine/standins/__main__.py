"""`python -m tests.engine.standins NAME ENGINE_ADDRESS`: serve the stand-in plugin NAME to the engine."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Callable

MODULES = {
    "random": "random_passwords",
    "tls": "tls_keys",
    "command": "remote_commands",
    "proxmoxve": "proxmox",
    "cloudflare": "cloudflare_dns",
    "keycloak": "keycloak_realms",
}


def load_protocol_without_the_sdk() -> Callable:
    """protocol.serve, its generated gRPC modules loaded without the SDK around them.

    Importing `pulumi.runtime.proto` the usual way first runs pulumi/__init__.py, the whole SDK: about 0.15 s
    of CPU, in a process that needs only the messages, and the engine starts six plugins for each
    operation, hundreds in a test run. For that import alone, the three packages are bare folders of the
    installed SDK, so only the generated modules run; then they are taken out again, so that a later
    `import pulumi` (a plugin walking its SDK's schema on a cold machine) gets the real package, which
    finds the generated modules already loaded."""
    root = Path(importlib.util.find_spec("pulumi").origin).parent
    stubs = (("pulumi", root), ("pulumi.runtime", root / "runtime"), ("pulumi.runtime.proto", root / "runtime" / "proto"))
    for name, folder in stubs:
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    try:
        from tests.engine.standins.protocol import serve
    finally:
        for name, _ in stubs:
            del sys.modules[name]
    return serve


def main(argv: list[str]) -> None:
    name = argv[1]
    serve = load_protocol_without_the_sdk()
    serve(importlib.import_module(f"tests.engine.standins.{MODULES[name]}").STANDIN)


if __name__ == "__main__":
    main(sys.argv)
