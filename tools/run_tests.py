"""`make test` and `make test-fast`: pytest over every layer, arranged to be fast on a 2-core machine.

- On a cold machine the engine (the Pulumi CLI, the kubernetes provider, k3s: tens of minutes of Go
  builds) builds in the background while the layers that do not need it run; the engine's tests ask the
  same build scripts for the tools and wait on their lock until the build is done.
- One apt proxy for the whole run (as root), which every pytest worker's hosts join, so they all share the
  machine's package cache (tests/testnet/aptproxy.py).
- pytest-xdist workers, each taking whole modules (`loadfile`): a world is one scenario module, so it runs
  on one worker in file order (tests/plugins/layers.py). Modules are handed out in the order given here
  (`--no-loadscope-reorder`, `run_order`): the longest worlds first; on a cold machine the engine's layers
  last, the e2e world first of them, so no worker sits on the build's lock while there is other work. Both run at the same priority: tests run at a
  lower one starved behind the build's compilers until their probes' timeouts failed whole worlds.
- At the end, the time per phase, layer and world (tools/time_report.py), from pytest's JUnit XML.

    python tools/run_tests.py [--workers N] [--fast] [--started EPOCH] [PYTEST ARGS...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.time_report import render  # noqa: E402 (the repo on sys.path first)

REPORT = REPO / ".cache" / "test-report.xml"
ENGINE_BUILD = REPO / "tests" / "engine" / "build" / "all.sh"
#: the longest worlds, longest first (measured), handed out before every other module
LONGEST_WORLDS = ("tests/e2e/test_up.py", "tests/test_mail_host.py", "tests/test_directory_host.py",
                  "tests/engine/test_lifecycle.py", "tests/test_gateway_host.py", "tests/engine/test_kubernetes.py")
ENGINE_LAYERS = ("tests/engine", "tests/e2e")  #: what needs the engine built
ENGINE_WARM_WAIT = 15.0  #: seconds the engine build may take and still count as already built
FAST_LAYERS = "offline,judges"
#: pytest's workers, one world each at a time. Warm, 3 on 2 cores: the worlds wait on boots, apt, ACME and
#: SSH, and with 2 the cores sat idle part of the time (measured on a fresh 2-core machine on 2026-12-07,
#: fresh clones, in the run order above: 9:02 with 3, green; the probes wait for what a loaded machine
#: brings up late). Cold, 2: the engine's build already fills the cores (26:12 measured with 2).
WARM_WORKERS, COLD_WORKERS = 3, 2


def workers(asked: int | None, engine_built: bool) -> int:
    """The workers for this run: as asked (`--workers`, `TEST_WORKERS`), else by whether the engine is built."""
    if asked is not None:
        return asked
    return WARM_WORKERS if engine_built else COLD_WORKERS


class EngineBuild:
    """`make engine` in the background, its progress lines passed on as they come."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.finished: float | None = None
        self.process = subprocess.Popen(["bash", str(ENGINE_BUILD)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self._relay = threading.Thread(target=self._pass_on, daemon=True)
        self._relay.start()

    def _pass_on(self) -> None:
        for line in self.process.stderr:
            print(line.rstrip(), flush=True)
        self.process.wait()
        self.finished = time.monotonic()

    def wait(self, timeout: float | None = None) -> int | None:
        """The build's exit code, once it is done (None if it still runs after `timeout` seconds)."""
        self._relay.join(timeout)
        return None if self._relay.is_alive() else self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self._relay.join(timeout=30)


def test_modules() -> list[str]:
    """Every test module of the suite, sorted."""
    return sorted(str(path.relative_to(REPO)) for path in (REPO / "tests").rglob("test_*.py"))


def run_order(engine_built: bool) -> list[str]:
    """Every test module, in the order the workers are handed them: the longest worlds first, each worker
    taking the next module when it is done, so the last to finish are short; on a cold machine whatever
    waits on the engine's build goes last, the longest of it (the e2e world) first of those.

    Module files, never folders: pytest collects a folder's modules in its own tree order and takes a file
    named earlier into it (`tests/x.py tests` collects x.py in its name order, not first)."""
    def rank(module: str) -> tuple[bool, int, str]:
        waits = not engine_built and module.startswith(ENGINE_LAYERS)
        place = LONGEST_WORLDS.index(module) if module in LONGEST_WORLDS else len(LONGEST_WORLDS)
        return waits, place, module

    return sorted(test_modules(), key=rank)


def given_paths(extra: list[str]) -> list[str]:
    """The test paths among pytest's arguments (`tests/x.py::test_y` too; not an option's value)."""
    return [a for a in extra if not a.startswith("-") and (REPO / a.split("::", 1)[0]).exists()]


def pytest_argv(args: argparse.Namespace, extra: list[str], engine_built: bool) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "--junitxml", str(REPORT), "-o", "junit_family=xunit1"]
    count = workers(args.workers, engine_built)
    if count > 0:
        argv += ["-n", str(count), "--dist", "loadfile", "--no-loadscope-reorder"]
    if args.fast:
        argv += ["--layers", FAST_LAYERS]
    if not given_paths(extra):  # every layer
        argv += ["tests"] if args.fast else run_order(engine_built)
    return argv + extra


def needs_engine(args: argparse.Namespace, extra: list[str]) -> bool:
    """Whether the run includes the engine's layers: every run without paths but test-fast, or one whose
    paths name them (a run of one host world never waits for an engine build)."""
    paths = given_paths(extra)
    if args.fast:
        return False
    return not paths or any(p.rstrip("/") == "tests" or p.startswith(ENGINE_LAYERS) for p in paths)


def apt_proxy(needed: bool) -> contextlib.AbstractContextManager:
    """The run's apt proxy (as root, for a run that boots hosts); its description goes to the workers."""
    if not needed or os.geteuid() != 0:
        return contextlib.nullcontext()
    from tests.testnet.aptproxy import AptProxy

    return AptProxy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, help=f"pytest-xdist workers (0: one process; default "
                        f"{WARM_WORKERS} once the engine is built, {COLD_WORKERS} while it builds)")
    parser.add_argument("--fast", action="store_true", help=f"only the layers {FAST_LAYERS} (make test-fast)")
    parser.add_argument("--started", type=float, help="when make started (epoch seconds), for the report")
    args, extra = parser.parse_known_args()

    phases: dict[str, float] = {}
    began = time.time()
    if args.started:
        phases["before pytest (venv, Debian packages, wheels, actionlint)"] = began - args.started
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.unlink(missing_ok=True)
    engine = EngineBuild() if needs_engine(args, extra) else None
    code = 1
    try:
        with apt_proxy(needed=not args.fast) as proxy:
            env = dict(os.environ)
            if proxy is not None:
                env["CERES_MAIL_APT_PROXY"] = proxy.description()
            engine_built = engine is not None and engine.wait(ENGINE_WARM_WAIT) == 0
            if engine is not None and not engine_built:
                print("run_tests: the engine builds in the background; its layers run last", flush=True)
            argv = pytest_argv(args, extra, engine_built)
            print(f"run_tests: {' '.join(argv[1:])}", flush=True)
            code = subprocess.run(argv, cwd=REPO, env=env).returncode
        phases["pytest"] = time.time() - began
        if engine is not None:
            if engine.wait() != 0 and code == 0:
                print("run_tests: the engine build failed (its last lines are above)", file=sys.stderr)
                code = 1
            phases["engine build (in the background)"] = engine.finished - engine.started
    finally:
        if engine is not None:
            engine.stop()
    phases["in all"] = time.time() - (args.started or began)
    if REPORT.exists():
        print("\n" + render(REPORT, phases), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
