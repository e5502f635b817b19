"""`mailctl backup status` and `mailctl backup restore`: the mail host's backups, over SSH.

Both run the host's own program (`ceres-mail-backup`, installed by the stack's backup stage) through
`ssh <adminUser>@<mailHost> sudo -n ...`, as the operator: their SSH key and known_hosts (or the ones given),
never a password prompt. `status` judges what the host reports: the last success must be younger than
MAX_AGE_HOURS (a daily schedule, plus its randomized delay and a slow run) and the last run must not
have failed. `restore` streams the host's progress; a repository password given with --password-file
travels on ssh's standard input, never on a command line.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from components.builders.backup import BACKUP_TOOL
from mailctl.verify.model import FAIL, OK, Result

MAX_AGE_HOURS = 26  #: a daily backup older than this has missed a run
#: ceres-mail-backup's exit codes that mean something to the operator
HOST_EXIT = {3: "the repository password does not open the repository",
             4: "the backup target cannot be reached from the mail host"}


class BackupCommandError(Exception):
    """The host could not be asked (SSH, sudo, no backup stage): the message says what to do."""


@dataclass(frozen=True)
class HostAccess:
    """How mailctl logs in to the mail host: as the stack's admin user, with the operator's key."""

    host: str
    user: str
    key_file: Path | None = None  #: None: the operator's ssh-agent or default keys
    known_hosts: Path | None = None  #: None: the operator's known_hosts
    timeout: float = 20.0

    def argv(self, remote_command: str) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(self.timeout)}"]
        if self.key_file:
            options += ["-i", str(self.key_file), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        return ["ssh", *options, f"{self.user}@{self.host}", remote_command]


def run_on_host(access: HostAccess, remote_command: str, stdin: str = "", stream: bool = False,
                timeout: float | None = 120) -> subprocess.CompletedProcess:
    """`remote_command` as root on the mail host; SSH's own failures (exit 255) become BackupCommandError."""
    argv = access.argv(f"sudo -n {remote_command}")
    try:
        # streamed: the host's progress goes straight to the operator's terminal (stderr still read, for SSH's errors)
        result = subprocess.run(argv, input=stdin, text=True, timeout=timeout,
                                stdout=None if stream else subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise BackupCommandError("ssh is not installed (Debian: openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise BackupCommandError(f"{access.host} did not answer within {timeout:.0f} s") from None
    stderr = result.stderr or ""
    if stream and stderr and result.returncode != 255:
        print(stderr, end="", file=sys.stderr)
    if result.returncode == 255:
        said = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        raise BackupCommandError(f"cannot log in to {access.user}@{access.host} over SSH ({said}); "
                                 "give --ssh-key, --ssh-user or --known-hosts")
    if "sudo:" in stderr and "password is required" in stderr:
        raise BackupCommandError(f"{access.user} on {access.host} cannot run sudo without a password "
                                 "(the stack's adminUser can)")
    if result.returncode == 127 or "command not found" in stderr:
        raise BackupCommandError(f"{access.host} has no {BACKUP_TOOL}: set backupTarget and run pulumi up")
    return result


def fetch_status(access: HostAccess) -> dict:
    """What the host says of its backups: now, repository, next_run, last_run, last_success."""
    result = run_on_host(access, f"{BACKUP_TOOL} status")
    if result.returncode != 0:
        raise BackupCommandError(f"{BACKUP_TOOL} status failed on {access.host}: {(result.stderr or '').strip()}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise BackupCommandError(f"{BACKUP_TOOL} status on {access.host} printed no JSON") from None


def _ago(seconds: float) -> str:
    hours, minutes = divmod(int(seconds) // 60, 60)
    return f"{hours} h {minutes} min ago" if hours else f"{minutes} min ago"


def _when(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def judge(status: dict, max_age_hours: float = MAX_AGE_HOURS) -> list[Result]:
    """The backup's verdict: its last success (age and size) and its last run. Times are the host's own,
    so a skewed clock on the operator's machine changes nothing."""
    now = status["now"]
    success, last_run = status.get("last_success"), status.get("last_run") or {}
    results = []
    if not success:
        results.append(Result("backup last success", FAIL, "no backup has succeeded yet",
                              "run one: ssh to the host, sudo systemctl start ceres-mail-backup"))
    else:
        age = now - success["finished"]
        detail = (f"{_ago(age)} ({_when(success['finished'])}): snapshot {success['snapshot']}, "
                  f"{_size(success['bytes'])} in {success['files']} files, {success['mailboxes']} mailbox(es); "
                  f"repository {_size(success['repository_bytes'])}")
        if age > max_age_hours * 3600:
            results.append(Result("backup last success", FAIL, detail,
                                  f"older than {max_age_hours:g} h: see `journalctl -u ceres-mail-backup` on the host"))
        else:
            results.append(Result("backup last success", OK, detail))
    if last_run.get("result") == "failed":
        results.append(Result("backup last run", FAIL, f"failed {_ago(now - last_run['finished'])}: {last_run['error']}",
                              "fix the cause, then: sudo systemctl start ceres-mail-backup"))
    elif last_run.get("result") == "running":
        results.append(Result("backup last run", OK, f"running since {_ago(now - last_run['started'])}"))
    elif last_run:
        results.append(Result("backup last run", OK, f"ok, {_ago(now - last_run['finished'])}"))
    return results


def render_status(status: dict, results: list[Result]) -> str:
    lines = [f"backups to {status['repository']}"]
    for result in results:
        lines.append(f"  {result.status:4}  {result.check.removeprefix('backup ')}: {result.detail}")
        if result.fix:
            lines.append(f"        fix: {result.fix}")
    if status.get("next_run"):
        lines.append(f"  next run: {status['next_run']}")
    return "\n".join(lines) + "\n"


def restore(access: HostAccess, snapshot: str, password: str | None) -> int:
    """Run the restore on the host, its progress on our terminal; the host's exit code."""
    command = f"{BACKUP_TOOL} restore --snapshot {snapshot}" + (" --password-stdin" if password is not None else "")
    result = run_on_host(access, command, stdin=f"{password}\n" if password is not None else "", stream=True,
                         timeout=None)
    return result.returncode
