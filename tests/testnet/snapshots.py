"""Installed snapshots: what a command added to a booted test host, kept as an overlay layer and booted again.

Why: most booted worlds only need a host whose packages are installed (the directory's restore, the gateway's
VM); installing them (about a minute of dpkg per host, longer under load) proves nothing new once the session
host and the end-to-end layer have done it fresh. A snapshot is built once per machine: a throwaway host boots
the test image, runs the command (the stack's own rendered `packages` stage), is killed, and what it changed
(its overlay's upper directory: files, whiteouts, opaque directories) is copied into the machine cache
(tests/machine_cache.py: `<root>/testnet/snapshots/<key>/`), keyed by the image, the command and this module's
source. A later host boots with it as a layer between the image and its own upper directory, so the stage that
made it finds everything present and runs only its converge path, as a re-run on a real VM would.

The snapshot keeps only what the command made: what makes a host itself (machine id, host name, resolver, SSH
host keys, the journal, the harness's own files) is taken out, so every host that boots over it is still
a host of its own, first-booted by cloud-init as ever.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests import machine_cache
from tests.testnet.image import CACHE_DIR, base_image
from tests.testnet.network import SystemHost, TestNet

log = logging.getLogger(__name__)

SNAPSHOTS_DIR = CACHE_DIR / "snapshots"
READY = "ready"  #: written last: a snapshot without it is half-built and never booted
BUILD_TIMEOUT = 1800.0  # one install through a cold apt proxy
UNUSED_DAYS = 14  #: a snapshot no run booted for this long is removed (its key is from an older stack)
#: a segment of the builder's own, so it never takes an address of the world it builds for
BUILD_SEGMENT, BUILD_ADDRESS = "snapshot-build", "10.255.250.2/24"
#: what makes a host itself, or is the harness's per-host doing (network.SystemHost), never in a snapshot
PER_HOST = (
    "etc/machine-id", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/apt/apt.conf.d/00ceres-test-proxy",
    "etc/systemd/system/service.d/10-test-sandbox.conf", "etc/cloud/cloud-init.disabled",
    "var/lib/systemd/random-seed", "var/lib/systemd/timers", "var/log/journal", "var/lib/cloud",
    "var/cache/apt/archives", "tmp", "var/tmp",
)
PER_HOST_GLOBS = ("etc/ssh/ssh_host_*",)


def installed_snapshot(net: TestNet, name: str, key_parts: tuple[str, ...],
                    install: Callable[[SystemHost], None]) -> Path:
    """The cached snapshot of what `install(host)` made on a fresh host named `name` booted on `net` (built now
    if missing; another run building the same one is waited for). Its path, an overlay layer for SystemHost's
    `layers`."""
    key = f"{base_image().parent.name}-{machine_cache.digest(*key_parts, Path(__file__).read_bytes())}"
    final = SNAPSHOTS_DIR / key
    if not (final / READY).exists():
        with machine_cache.locked(SNAPSHOTS_DIR / f".{key}.lock", f"builds the test snapshot {key}", BUILD_TIMEOUT):
            if not (final / READY).exists():
                _remove_unused()
                _build(net, name, install, final)
    os.utime(final / READY)  # used now: see _remove_unused
    return final / "upper"


def _build(net: TestNet, name: str, install: Callable[[SystemHost], None], final: Path) -> None:
    staging = SNAPSHOTS_DIR / f".build-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.monotonic()
    log.info("test snapshot %s: building on a throwaway host", final.name)
    try:
        if BUILD_SEGMENT not in net.segments:
            net.add_segment(BUILD_SEGMENT)
        host = net.add_system_host(name, BUILD_ADDRESS, segment=BUILD_SEGMENT)
        try:
            host.wait_running(timeout=300)
            install(host)
            host.power_off()
            # cp keeps what overlayfs needs of an upper directory: whiteouts (0/0 devices), xattrs (opaque)
            subprocess.run(["cp", "-a", str(host.dir / "upper"), str(staging / "upper")], check=True,
                           capture_output=True, timeout=600)
        finally:
            net.remove_host(name)
        _strip_per_host(staging / "upper")
        (staging / READY).write_text(f"built in {time.monotonic() - started:.1f} s\n")
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        log.info("test snapshot %s: built in %.1f s", final.name, time.monotonic() - started)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _strip_per_host(upper: Path) -> None:
    doomed = [upper / path for path in PER_HOST] + [p for glob in PER_HOST_GLOBS for p in upper.glob(glob)]
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _remove_unused() -> None:
    """Half-built snapshots (only those of dead builders), and snapshots no run has booted for UNUSED_DAYS and
    no host boots now."""
    mounts = Path("/proc/self/mounts").read_text()
    for stale in SNAPSHOTS_DIR.glob(".build-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    cutoff = time.time() - UNUSED_DAYS * 86400
    for snapshot in SNAPSHOTS_DIR.iterdir():
        ready = snapshot / READY
        if not snapshot.name.startswith(".") and ready.exists() and ready.stat().st_mtime < cutoff \
                and str(snapshot) not in mounts:
            log.info("removing the unused test snapshot %s", snapshot.name)
            shutil.rmtree(snapshot, ignore_errors=True)
