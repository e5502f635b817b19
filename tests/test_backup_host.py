"""The backup host harness (tests/mailnet/backup_host.py): the operator's sftp-only account that restic's sftp
backend will back the mail host up to. Fast (no Debian host is booted: two network namespaces on a wire), needs
root. If these fail, fix the harness before reading the backup tests built on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mailnet.backup_host import SSHD, BackupHost, start_backup_host
from tests.testnet import NetnsHost, TestNet

pytestmark = pytest.mark.root  # tests/plugins/layers.py: the machine layer

WIRE = "198.51.100"  # TEST-NET-2: the test's own addresses inside its namespaces
CLIENT, BACKUP = f"{WIRE}.30", f"{WIRE}.31"


@dataclass
class Setup:
    backup: BackupHost
    client: NetnsHost
    key: Path  #: authorized
    stranger: Path  #: not authorized
    known_hosts: Path
    tmp: Path

    def ssh_options(self, key: Path) -> list[str]:
        return ["-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]

    def sftp(self, commands: str, key: Path | None = None) -> subprocess.CompletedProcess:
        """`sftp -b -` from the client: `commands` one a line; stops at the first failing one."""
        return self.client.run(["sftp", *self.ssh_options(key or self.key), "-b", "-", f"root@{self.backup.address}"],
                               input=commands, stdin=None, timeout=30, env=_env())


def _env() -> dict[str, str]:
    """This environment without an ssh agent: only the key given with -i may be offered."""
    return {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", path], check=True,
                   capture_output=True)
    return Path(f"{path}.pub").read_text()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    if os.geteuid() != 0:
        pytest.skip("the test internet needs root (network namespaces, mounts, sshd)")
    if not os.access(SSHD, os.X_OK) or shutil.which("sftp") is None:
        pytest.skip("missing sshd/sftp (make test installs them as root: tests/system-packages.txt)")
    tmp = tmp_path_factory.mktemp("backup-host")
    with TestNet() as net:
        client = net.add_netns_host("client", f"{CLIENT}/24")
        backup = start_backup_host(net, tmp / "backup", f"{BACKUP}/24")
        keys = tmp / "client"
        keys.mkdir(mode=0o700)
        backup.authorize(_keygen(keys / "id_ed25519"))
        _keygen(keys / "stranger")
        known_hosts = keys / "known_hosts"
        known_hosts.write_text(backup.known_hosts_line() + "\n")
        yield Setup(backup, client, keys / "id_ed25519", keys / "stranger", known_hosts, tmp)


def test_api(setup):
    """The harness reports address, ed25519 host key and sftp target; authorized_keys is 0600, the repository 0700."""
    backup = setup.backup
    assert backup.address == BACKUP
    assert backup.host_public_key.startswith("ssh-ed25519 AAAA") and len(backup.host_public_key.split()) == 2
    assert backup.target() == "sftp:root@backup.example.com:/restic/ceres"
    assert backup.target("/restic/other") == "sftp:root@backup.example.com:/restic/other"
    assert backup.repository_path == setup.tmp / "backup" / "chroot" / "restic"
    assert oct(backup.authorized_keys.stat().st_mode & 0o777) == "0o600"
    assert oct(backup.repository_path.stat().st_mode & 0o777) == "0o700"


def test_an_authorized_key_puts_files_into_the_repository_directory(setup):
    """An authorized key uploads over sftp, and the files land in the repository directory on the backup host."""
    local = setup.tmp / "hello.txt"
    local.write_text("a backup's bytes\n")
    result = setup.sftp(f"mkdir /restic/ceres\nput {local} /restic/ceres/hello.txt\nls /restic/ceres\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (setup.backup.repository_path / "ceres" / "hello.txt").read_text() == "a backup's bytes\n"
    assert "Accepted publickey for root" in setup.backup.log()


def test_the_account_is_chrooted_to_its_directory(setup):
    """The sftp account sees only /restic: it is chrooted, and the host's own files (/etc/passwd) are out of reach."""
    result = setup.sftp("ls -1a /\n")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = [line.strip() for line in result.stdout.splitlines() if not line.startswith("sftp>")]
    assert [name for name in listed if name not in (".", "..", "/.", "/..")] == ["/restic"], result.stdout
    assert setup.sftp("get /etc/passwd " + str(setup.tmp / "passwd") + "\n").returncode != 0
    assert not (setup.tmp / "passwd").exists()


def test_no_shell(setup):
    """The account gives no shell and no port forwarding: sftp connections only."""
    result = setup.client.run(["ssh", *setup.ssh_options(setup.key), f"root@{setup.backup.address}", "id"],
                              timeout=30, env=_env())
    assert "uid=" not in result.stdout, result.stdout
    assert result.returncode != 0 and "sftp connections only" in result.stdout, result.stdout + result.stderr
    # and no port forwarding either: a tunnel to the backup host's own port 22 is refused
    forward = setup.client.run(["ssh", *setup.ssh_options(setup.key), "-N", "-o", "ExitOnForwardFailure=yes",
                                "-W", f"{BACKUP}:22", f"root@{setup.backup.address}"], timeout=30, env=_env())
    assert forward.returncode != 0 and "SSH-2.0" not in forward.stdout, forward.stdout + forward.stderr


def test_an_unauthorized_key_is_refused(setup):
    """A key that was not authorized is refused (Permission denied (publickey))."""
    result = setup.sftp("ls /\n", key=setup.stranger)
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr, result.stderr


def test_a_wrong_host_key_is_not_trusted(setup):
    """The pinned host key is the host's own: a known_hosts with another key refuses the host."""
    other = setup.tmp / "other_host_key"
    other_key = " ".join(_keygen(other).split()[:2])
    wrong = setup.tmp / "wrong_known_hosts"
    wrong.write_text(f"{BACKUP} {other_key}\n")
    options = [o.replace(str(setup.known_hosts), str(wrong)) for o in setup.ssh_options(setup.key)]
    result = setup.client.run(["sftp", *options, "-b", "-", f"root@{BACKUP}"], input="ls /\n", stdin=None,
                              timeout=30, env=_env())
    assert result.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in result.stderr, result.stderr


def test_stop_takes_the_host_down_and_start_brings_it_back(setup):
    """Stopping the backup host ends open sessions and refuses new ones; starting it again lets sftp back in."""
    backup = setup.backup
    accepted = backup.log().count("Accepted publickey")
    # a session open when the host goes down ends with it: its next command fails
    session = setup.client.popen(["sftp", *setup.ssh_options(setup.key), "-b", "-", f"root@{BACKUP}"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.monotonic() + 10
        while backup.log().count("Accepted publickey") == accepted:
            assert time.monotonic() < deadline and session.poll() is None, "the session did not log in"
            time.sleep(0.1)
        backup.stop()
        output, errors = session.communicate(b"ls /restic\n", timeout=10)
        assert session.returncode != 0, output + errors
    finally:
        session.kill()
        session.wait()
    result = setup.sftp("ls /\n")
    assert result.returncode != 0 and "Connection refused" in result.stderr, result.stderr
    backup.start()
    result = setup.sftp("ls /\n")
    assert result.returncode == 0 and "/restic" in result.stdout, result.stdout + result.stderr
