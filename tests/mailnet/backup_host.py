"""The operator's backup host, for restic's sftp backend: this machine's sshd (Debian's openssh-server, its
packaged service disabled) in a network namespace of the test internet, set up by the test itself.

An operator gives the mail host an account on a backup server that can do nothing but sftp into one directory:
that is what restic's `sftp:user@host:/path` repository needs and all the mail host should get. Here the
account is root (the namespace shares this machine's /etc/passwd and the harness adds no users to it), made an
sftp-only account by `ForceCommand internal-sftp` and `ChrootDirectory`: it sees `/restic` and nothing else,
gets no shell, no forwarding, no tunnel. The sshd has its own host key and its own authorized keys file, so
clients pin exactly this host, and only keys the test authorizes get in.

sshd insists that every component of a ChrootDirectory and of the authorized keys file's path is root-owned and
not group/world writable, which a pytest tmp_path under /tmp (mode 1777) never is. So sshd runs in a private
mount namespace of its own where `workdir` is bind-mounted on /srv (the machine's /srv is untouched): its
config names /srv/..., while the test reads the same files at workdir/... (`repository_path` is where the
tests look for plaintext).

`stop()` takes the host down (sshd and every session it serves end; connections are then refused), `start()`
brings it back. sshd logs (LogLevel VERBOSE: accepted and refused keys) to workdir/sshd.log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.testnet import NetnsHost, TestNet
from tests.testnet import linux

SSHD = "/usr/sbin/sshd"
PORT = 22
#: where `workdir` appears in sshd's own mount namespace (a root-owned 0755 directory every Debian has)
MOUNT = "/srv"
PRIVSEP_DIR = Path("/run/sshd")  # sshd's privilege separation directory: it refuses to start without it
READY_TIMEOUT = 10.0


@dataclass
class BackupHost:
    host: NetnsHost
    workdir: Path
    dns_name: str  #: the name the mail host's stack uses for it (target())
    host_public_key: str  #: `ssh-ed25519 AAAA...` (no comment): what a client pins in its known_hosts
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return self.host.address

    @property
    def repository_path(self) -> Path:
        """/restic of the sftp account, on this machine: where a backup's files end up."""
        return self.workdir / "chroot" / "restic"

    @property
    def authorized_keys(self) -> Path:
        return self.workdir / "authorized_keys"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def known_hosts_line(self) -> str:
        """`ADDRESS ssh-ed25519 AAAA...`: a known_hosts line pinning this host by its address."""
        return f"{self.address} {self.host_public_key}"

    def target(self, path: str = "/restic/ceres") -> str:
        """restic's repository string for `path` (as the sftp account sees it: /restic/... is repository_path)."""
        return f"sftp:root@{self.dns_name}:{path}"

    def authorize(self, public_key_line: str) -> None:
        """Let the key in (a line of an .pub file: `ssh-ed25519 AAAA... comment`)."""
        line = public_key_line.strip()
        if not line or "\n" in line:
            raise ValueError(f"one public key line expected, got {public_key_line!r}")
        with self.authorized_keys.open("a") as keys:
            keys.write(line + "\n")

    def start(self) -> None:
        """Start sshd (no-op if it runs); returns once port 22 accepts TCP connections from inside the host."""
        if self.process is not None and self.process.poll() is None:
            return
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        with self.log_path.open("a") as log:
            # unshare: a private mount namespace where workdir is /srv (see the module docstring)
            self.process = self.host.popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                 f'mount --bind "$0" {MOUNT} && exec "$@"', self.workdir,
                 SSHD, "-D", "-e", "-f", f"{MOUNT}/sshd_config"],
                stdout=log, stderr=log)
        self._wait_ready()

    def stop(self) -> None:
        """Take the host down: sshd and the sessions it serves end (new connections are then refused)."""
        if self.process is None:
            return
        sessions = _descendants(self.process.pid)  # each session's sshd runs in a session of its own (setsid)
        linux.stop_process(self.process, f"backup host sshd ({self.address})")
        linux.kill_pids(sessions, "the backup host's ssh sessions")
        self.process = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        probe = [sys.executable, "-c", f"import socket; socket.create_connection(({self.address!r}, {PORT}), 1).close()"]
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"backup host sshd exited ({self.process.returncode}); sshd.log ends:\n{self._log_tail()}")
            if self.host.run(probe, timeout=5).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"backup host sshd does not accept connections on {self.address}:{PORT} after "
                                   f"{READY_TIMEOUT:g} s; sshd.log ends:\n{self._log_tail()}")
            time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def sshd_config(address: str) -> str:
    """An sftp-only root account confined to /restic; paths as sshd sees them (workdir at /srv)."""
    return "\n".join([
        f"# the operator's backup host (tests/mailnet/backup_host.py); {MOUNT} is the harness's workdir",
        f"ListenAddress {address}:{PORT}",
        f"HostKey {MOUNT}/ssh_host_ed25519_key",
        f"PidFile {MOUNT}/sshd.pid",
        "LogLevel VERBOSE",
        f"AuthorizedKeysFile {MOUNT}/authorized_keys",
        "StrictModes yes",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "AllowUsers root",
        "PermitTunnel no",
        "AllowTcpForwarding no",
        "AllowAgentForwarding no",
        "AllowStreamLocalForwarding no",
        "X11Forwarding no",
        "PermitTTY no",
        "PermitUserEnvironment no",
        "PrintMotd no",
        "PrintLastLog no",
        "Subsystem sftp internal-sftp",
        "ForceCommand internal-sftp",
        f"ChrootDirectory {MOUNT}/chroot",
        "",
    ])


