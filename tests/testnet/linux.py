"""Small wrappers over the kernel objects the test network is made of: names, `ip`, cgroups, mounts, processes.

Why: every object the harness makes on the machine (network namespace, machine-side link, mount, cgroup,
run directory) carries the run's prefix `ceres-test-<pid>-<hex>`, so the harness can remove all of it on
exit, tests can prove nothing is left, and a later run can remove what a killed run (SIGKILL: no finalizer
ran) left behind, by checking whether the pid in the name is still alive.
Machine-side link names are limited to 15 characters, so links are named `ctn<hex>...` and carry the full
prefix as their `ip link` alias.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

NAME_PREFIX = "ceres-test-"
RUN_ROOT = Path("/tmp")  # run directories: /tmp/ceres-test-<pid>-<hex>/
NETNS_DIR = Path("/run/netns")
COMMAND_TIMEOUT = 30.0
POLL = 0.1

_PREFIX_RE = re.compile(rf"{NAME_PREFIX}(\d+)-([0-9a-f]+)")


def new_prefix() -> tuple[str, str]:
    """(`ceres-test-<pid>-<hex>`, `<hex>`): unique per object that owns machine state, even across runs."""
    token = secrets.token_hex(2)
    return f"{NAME_PREFIX}{os.getpid()}-{token}", token


def sh(argv: list[str], *, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    """Run a short machine command, output captured as text; with `check`, a failure raises with its stderr."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["ip", *(["-n", netns] if netns else []), *args], check=check)


def netns_exec(netns: str, argv: list[str]) -> list[str]:
    """argv run in network namespace `netns` only (the machine's filesystem, pids and mounts)."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]


def set_sysctl(path: str, value: str, netns: str | None = None) -> None:
    """Write /proc/sys/`path` (net.* keys are per network namespace, so write from inside it)."""
    if netns is None:
        Path("/proc/sys", path).write_text(value)
    else:
        sh(netns_exec(netns, ["sh", "-c", f"echo {value} > /proc/sys/{path}"]))


def add_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Kill whatever still runs in `name` (all of it is the test's), then delete it."""
    if not (NETNS_DIR / name).exists():
        return
    kill_pids(netns_pids(name), f"netns {name}")
    ip("netns", "delete", name)


def netns_pids(name: str) -> list[int]:
    result = ip("netns", "pids", name, check=False)
    return [int(pid) for pid in result.stdout.split()]


def delete_link(name: str, netns: str | None = None) -> None:
    if ip("link", "show", "dev", name, netns=netns, check=False).returncode == 0:
        ip("link", "delete", "dev", name, netns=netns)


def kill_pids(pids: list[int], what: str) -> None:
    for pid in pids:
        log.info("killing pid %d left in %s", pid, what)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(_alive(pid) for pid in pids), 10.0, f"processes in {what} to exit")


def stop_process(process: subprocess.Popen, what: str, grace: float = 5.0) -> None:
    """SIGTERM to the process group of `process` (started with start_new_session), SIGKILL after `grace` s."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) survived signal %d", what, process.pid, sig)
    raise RuntimeError(f"{what} (pid {process.pid}) does not die")


class Programs:
    """Runs this machine's programs in a place (`argv` says how: here, as they are) and stops the ones it
    started: what a test internet's NetnsHost and the DNS harness's LoopbackHost share. A subclass sets
    `name` and `_processes = []`, and calls `_stop_processes` when it stops."""

    name: str
    _processes: list[subprocess.Popen]

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` as it runs in this place."""
        return [str(a) for a in argv]

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start `argv` here, in its own process group; stopped (TERM, then KILL) with the place."""
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        process = subprocess.Popen(self.argv(argv), **kwargs)
        self._processes.append(process)
        return process

    def run(self, argv: list[str], timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
        """Run a short command here; output captured as text unless told otherwise."""
        kwargs.setdefault("capture_output", "stdout" not in kwargs and "stderr" not in kwargs)
        kwargs.setdefault("text", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(argv), timeout=timeout, **kwargs)

    def _stop_processes(self) -> None:
        for process in self._processes:
            stop_process(process, f"{self.name}: {process.args}")
        self._processes.clear()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, every: float = 10.0) -> None:
    """Poll `condition` until true; log progress every `every` s; TimeoutError after `timeout` s."""
    started = time.monotonic()
    next_note = started + every
    while not condition():
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        if now >= next_note:
            log.info("still waiting for %s (%.0f s)", what, now - started)
            next_note += every
        time.sleep(POLL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


# --- cgroups ---------------------------------------------------------------------------------------------

def cgroup2_root() -> Path:
    """Where the machine mounts the unified (v2) cgroup hierarchy."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    raise RuntimeError("no cgroup2 hierarchy mounted: booting systemd in a namespace needs one")


