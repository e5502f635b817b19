"""The native mail stack's install commands, run directly over SSH on a real Debian host in the test
internet: what only running them by hand proves (README, Tests).

`pulumi up` of the whole graph, and what the host it builds serves and refuses, is the end-to-end layer
(tests/e2e). Here one session fixture boots a host from the stack's snippets and runs the recorded
commands itself (tests/mailnet/fixtures.py), so the tests can do what an up never does: run the whole
install again on a configured host, and kill it at random moments.
"""

from __future__ import annotations

import os
import random
import subprocess
import time

import pytest

from tests.mailnet.host_checks import CONFIG_FILES, SERVICES
from tests.mailnet.scenario import ADDRESSES, STAGE_ORDER

pytestmark = pytest.mark.slow

MAIL = ADDRESSES["mail"]


def file_hashes(mailnet) -> dict[str, str]:
    return mailnet.file_hashes(CONFIG_FILES)


def effective_config(mailnet) -> dict[str, str]:
    """The configuration in effect: the rendered files byte for byte, Postfix's as `postconf` reads it
    (after an interrupted package configuration main.cf may list the same settings in another order)."""
    state = {path: digest for path, digest in file_hashes(mailnet).items() if path != "/etc/postfix/main.cf"}
    for flag in ("-n", "-M", "-P"):
        state[f"postconf {flag}"] = mailnet.mail.exec(["postconf", flag]).stdout
    return state


def service_starts(mailnet) -> dict[str, str]:
    return mailnet.service_starts(SERVICES)


# --- 1. install, and a re-run that changes nothing --------------------------------------------------


def test_install_succeeds_over_ssh_with_the_pinned_host_key(installed):
    assert [r.returncode for r in installed] == [0] * len(STAGE_ORDER)
    assert "ceres-mail: mail.example.com ready for example.com" in installed[STAGE_ORDER.index("-install-mail")].stdout


def test_ssh_refuses_a_host_key_other_than_the_pinned_one(mailnet, installed):
    """The client trusts only the stack's host key: another key in known_hosts means no connection."""
    wrong = mailnet.workdir / "wrong_known_hosts"
    wrong.write_text(f"{MAIL} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL4YsBWNsiUHJg5MivPSYRsb/FByMtRcqEKNrXyt/h2G\n")
    result = mailnet.ssh("true", extra=("-o", f"UserKnownHostsFile={wrong}"), timeout=60)
    assert result.returncode != 0 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_rerun_changes_no_file_and_restarts_no_service(mailnet, installed):
    hashes, starts = file_hashes(mailnet), service_starts(mailnet)
    assert all("ActiveState=active" in state for state in starts.values()), starts
    again = mailnet.install()
    assert [r.returncode for r in again] == [0] * len(STAGE_ORDER), again[-1].stderr
    updated = [line for r in again for line in r.stdout.splitlines() if line.startswith("updated ")]
    assert updated == []
    assert file_hashes(mailnet) == hashes
    assert service_starts(mailnet) == starts


def test_secrets_stay_out_of_the_install_output(mailnet, installed):
    password = mailnet.deployment.ceres_env["CERES_SMTP_PASS"]
    for result in installed:
        assert password not in result.stdout + result.stderr
        assert "PRIVATE KEY" not in result.stdout + result.stderr
    key = mailnet.mail.path("/var/lib/rspamd/dkim/ceres.key")
    assert oct(key.stat().st_mode & 0o777) == "0o640"


# --- 2. interrupted installs converge -------------------------------------------------------------------


KILL_SEED_ENV = "CERES_MAIL_KILL_SEED"


def test_installs_killed_at_random_points_converge(mailnet, installed):
    """Rebuild the host from scratch; three times, kill the install at a random moment; then run it to the
    end: the result is the same configuration as an uninterrupted install. The moments come from a seed
    that the test prints; setting CERES_MAIL_KILL_SEED to it replays the same moments."""
    reference = effective_config(mailnet)
    seed = int(os.environ.get(KILL_SEED_ENV) or random.randrange(1 << 32))
    print(f"kill moments from seed {seed}; replay with {KILL_SEED_ENV}={seed}")
    chance = random.Random(seed)
    mailnet.rebuild_mail_host()
    for attempt in range(3):
        ssh = mailnet.ssh_background_install()
        delay = chance.uniform(1.0, 25.0)
        time.sleep(delay)
        mailnet.mail.exec(["pkill", "-KILL", "-f", "ceres-mail-(access|packages|tls|mail)"])
        mailnet.mail.exec(["pkill", "-KILL", "-f", "apt-get|dpkg|certbot"])
        try:
            ssh.wait(timeout=60)
        except subprocess.TimeoutExpired:
            ssh.kill()
        # a killed dpkg leaves its lock and half-configured packages, as a real crash would
        print(f"attempt {attempt + 1}: killed after {delay:.1f} s (seed {seed})")
    final = mailnet.install()
    assert [r.returncode for r in final] == [0] * len(STAGE_ORDER), f"{KILL_SEED_ENV}={seed}: {final[-1].stdout[-3000:]}{final[-1].stderr[-3000:]}"
    assert effective_config(mailnet) == reference, f"{KILL_SEED_ENV}={seed}"
    assert all("ActiveState=active" in s for s in service_starts(mailnet).values())
