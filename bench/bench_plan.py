"""Benchmark `mailctl plan --stack prod` against a bare import of its SDKs.

Most of the plan's wall time is importing the Pulumi provider SDKs, and the
absolute figure depends on the machine (CPU, disk cache, load).  So in the
same run we also time a child that only imports those SDKs and report the
ratio plan / bare-import.  That ratio is about our own overhead (settings,
builders, components, recorder), not the machine.  Runs are interleaved
(A B A B ...) after one untimed warm-up of each, so noise hits both equally.

The bare import loads the same SDK modules the program uses, submodules
included: pulumi-kubernetes loads `core.v1` (every core type, ~0.7 s) only
when a resource class of it is first touched, so `import pulumi_kubernetes`
alone would charge that SDK cost to our code.

This script reports; it does not assert.  Exit code is 0 unless a child
process fails, in which case its stderr is printed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
GOAL_RATIO = 1.3

PLAN_CODE = "import sys; from mailctl.cli import main; sys.exit(main(['plan','--stack','prod']))"
BARE_IMPORT_CODE = (
    "import pulumi, pulumi_proxmoxve, pulumi_proxmoxve.download, pulumi_cloudflare,"
    " pulumi_command.remote, pulumi_kubernetes.core.v1, pulumi_kubernetes.meta.v1,"
    " pulumi_keycloak, pulumi_tls, pulumi_random, pydantic, cryptography"
)
CASES = {"plan": PLAN_CODE, "bare_import": BARE_IMPORT_CODE}


def run_child(code: str) -> tuple[float, float]:
    """Run one fresh child; return (wall seconds, peak RSS in MiB)."""
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
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def summarize(samples: list[tuple[float, float]]) -> dict[str, float]:
    walls = [wall for wall, _ in samples]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "median_rss_mib": statistics.median(rss for _, rss in samples),
    }


def benchmark(runs: int) -> dict:
    for code in CASES.values():  # untimed warm-up (disk cache, .pyc files)
        run_child(code)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for _ in range(runs):
        for name, code in CASES.items():  # interleaved: plan, bare, plan, bare ...
            samples[name].append(run_child(code))
    report = {name: summarize(result) for name, result in samples.items()}
    ratio = report["plan"]["median_s"] / report["bare_import"]["median_s"]
    report.update(runs=runs, ratio=round(ratio, 2), goal=f"ratio <= {GOAL_RATIO}")
    report["goal_met"] = report["ratio"] <= GOAL_RATIO
    return report


def print_text(report: dict) -> None:
    print(f"mailctl plan --stack prod vs bare SDK import, {report['runs']} interleaved runs each")
    for name in CASES:
        s = report[name]
        print(
            f"  {name:<12} median {s['median_s']:.3f}s  min {s['min_s']:.3f}s"
            f"  max {s['max_s']:.3f}s  peak RSS {s['median_rss_mib']:.1f} MiB"
        )
    verdict = "MET" if report["goal_met"] else "NOT MET"
    print(f"  ratio plan/bare_import (median): {report['ratio']:.2f}  goal {report['goal']}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each kind (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    report = benchmark(args.runs)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