def kill_cgroup(path: Path) -> None:
    """Kill every process in cgroup `path` and its children, then remove the tree (bounded waits)."""
    if not path.exists():
        return
    kill_file = path / "cgroup.kill"
    if kill_file.exists():
        kill_file.write_text("1")
    else:  # kernels before 5.14
        for procs in path.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    wait_until(lambda: "populated 0" in (path / "cgroup.events").read_text(), 10.0, f"cgroup {path} to empty")
    for directory in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        directory.rmdir()
    path.rmdir()


# --- mounts ----------------------------------------------------------------------------------------------

def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in the machine's mount namespace, deepest first."""
    text = str(path)
    return sorted((p for p in _mount_points() if p == text or p.startswith(text + "/")), key=len, reverse=True)


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        if sh(["umount", point], check=False).returncode != 0:
            log.warning("umount %s failed; detaching it lazily", point)
            sh(["umount", "--lazy", point])


def _mount_points() -> list[str]:
    return [_unescape(line.split()[1]) for line in Path("/proc/self/mounts").read_text().splitlines()]


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def remove_tree(path: Path) -> None:
    """rm -rf `path` after making sure nothing is mounted below it (never delete through a mount)."""
    if not path.exists():
        return
    if mounts_under(path):
        raise RuntimeError(f"refusing to delete {path}: still mounted {mounts_under(path)}")
    shutil.rmtree(path)


# --- leftovers of earlier runs ---------------------------------------------------------------------------

def leftovers(prefix: str = NAME_PREFIX) -> dict[str, list[str]]:
    """What the machine still holds whose name starts with `prefix`: netns, links, mounts, cgroups, dirs."""
    links = [name for name, alias in _machine_links() if alias.startswith(prefix)]
    mounts = [point for point in _mount_points() if prefix in point]
    cgroups = [str(p) for p in _cgroup_dirs(prefix)]
    netns = [p.name for p in NETNS_DIR.glob(f"{prefix}*")] if NETNS_DIR.exists() else []
    dirs = [str(p) for p in RUN_ROOT.glob(f"{prefix}*")]
    return {k: v for k, v in
            {"netns": netns, "links": links, "mounts": mounts, "cgroups": cgroups, "dirs": dirs}.items() if v}


def remove_stale() -> None:
    """Remove what runs that no longer exist (killed before their finalizers ran) left on the machine."""
    for owner in sorted(_dead_prefixes()):
        log.warning("removing what the dead run %s left: %s", owner, leftovers(owner))
        for cgroup in _cgroup_dirs(owner):
            kill_cgroup(cgroup)
        for pidfile in RUN_ROOT.glob(f"{owner}*/**/*.pid"):
            _kill_pidfile(pidfile)
        for netns in NETNS_DIR.glob(f"{owner}*"):
            delete_netns(netns.name)
        for name, alias in _machine_links():
            if alias.startswith(owner):
                delete_link(name)
        for directory in RUN_ROOT.glob(f"{owner}*"):
            unmount_all(directory)
            remove_tree(directory)


def _dead_prefixes() -> set[str]:
    """The prefixes in leftover names (links: their alias) whose pid is no longer alive."""
    names = [name for kind, names in leftovers().items() if kind != "links" for name in names]
    names += [alias for _, alias in _machine_links() if alias.startswith(NAME_PREFIX)]
    found: set[str] = set()
    for name in names:
        match = _PREFIX_RE.search(name)
        if match and not _alive(int(match.group(1))):
            found.add(match.group(0))
    return found


def _kill_pidfile(pidfile: Path) -> None:
    """Kill the daemon a dead run started, if its pid still belongs to a process using that run's files."""
    try:
        pid = int(pidfile.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return
    if str(pidfile.parent) in cmdline:
        kill_pids([pid], str(pidfile))


def _machine_links() -> Iterator[tuple[str, str]]:
    """(name, alias) of the machine's links (`ip -o link` prints `alias X` for links that have one)."""
    for line in ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        alias = re.search(r"\balias (\S+)", line)
        yield name, alias.group(1) if alias else ""


def _cgroup_dirs(prefix: str) -> list[Path]:
    try:
        return sorted(cgroup2_root().glob(f"{prefix}*"))
    except RuntimeError:
        return []
