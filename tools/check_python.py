"""Refuse an interpreter outside pyproject.toml's requires-python before `make` creates .venv with it.

Run by the interpreter in question (`$(PYTHON) tools/check_python.py`). It uses nothing newer than
Python 3.6 up to the version check, so an old interpreter gets this message rather than a traceback, and
nothing is left behind to break the next try.
"""

import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def supported_range():
    """(lowest, first unsupported) as (major, minor) pairs, from requires-python = ">=3.11,<3.14"."""
    spec = re.search(r'^requires-python\s*=\s*"([^"]+)"', PYPROJECT.read_text(), re.M).group(1)
    lowest = re.search(r">=\s*(\d+)\.(\d+)", spec)
    above = re.search(r"<\s*(\d+)\.(\d+)", spec)
    return spec, (int(lowest.group(1)), int(lowest.group(2))), (int(above.group(1)), int(above.group(2)))


def main():
    spec, lowest, above = supported_range()
    running = sys.version_info[:2]
    if lowest <= running < above:
        return 0
    version = ".".join(str(part) for part in sys.version_info[:3])
    sys.stderr.write(
        "make: {} is Python {}; ceres-mail needs Python {} (pyproject.toml). "
        "Run make with another interpreter, e.g. make plan PYTHON=python3.{}\n".format(
            sys.executable, version, spec, above[1] - 1)
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
