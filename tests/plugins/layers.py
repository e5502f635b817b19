"""pytest plugin: every test's layer and world, for the time report, `make test-fast` and pytest's workers.

A layer is what a test needs to run (docs/testing.md):

    offline   the program, builders, settings, policy and mailctl: Python alone
    judges    third-party validators on what the builders render (shellcheck, named-checkzone, ...)
    machine   root on this machine (namespaces, mounts, daemons on loopback), no booted world
    hosts     a booted world of the test internet: Debian hosts that the stack's own commands install
    engine    the real Pulumi CLI and engine (tests/engine)
    e2e       `pulumi up` of the whole graph into the test internet (tests/e2e)

A world is what one group of tests shares and builds once: the session's test internet (`mailnet`), the
end-to-end world, the engine's k3s, or a module's own world. Each world's tests go to one pytest worker
(pytest-xdist's `loadgroup`), in file order, so a world is built once per run while independent worlds
run side by side. A test of the offline, judges or machine layer is its module's own small world.

The layer and the world are written into pytest's JUnit XML (as properties), where tools/run_tests.py
reads them for its time report; `--layers offline,judges` keeps only those layers (`make test-fast`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

LAYERS = ("offline", "judges", "machine", "hosts", "engine", "e2e")
TESTS_DIR = Path(__file__).resolve().parent.parent
#: session-scoped worlds: the tests that use one of these fixtures are one world, whichever module they are in
#: (today the `mailnet` fixture's tests are one module, tests/test_mail_host.py, the world's scenario)
SHARED_WORLDS = ("mailnet",)


def layer_of(item: pytest.Item) -> str:
    """The layer of a collected test (see the module docstring)."""
    parts = Path(item.path).relative_to(TESTS_DIR).parts
    if parts[0] in ("engine", "e2e"):
        return parts[0]
    for marker, layer in (("slow", "hosts"), ("root", "machine"), ("judge", "judges")):
        if item.get_closest_marker(marker):
            return layer
    return "offline"


def world_of(item: pytest.Item, layer: str) -> str:
    """The world a test belongs to: its layer's for the engine and e2e layers, a shared session world
    when it uses one, else its module's."""
    if layer in ("engine", "e2e"):
        return layer
    shared = [name for name in SHARED_WORLDS if name in getattr(item, "fixturenames", ())]
    if shared:
        return shared[0]
    return Path(item.path).relative_to(TESTS_DIR).with_suffix("").as_posix()


def pytest_addoption(parser):
    parser.addoption("--layers", default="", metavar="A,B",
                     help=f"run only the tests of these layers (of {', '.join(LAYERS)})")


def pytest_configure(config):
    wanted = [name for name in config.getoption("--layers").split(",") if name]
    unknown = sorted(set(wanted) - set(LAYERS))
    if unknown:
        raise pytest.UsageError(f"--layers: unknown layer(s) {', '.join(unknown)}; the layers are {', '.join(LAYERS)}")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's worker reads the xdist_group markers
def pytest_collection_modifyitems(config, items):
    wanted = {name for name in config.getoption("--layers").split(",") if name}
    kept, dropped = [], []
    for item in items:
        layer = layer_of(item)
        world = world_of(item, layer)
        item.user_properties += [("layer", layer), ("world", world)]
        item.add_marker(pytest.mark.xdist_group(world))
        (kept if not wanted or layer in wanted else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
