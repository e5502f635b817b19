"""pytest fixtures of the test network: one apt proxy and one TestNet per session.

Use them by importing into a test module (`from tests.testnet.fixtures import apt_proxy, testnet`) or by
listing "tests.testnet.fixtures" in conftest.py's pytest_plugins. Mark such tests `pytest.mark.slow`.
Hosts added to the session's `testnet` live until the session ends unless a test removes them with
`testnet.remove_host(name)`; host names must be unique within the session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator

import pytest

from tests.testnet.aptproxy import ACNG, AptProxy, joined
from tests.testnet.network import TestNet

TOOLS = ("mmdebstrap", "ip", "nsenter", "unshare", "mount")


def require_testnet() -> None:
    """Skip (CI fails on skips) unless this machine can run the test network."""
    if os.geteuid() != 0:
        pytest.skip("the test network needs root (namespaces, mounts, links)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not os.access(ACNG, os.X_OK):
        missing.append("apt-cacher-ng")
    if missing:
        pytest.skip(f"missing {missing} (make test installs them as root: tests/system-packages.txt)")


@contextlib.contextmanager
def open_testnet(**proxy_options) -> Iterator[TestNet]:
    """A TestNet on the run's apt proxy (or, given `proxy_options`, on an AptProxy(**proxy_options) of its
    own), cleaned up on exit, also when SIGTERM ends the run."""
    proxy_context = AptProxy(**proxy_options) if proxy_options else joined()
    with _sigterm_as_interrupt(), proxy_context as proxy, TestNet(apt_proxy=proxy) as net:
        yield net


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so the finalizers still run (pytest runs them on interrupts)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:  # someone else handles it: leave theirs
        yield
        return
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def testnet() -> Iterator[TestNet]:
    """The session's test network; `testnet.apt_proxy` serves apt to its SystemHosts."""
    require_testnet()
    with open_testnet() as net:
        yield net


@pytest.fixture(scope="session")
def apt_proxy(testnet) -> AptProxy:
    return testnet.apt_proxy
