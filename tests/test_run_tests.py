"""The test tooling itself: the order tools/run_tests.py hands modules to pytest's workers, the time report
tools/time_report.py prints from pytest's JUnit XML, the layers tests/plugins/layers.py gives each test,
and the machine cache's keys (tests/machine_cache.py)."""

from __future__ import annotations

import subprocess
import sys

from tests import machine_cache
from tests.conftest import PROJECT_DIR
from tools import run_tests, time_report


def test_the_longest_worlds_go_first_and_on_a_cold_machine_the_engines_layers_last():
    """Warm, the longest worlds start first, longest first; cold, nothing that waits on the engine's build is
    handed out before every other module, the e2e world first of those; no module is left out either way."""
    warm, cold = run_tests.run_order(engine_built=True), run_tests.run_order(engine_built=False)
    modules = sorted(str(p.relative_to(PROJECT_DIR)) for p in (PROJECT_DIR / "tests").rglob("test_*.py"))
    assert sorted(warm) == sorted(cold) == modules and len(set(warm)) == len(warm)
    assert warm[:len(run_tests.LONGEST_WORLDS)] == list(run_tests.LONGEST_WORLDS)
    waiting = [module for module in cold if module.startswith(("tests/engine/", "tests/e2e/"))]
    assert cold[-len(waiting):] == waiting and waiting[0] == "tests/e2e/test_up.py"


def test_the_workers_are_as_asked_else_by_whether_the_engine_is_built():
    """A run uses the workers asked for; if none, the warm count once the engine is built, two while it builds."""
    assert run_tests.workers(None, engine_built=True) == run_tests.WARM_WORKERS
    assert run_tests.workers(None, engine_built=False) == run_tests.COLD_WORKERS == 2
    assert run_tests.workers(0, engine_built=True) == 0 and run_tests.workers(4, engine_built=False) == 4


def test_pytest_collects_the_modules_in_the_order_handed_out():
    """The order is pytest's own collection order, which the workers take modules from: pytest puts a module
    named before its folder back in the folder's order, so an order of folders would be lost silently."""
    order = run_tests.run_order(engine_built=True)
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                *order], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    modules = [line.split("::", 1)[0] for line in collected.stdout.splitlines() if "::" in line]
    assert list(dict.fromkeys(modules)) == order


def test_only_a_run_of_the_engines_layers_builds_the_engine():
    """A run of one host world (the kill test's replay, say) never waits for an engine build; a full run,
    or one naming the engine or e2e layer, does; test-fast never."""
    def args(fast=False):
        return type("Args", (), {"fast": fast})()

    assert run_tests.needs_engine(args(), []) and run_tests.needs_engine(args(), ["-x"])
    assert run_tests.needs_engine(args(), ["tests/e2e/test_up.py", "-k", "relay"])
    assert run_tests.needs_engine(args(), ["tests/"])
    assert not run_tests.needs_engine(args(), ["tests/test_mail_host.py"])
    assert not run_tests.needs_engine(args(fast=True), [])
    assert run_tests.needs_engine(args(), ["-k", "relay"]), "an option's value is no path: every layer runs"
    assert run_tests.given_paths(["-k", "relay", "tests/test_mail_host.py::test_green_on_the_installed_host"]) == [
        "tests/test_mail_host.py::test_green_on_the_installed_host"]


def test_every_named_world_exists():
    """A world renamed without its entry would lose its place at the front, silently."""
    for world in run_tests.LONGEST_WORLDS:
        assert (PROJECT_DIR / world).is_file(), world


REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_mail_host" name="a" time="100.5"><properties>
  <property name="layer" value="hosts"/><property name="world" value="test_mail_host"/></properties></testcase>
<testcase classname="tests.test_mail_host" name="b" time="20"><properties>
  <property name="layer" value="hosts"/><property name="world" value="test_mail_host"/></properties>
  <failure message="x">boom</failure></testcase>
<testcase classname="tests.test_graph" name="c" time="3"><properties>
  <property name="layer" value="offline"/><property name="world" value="test_graph"/></properties></testcase>
