"""Judges of the shell templates under components/builders/shell, shared by the builder tests of both mail
stacks (tests/test_builders.py, tests/test_mailcow.py): shellcheck judges each .sh template as it is on disk
(its preamble says what is set elsewhere), and the variables a rendered script's header sets are compared with
the ones the templates' preambles document. Here, not in a test module, so that no test module imports another.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from components.builders.shell_script import CUT
from tests.conftest import PROJECT_DIR

SHELL_DIR = PROJECT_DIR / "components/builders/shell"


def shell_templates(*folders: str) -> list[str]:
    return sorted(str(path.relative_to(SHELL_DIR)) for folder in folders for path in (SHELL_DIR / folder).glob("*.sh"))


def shellcheck_template(path: str) -> None:
    """shellcheck finds nothing in the template as it is on disk (its preamble says what is set elsewhere)."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make test installs it as root)")
    result = subprocess.run(["shellcheck", "--shell=bash", path], cwd=SHELL_DIR, text=True, capture_output=True)
    assert result.returncode == 0, result.stdout


def header_variables(script: str) -> set[str]:
    """The variables a rendered script's header sets, as bash sees them."""
    header = script.split("\nset -euo pipefail\n", 1)[0]
    names = subprocess.run(["env", "-i", "bash", "--norc", "-c", header + "\ncompgen -v"], capture_output=True, text=True, check=True)
    bare = subprocess.run(["env", "-i", "bash", "--norc", "-c", "true\ncompgen -v"], capture_output=True, text=True, check=True)
    return set(names.stdout.split()) - set(bare.stdout.split())


def documented_variables(*paths: str) -> set[str]:
    """The UPPER_CASE names the templates' preambles mention."""
    return {name for path in paths
            for name in re.findall(r"\b[A-Z][A-Z0-9_]+\b", (SHELL_DIR / path).read_text().split(CUT, 1)[0])}
