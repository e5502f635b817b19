"""The CI rules of .ci/run: a skipped test fails the run, and so does a run with no tests."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def suite(pytester, monkeypatch):
    pytester.makepyfile(test_sample="import pytest\ndef test_ok(): pass\ndef test_skip(): pytest.skip('no tool')\n")
    return pytester


def test_skip_fails_the_run_in_ci(suite, monkeypatch):
    """In CI (CERES_MAIL_FAIL_ON_SKIP=1) a skipped test fails the run, saying every test must run."""
    monkeypatch.setenv("CERES_MAIL_FAIL_ON_SKIP", "1")
    result = suite.runpytest("-p", "tests.plugins.no_skips")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*1 test(s) skipped; in CI every test must run*"])


def test_skip_is_only_reported_outside_ci(suite, monkeypatch):
    """Outside CI a skipped test is reported but does not fail the run."""
    monkeypatch.delenv("CERES_MAIL_FAIL_ON_SKIP", raising=False)
    assert suite.runpytest("-p", "tests.plugins.no_skips").ret == 0


def test_no_tests_is_a_failing_exit(pytester):
    """pytest exits 5 when nothing ran; .ci/run (set -e) fails on any non-zero exit."""
    assert pytester.runpytest().ret == pytest.ExitCode.NO_TESTS_COLLECTED != 0


def test_ci_entry_runs_make_test_with_skips_failing(project_dir):
    """The CI entry runs `make test` under strict bash, with a skipped test failing the run."""
    script = (project_dir / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script and "CERES_MAIL_FAIL_ON_SKIP=1" in script and "make test" in script