<testcase classname="tests.e2e.test_up" name="d" time="600"><properties>
  <property name="layer" value="e2e"/><property name="world" value="e2e/test_up"/></properties></testcase>
</testsuite></testsuites>
"""


def test_the_time_report_sums_each_layer_and_world_from_the_junit_xml(tmp_path):
    """The time report sums tests, time and failures per layer and per world, layers in order, slowest worlds first."""
    report = tmp_path / "report.xml"
    report.write_text(REPORT)
    layers, worlds = time_report.read(report)
    assert (layers["hosts"].tests, layers["hosts"].seconds, layers["hosts"].failed) == (2, 120.5, 1)
    assert worlds["e2e: e2e/test_up"].seconds == 600
    text = time_report.render(report, {"before pytest": 61, "pytest": 700})
    lines = text.splitlines()
    assert "  before pytest" in text and "1:01" in text and "11:40" in text
    order = [line.split()[0] for line in lines if line.startswith("  ") and line.split()[0] in time_report.LAYER_ORDER]
    assert order == ["offline", "hosts", "e2e"], text
    slowest = [line.split()[0] for line in lines[lines.index(next(l for l in lines if l.startswith("time per world"))) + 2:]]
    assert slowest[:2] == ["e2e:", "hosts:"], text


def test_fast_layers_leave_out_every_host_engine_and_e2e_test():
    """`make test-fast`: no test that boots a world, needs root or the engine is collected."""
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "--layers", run_tests.FAST_LAYERS, "tests"],
                               cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert ids and not [i for i in ids if i.startswith(("tests/e2e/", "tests/engine/", "tests/test_mail_host.py",
                                                        "tests/test_directory_host.py", "tests/test_fresh_clone.py"))]


def test_cache_keys_change_with_their_inputs_and_only_then(tmp_path):
    """The same inputs give the same entry in every process; a changed byte, or bytes moved from one input
    to the next, give another."""
    assert machine_cache.digest("ab", "c") == machine_cache.digest("ab", "c")
    assert machine_cache.digest("ab", "c") != machine_cache.digest("a", "bc")
    assert machine_cache.digest("ab", "c") != machine_cache.digest("ab", "d")
    first, second = tmp_path / "one", tmp_path / "two"
    first.write_text("pulumi==3.272.0\n")
    second.write_text("[project]\n")
    key = machine_cache.file_digest(first, second)
    assert key == machine_cache.file_digest(first, second)
    first.write_text("pulumi==3.272.1\n")
    assert machine_cache.file_digest(first, second) != key


def test_the_cache_lives_outside_the_clone_where_the_environment_says(monkeypatch, tmp_path):
    """The machine cache lives at $CERES_MAIL_CACHE, else under $XDG_CACHE_HOME, never inside the clone."""
    monkeypatch.setenv("CERES_MAIL_CACHE", str(tmp_path / "cache"))
    assert machine_cache.root() == tmp_path / "cache"
    assert machine_cache.wheelhouse().parent == tmp_path / "cache" / "wheels"
    monkeypatch.delenv("CERES_MAIL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert machine_cache.root() == tmp_path / "xdg" / "ceres-mail"
    assert PROJECT_DIR not in machine_cache.root().parents


def test_make_and_the_tests_agree_on_the_wheelhouse_and_actionlint():
    """The Makefile asks tests/machine_cache.py for the wheelhouse's key and reads actionlint's version from
    tests/tool-versions.mk, the file the tests read too."""
    printed = subprocess.run(["make", "-s", "-n", "-p", "wheelhouse"], cwd=PROJECT_DIR, capture_output=True, text=True)
    assert f"ACTIONLINT_VERSION := {machine_cache.tool_version('actionlint')}" in printed.stdout
    assert machine_cache.actionlint().parent.name == f"actionlint-{machine_cache.tool_version('actionlint')}"
    key = subprocess.run([sys.executable, "tests/machine_cache.py", "wheel-key"], cwd=PROJECT_DIR,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert key == machine_cache.wheel_key()
