"""pytest plugin: with CERES_MAIL_FAIL_ON_SKIP=1 (set by .ci/run) a skipped test fails the session.

In CI a skip means a missing dependency (a Debian package, root), which must be installed, not ignored.
"""

from __future__ import annotations

import os


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CERES_MAIL_FAIL_ON_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.write_line(f"FAIL: {len(skipped)} test(s) skipped; in CI every test must run", red=True)
        session.exitstatus = 1
