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


def test_a_plan_that_fails_its_policy_is_still_commented_then_fails_the_job(tmp_path):
    """The plans step runs as GitHub runs it (`bash -e`), with a mailctl whose --diff exits 1 (a mandatory
    violation): the comment is written in full, the status is handed on, and the last step fails on it."""
    steps = workflow("pull-request.yml")["jobs"]["plan-diff"]["steps"]
    plans = next(s for s in steps if s.get("id") == "plans")
    for tree in ("base", "head"):
        (tmp_path / tree / ".venv" / "bin").mkdir(parents=True)
        mailctl = tmp_path / tree / ".venv" / "bin" / "mailctl"
        mailctl.write_text('#!/bin/sh\ncase "$*" in *--diff*) echo "[mandatory] dns-record-not-proxied: ..."; exit 1;; '
                           '*--mermaid*) echo "flowchart LR";; *) echo "{}";; esac\n')
        mailctl.chmod(0o755)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "make").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "make").chmod(0o755)
    output = tmp_path / "github-output"
    result = subprocess.run(["bash", "-e", "-c", plans["run"]], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": f"{fake_bin}:/usr/bin:/bin", "STACK": "prod", "GITHUB_OUTPUT": str(output)})
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "comment.md").read_text()
    assert "[mandatory] dns-record-not-proxied" in comment and "flowchart LR" in comment
    assert output.read_text() == "status=1\n"
    comment_step = next(i for i, s in enumerate(steps) if "gh pr comment" in s.get("run", ""))
    fail_step = next(i for i, s in enumerate(steps) if s.get("if") == "steps.plans.outputs.status != '0'")
    assert comment_step < fail_step and "exit 1" in steps[fail_step]["run"]


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
