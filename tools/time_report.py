"""The time report `make test` ends with: wall time per layer and per world, read from pytest's JUnit XML.

Each test case in the XML carries its layer and world as properties (tests/plugins/layers.py) and its time
(setup, call and teardown: a world's boot is charged to its first test). A world runs in one pytest
worker, so the sum of its tests' times is its wall time; a layer's worlds run side by side, so its sum is
work done, not elapsed time. The run's own elapsed time is given apart, with what came before pytest.

    python tools/time_report.py REPORT.xml      # print the tables for a saved report
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

LAYER_ORDER = ("offline", "judges", "machine", "hosts", "engine", "e2e")


@dataclass
class Tally:
    tests: int = 0
    seconds: float = 0.0
    failed: int = 0
    worlds: set[str] = field(default_factory=set)


def read(report: Path) -> tuple[dict[str, Tally], dict[str, Tally]]:
    """(per layer, per world) tallies of the test cases in a JUnit XML report."""
    layers: dict[str, Tally] = defaultdict(Tally)
    worlds: dict[str, Tally] = defaultdict(Tally)
    for case in ET.parse(report).getroot().iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        layer, world = properties.get("layer", "?"), properties.get("world", "?")
        seconds = float(case.get("time") or 0)
        failed = any(case.find(tag) is not None for tag in ("failure", "error"))
        for tally in (layers[layer], worlds[f"{layer}: {world}"]):
            tally.tests += 1
            tally.seconds += seconds
            tally.failed += failed
        layers[layer].worlds.add(world)
    return dict(layers), dict(worlds)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def render(report: Path, phases: dict[str, float] | None = None, slowest_worlds: int = 12) -> str:
    """The tables, as text: the phases of the run (name -> seconds), the layers, the slowest worlds."""
    layers, worlds = read(report)
    lines = []
    if phases:
        lines += ["time per phase (elapsed)"]
        lines += [f"  {name:<44} {minutes(seconds):>7}" for name, seconds in phases.items()]
    lines += ["", "time per layer (the sum of its tests; its worlds run side by side)",
              f"  {'layer':<10} {'worlds':>6} {'tests':>6} {'failed':>6} {'time':>7}"]
    ordered = sorted(layers, key=lambda name: (LAYER_ORDER.index(name) if name in LAYER_ORDER else 99, name))
    for name in ordered:
        tally = layers[name]
        lines.append(f"  {name:<10} {len(tally.worlds):>6} {tally.tests:>6} {tally.failed:>6} {minutes(tally.seconds):>7}")
    total = sum(t.seconds for t in layers.values())
    lines.append(f"  {'all':<10} {sum(len(t.worlds) for t in layers.values()):>6} "
                 f"{sum(t.tests for t in layers.values()):>6} {sum(t.failed for t in layers.values()):>6} "
                 f"{minutes(total):>7}")
    lines += ["", f"time per world, slowest {slowest_worlds} (each runs in one worker: its wall time)",
              f"  {'world':<44} {'tests':>6} {'time':>7}"]
    for name, tally in sorted(worlds.items(), key=lambda kv: -kv[1].seconds)[:slowest_worlds]:
        lines.append(f"  {name:<44} {tally.tests:>6} {minutes(tally.seconds):>7}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} REPORT.xml")
    sys.stdout.write(render(Path(sys.argv[1])))
