"""The cloud behind a stand-in, when there is one: the test internet of the end-to-end layer.

A real provider calls its cloud's API. In the engine layer there is no cloud, and a stand-in keeps its
world as files only. In the end-to-end layer the test session serves the test internet's "cloud API" on a
Unix socket named by CERES_TESTNET_CLOUD (tests/e2e/cloud.py): booting a Debian host for a VM, enforcing
its firewall, serving DNS zones, running a command over SSH, an HTTPS request to the platform's Keycloak.
The protocol is one JSON object per line each way: {"operation", "arguments"} in, {"result"} or
{"error"} out.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from tests.engine.standins.model import StandInError

CLOUD_ENV = "CERES_TESTNET_CLOUD"


def backed() -> bool:
    """True when a test internet stands behind the stand-ins."""
    return bool(os.environ.get(CLOUD_ENV))


def call(operation: str, **arguments: Any) -> Any:
    """Ask the test internet to do `operation`; its refusal becomes the stand-in's (the engine shows it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(os.environ[CLOUD_ENV])
        connection.sendall(json.dumps({"operation": operation, "arguments": arguments}).encode() + b"\n")
        with connection.makefile("rb") as replies:
            line = replies.readline()
    if not line:
        raise StandInError(f"the test internet closed the connection during {operation}")
    reply = json.loads(line)
    if "error" in reply:
        raise StandInError(reply["error"])
    return reply["result"]
