"""pytest plugin: every test's layer and world, for the time report, `make test-fast` and pytest's workers.

A layer is what a test needs to run (docs/testing.md):

    offline   the program, builders, settings, policy and mailctl: Python alone
    judges    third-party validators on what the builders render (shellcheck, named-checkzone, ...)
    machine   root on this machine (namespaces, mounts, daemons on loopback), no booted world
    hosts     a booted world of the test internet: Debian hosts that the stack's own commands install
    engine    the real Pulumi CLI and engine (tests/engine)
    e2e       `pulumi up` of the whole graph into the test internet (tests/e2e)

A world is what a scenario module builds once and takes its tests through, in file order: the session's
test internet with the stack's mail host (tests/test_mail_host.py), the directory's host, the gateway's,
the end-to-end world (tests/e2e/test_up.py). pytest's workers take whole modules (pytest-xdist's
`loadfile`), so a world is built once per run while independent worlds run side by side; every other
module is a small world of its own.

The layer and the world are written into pytest's JUnit XML (as properties), where tools/run_tests.py
reads them for its time report; `--layers offline,judges` keeps only those layers (`make test-fast`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

LAYERS = ("offline", "judges", "machine", "hosts", "engine", "e2e")
TESTS_DIR = Path(__file__).resolve().parent.parent


def layer_of(item: pytest.Item) -> str:
    """The layer of a collected test (see the module docstring)."""
    parts = Path(item.path).relative_to(TESTS_DIR).parts
    if parts[0] in ("engine", "e2e"):
        return parts[0]
    for marker, layer in (("slow", "hosts"), ("root", "machine"), ("judge", "judges")):
        if item.get_closest_marker(marker):
            return layer
    return "offline"


def world_of(item: pytest.Item) -> str:
    """The world a test belongs to: its module (tests/ left out, no .py)."""
    return Path(item.path).relative_to(TESTS_DIR).with_suffix("").as_posix()


def pytest_addoption(parser):
    parser.addoption("--layers", default="", metavar="A,B",
                     help=f"run only the tests of these layers (of {', '.join(LAYERS)})")


def pytest_configure(config):
    wanted = [name for name in config.getoption("--layers").split(",") if name]
    unknown = sorted(set(wanted) - set(LAYERS))
    if unknown:
        raise pytest.UsageError(f"--layers: unknown layer(s) {', '.join(unknown)}; the layers are {', '.join(LAYERS)}")


def pytest_collection_modifyitems(config, items):
    wanted = {name for name in config.getoption("--layers").split(",") if name}
    kept, dropped = [], []
    for item in items:
        layer = layer_of(item)
        item.user_properties += [("layer", layer), ("world", world_of(item))]
        (kept if not wanted or layer in wanted else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
