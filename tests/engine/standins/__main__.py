"""`python -m tests.engine.standins NAME ENGINE_ADDRESS`: serve the stand-in plugin NAME to the engine."""

from __future__ import annotations

import importlib
import sys

from tests.engine.standins.protocol import serve

MODULES = {
    "random": "random_passwords",
    "tls": "tls_keys",
    "command": "remote_commands",
    "proxmoxve": "proxmox",
    "cloudflare": "cloudflare_dns",
    "keycloak": "keycloak_realms",
}


def main(argv: list[str]) -> None:
    name = argv[1]
    serve(importlib.import_module(f"tests.engine.standins.{MODULES[name]}").STANDIN)


if __name__ == "__main__":
    main(sys.argv)
