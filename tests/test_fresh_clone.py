"""The README's first command on a fresh clone: `make plan` builds .venv and prints the prod plan with no
network at all (not even the package registries: pip installs from the wheelhouse `make test` filled),
no credentials and no Pulumi CLI.

It clones the committed HEAD, so it checks what a new operator would get, not the working tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests import machine_cache

pytestmark = pytest.mark.root  # tests/plugins/layers.py: the machine layer

WHEELHOUSE = machine_cache.wheelhouse()
NEEDED = ("git", "make", "unshare")


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing {missing} (make test installs them as root)")
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace without network")
    assert (WHEELHOUSE / ".complete").exists(), "run `make wheelhouse` (make test does) first"
    clone = tmp_path_factory.mktemp("clone") / "ceres-mail"
    subprocess.run(["git", "clone", "--quiet", str(machine_cache.PROJECT_DIR), str(clone)], check=True)
    home = tmp_path_factory.mktemp("home")
    # A bare environment: no PULUMI_*, no cloud tokens, no KUBECONFIG, no pyenv; Debian's python3.
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(WHEELHOUSE),
        "PIP_NO_CACHE_DIR": "1",
    }
    # `unshare --net`: a new network namespace with only a down loopback, so any download would fail.
    result = subprocess.run(
        ["unshare", "--net", "--", "make", "plan"], cwd=clone, env=env, capture_output=True, text=True, timeout=900
    )
    return clone, env, result


def test_make_plan_works_offline_without_credentials(fresh_clone):
    """On a fresh clone, `make plan` prints the prod plan with no network, no credentials and no Pulumi CLI."""
    clone, _, result = fresh_clone
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ceres-mail plan: project ceres-mail, stack prod" in result.stdout
    assert "ceres-mail-vm-vm  proxmoxve:index/vmLegacy:VmLegacy" in result.stdout
    assert "Traceback" not in result.stderr


def test_a_cold_make_plan_shows_its_progress(fresh_clone):
    """The cold install takes a minute or more: pip names each package as it comes, so it never looks stuck."""
    clone, _, result = fresh_clone
    # "Collecting pulumi==…" from an index; "Processing …/pulumi-3….whl" from the wheelhouse used here
    collected = [line for line in result.stdout.splitlines() if line.startswith(("Collecting ", "Processing "))]
    assert any("pulumi==" in line or "/pulumi-" in line for line in collected), result.stdout[:2000]
    assert len(collected) >= 40, "one line per pinned package"


def test_venv_has_the_project_editable_with_mailctl(fresh_clone):
    """The .venv that `make plan` builds runs mailctl offline and holds the project editable, so edits take effect."""
    clone, env, _ = fresh_clone
    result = subprocess.run(
        ["unshare", "--net", "--", str(clone / ".venv/bin/mailctl"), "plan", "--stack", "staging", "--json"],
        cwd="/", env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stack"] == "staging"
    link = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", "import components; print(components.__file__)"],
        cwd="/", env=env, capture_output=True, text=True, check=True,
    )
    assert link.stdout.startswith(str(clone)), "the project is installed in editable mode"
