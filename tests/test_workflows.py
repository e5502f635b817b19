"""The GitHub workflows: valid by actionlint, and doing what pull requests and deploys need."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.conftest import PROJECT_DIR

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
ACTIONLINT = PROJECT_DIR / ".cache" / "bin" / "actionlint"


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


@pytest.mark.judge
def test_actionlint_accepts_every_workflow():
    if not ACTIONLINT.exists():
        pytest.skip("actionlint is not built (make test builds it)")
    result = subprocess.run([str(ACTIONLINT), "-color=false", *map(str, sorted(WORKFLOWS.glob("*.yml")))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.judge
def test_actionlint_refuses_a_broken_workflow(tmp_path):
    if not ACTIONLINT.exists():
        pytest.skip("actionlint is not built (make test builds it)")
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n")
    assert subprocess.run([str(ACTIONLINT), str(broken)], capture_output=True).returncode != 0


def test_pull_requests_test_diff_and_preview_every_stack():
    jobs = workflow("pull-request.yml")["jobs"]
    assert any(".ci/run" in step.get("run", "") for step in jobs["test"]["steps"])
    assert jobs["plan-diff"]["strategy"]["matrix"]["stack"] == ["staging", "prod"]
    assert any("--diff base-plan.json" in step.get("run", "") for step in jobs["plan-diff"]["steps"])
    preview = next(s for s in jobs["preview"]["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert preview["with"]["command"] == "preview" and preview["with"]["policyPacks"] == "policy"
    assert preview["with"]["comment-on-pr"] is True


def test_deploys_go_to_staging_then_to_a_protected_prod():
    jobs = workflow("deploy.yml")["jobs"]
    assert jobs["prod"]["needs"] == "staging" and jobs["prod"]["environment"] == "production"
    for job in jobs.values():
        up = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
        assert up["with"]["command"] == "up"


def test_credentials_come_from_the_secret_store_only():
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        for line in text.splitlines():
            if "PULUMI_ACCESS_TOKEN:" in line or "PASSPHRASE:" in line:
                assert "${{ secrets." in line, f"{path.name}: {line.strip()}"