def start_backup_host(net: TestNet, workdir: Path, cidr: str, name: str = "backup",
                      dns_name: str = "backup.example.com") -> BackupHost:
    """sshd of `dns_name` in a new netns host `name` of `net` at `cidr`, accepting connections once this returns.
    Nobody is authorized yet: `authorize()` a client's key."""
    if not Path(SSHD).exists():
        raise RuntimeError(f"{SSHD} missing: install openssh-server (tests/system-packages.txt, .ci/system-deps)")
    if not Path(MOUNT).is_dir():
        raise RuntimeError(f"{MOUNT} missing on this machine: the backup host's sshd mounts its workdir there")
    _check_root_not_locked()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # root-owned, not group/world writable: sshd checks it (the chroot's and keys' parent)
    (workdir / "chroot").mkdir(mode=0o755, exist_ok=True)
    (workdir / "chroot").chmod(0o755)
    (workdir / "chroot" / "restic").mkdir(mode=0o700, exist_ok=True)
    host_public_key = host_key(workdir)
    (workdir / "authorized_keys").touch(mode=0o600)
    (workdir / "sshd_config").write_text(sshd_config(cidr.split("/")[0]))
    host = net.add_netns_host(name, cidr)
    backup = BackupHost(host, workdir, dns_name, host_public_key)
    backup.start()
    return backup


def host_key(workdir: Path) -> str:
    """The backup host's public host key (`ssh-ed25519 AAAA...`), made in `workdir` if it is not there yet: a
    stack must pin it (backupHostKey) before the host runs, so a test may ask for it first."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", key], check=True,
                       capture_output=True)
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


def _check_root_not_locked() -> None:
    """Without PAM, sshd refuses a locked account (shadow password `!...`) even for public keys."""
    try:
        entry = next((line for line in Path("/etc/shadow").read_text().splitlines() if line.startswith("root:")), "")
    except OSError:
        return
    password = entry.split(":")[1] if entry.count(":") else ""
    if password.startswith("!"):
        raise RuntimeError("root's password is locked in /etc/shadow ('!'): sshd (UsePAM no) refuses the backup "
                           "host's root account; unlock with `usermod -p '*' root` (no password, not locked)")


def _descendants(pid: int) -> list[int]:
    """The pids below `pid` in the process tree (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
