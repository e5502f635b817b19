"""Benchmark `mailctl plan --stack prod` against a bare import of its SDKs.

Most of the plan's wall time is importing the Pulumi provider SDKs, and the
absolute figure depends on the machine (CPU, disk cache, load).  So in the
same run we also time a child that only imports those SDKs and report the
ratios plan / bare-import of wall time and of peak memory.  Those ratios are
about our own overhead (settings, builders, components, recorder), not the
machine.  Runs are interleaved (A B A B ...) after one untimed warm-up of
each, so noise hits both equally.  CPU time (user + system) is shown too: on a
shared machine it moves less with the load than wall time does.

The bare import loads each SDK as far as the plan loads it, no further.  The
SDKs load much of themselves lazily, on first use of a name: pulumi-kubernetes
registers `core.v1` (every core type, ~0.7 s) and pulumi-proxmoxve and
pulumi-command their submodules (`download`, `firewall`, `remote`) as lazy
modules, which an `import` statement does not run (`import
pulumi_proxmoxve.download` finds the lazy module and stops), and `pydantic`
and `cryptography` load their model machinery and their Rust core only when
asked for.  So the baseline imports the names the program uses from them, or
it would charge that SDK cost to our code.  After the timed runs one more run
of each lists, by package, the modules the plan loads and the baseline does
not (what our overhead is made of) and the other way round (should be none).

This script reports; it does not assert.  Exit code is 0 unless a child
process fails, in which case its stderr is printed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
GOAL_RATIO = 1.15  # for wall time and for peak memory

PLAN_CODE = "import sys; from mailctl.cli import main; sys.exit(main(['plan','--stack','prod']))"
BARE_IMPORT_CODE = "\n".join([
    "import pulumi, pulumi_cloudflare, pulumi_keycloak, pulumi_tls, pulumi_random",
    # lazily loaded submodules: importing a name runs them, as the program's first use does
    "from pulumi_proxmoxve import Provider, VmLegacy",
    "from pulumi_proxmoxve.download import File",
    "from pulumi_proxmoxve.firewall import RulesLegacy",
    "from pulumi_command.remote import Command",
    "from pulumi_kubernetes.core.v1 import Secret",
    "from pulumi_kubernetes.meta.v1 import ObjectMetaArgs",
    "from pydantic import BaseModel, EmailStr, Json, TypeAdapter",
    "from cryptography.hazmat.primitives.serialization import load_ssh_public_key",
])
CASES = {"plan": PLAN_CODE, "bare_import": BARE_IMPORT_CODE}
# prepended to a child's code to list the modules it ended with (the plan exits through sys.exit)
LIST_MODULES = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: open({path!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
)


def run_child(code: str) -> tuple[float, float, float]:
    """Run one fresh child; return (wall seconds, CPU seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [str(PYTHON), "-c", code],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stderr = child.stderr.read()  # drain so the child never blocks on a full pipe
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from re-waiting
    child.stderr.close()
    if child.returncode != 0:
        sys.stderr.write(f"child failed (exit {child.returncode}): {code}\n")
        sys.stderr.write(stderr.decode(errors="replace"))
        sys.exit(1)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def summarize(samples: list[tuple[float, float, float]]) -> dict[str, float]:
    walls = [wall for wall, _, _ in samples]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "median_cpu_s": statistics.median(cpu for _, cpu, _ in samples),
        "median_rss_mib": statistics.median(rss for _, _, rss in samples),
    }


def loaded_modules(code: str) -> set[str]:
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "modules.json")
        run_child(LIST_MODULES.format(path=path) + code)
        with open(path) as listing:
            return set(json.load(listing))


def by_package(modules: set[str]) -> dict[str, int]:
    counts = collections.Counter(name.split(".")[0] for name in modules)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def benchmark(runs: int, list_modules: bool = True) -> dict:
    for code in CASES.values():  # untimed warm-up (disk cache, .pyc files)
        run_child(code)
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CASES}
    for _ in range(runs):
        for name, code in CASES.items():  # interleaved: plan, bare, plan, bare ...
            samples[name].append(run_child(code))
    report = {name: summarize(result) for name, result in samples.items()}
    plan, bare = report["plan"], report["bare_import"]
    report.update(
        runs=runs,
        ratio=round(plan["median_s"] / bare["median_s"], 2),
        cpu_ratio=round(plan["median_cpu_s"] / bare["median_cpu_s"], 2),
        rss_ratio=round(plan["median_rss_mib"] / bare["median_rss_mib"], 2),
        goal=f"ratio <= {GOAL_RATIO} and rss_ratio <= {GOAL_RATIO}",
    )
    report["goal_met"] = report["ratio"] <= GOAL_RATIO and report["rss_ratio"] <= GOAL_RATIO
    if list_modules:
        plan_modules, bare_modules = loaded_modules(PLAN_CODE), loaded_modules(BARE_IMPORT_CODE)
        report["modules"] = {
            "plan_only": by_package(plan_modules - bare_modules),
            "bare_only": by_package(bare_modules - plan_modules),
        }
    return report


def print_text(report: dict) -> None:
    print(f"mailctl plan --stack prod vs bare SDK import, {report['runs']} interleaved runs each")
    for name in CASES:
        s = report[name]
        print(
            f"  {name:<12} median {s['median_s']:.3f}s  min {s['min_s']:.3f}s  max {s['max_s']:.3f}s"
            f"  cpu {s['median_cpu_s']:.3f}s  peak RSS {s['median_rss_mib']:.1f} MiB"
        )
    verdict = "MET" if report["goal_met"] else "NOT MET"
    print(f"  ratio plan/bare_import (median): time {report['ratio']:.2f}  peak RSS {report['rss_ratio']:.2f}"
          f"  (cpu {report['cpu_ratio']:.2f})  goal {report['goal']}: {verdict}")
    if "modules" in report:
        for key, label in (("plan_only", "loaded by the plan only"), ("bare_only", "loaded by the baseline only")):
            packages = report["modules"][key]
            listed = ", ".join(f"{name} {count}" for name, count in packages.items()) or "none"
            print(f"  modules {label}: {sum(packages.values())} ({listed})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each kind (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--no-modules", action="store_true", help="skip the listing of the modules each loads")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    report = benchmark(args.runs, list_modules=not args.no_modules)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
