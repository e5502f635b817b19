"""The Debian 12 root filesystem that the test hosts boot, built once with mmdebstrap and cached.

Why: tests of what the project installs on its mail VM need a real Debian with systemd, apt and cloud-init,
not mocks. Building one takes a few dozen seconds, so it is built once per machine and kept in the machine
cache (tests/machine_cache.py: `<root>/testnet/images/<key>/`, outside the clone, so a fresh clone on the
same machine boots it at once), keyed by its package list, the mirror and this module's own source (the
script that builds it); every host boots an overlay of it, so the cached tree is never written to.

The tree is made for booting in namespaces on a machine that is not ours to change: units that would touch
the machine's consoles, clock or kernel settings are masked, cloud-init reads only NoCloud seeds and leaves
the network alone, and SSH host keys are made per host at first boot. None of this belongs to what the
product installs on a real VM. Per-host files (hostname, resolv.conf, machine-id, apt proxy, and the
TEST-IMAGE-ONLY sandbox drop-in SANDBOX_DROPIN) are written by `network.SystemHost` into each host's overlay,
never into the cached tree.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests import machine_cache

log = logging.getLogger(__name__)

CACHE_DIR = machine_cache.root() / "testnet"
IMAGES_DIR = CACHE_DIR / "images"

SUITE = "bookworm"
VARIANT = "minbase"
INCLUDE = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "sudo", "ca-certificates",
    "cloud-init", "python3", "procps",
    "iputils-ping",  # the tests' reachability checks
    "locales",  # cloud-init's locale module sets en_US.UTF-8 (it fails without this, as on no real image)
)
LOCALE = "en_US.UTF-8"

BUILD_TIMEOUT = 900.0  # seconds for mmdebstrap (about 40 s on a warm mirror)
APT_RETRIES = 5  #: apt's tries per download (the build's and the hosts': a cold cache fetches hundreds)
LOCK_TIMEOUT = BUILD_TIMEOUT + 60.0  # another process may be building the same image
PROGRESS_EVERY = 15.0

# Units that would take the machine's consoles, wait for hardware, change the machine's clock or kernel
# settings (sysctl reaches past the network namespace), or prompt at first boot.
MASKED_UNITS = (
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "console-getty.service",
    "getty.target",
    "systemd-logind.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "systemd-firstboot.service",
    "systemd-timesyncd.service",
    "systemd-sysctl.service",
    "systemd-udevd.service",
    "systemd-modules-load.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "fstrim.timer",
)

# TEST-IMAGE-ONLY, written per host (SystemHost's relax_sandbox, on by default): resets systemd's service
# sandboxing for every service. It was needed when hosts booted under chroot (status 226/NAMESPACE); under
# the harness's pivot_root the sandboxes build fine, so relax_sandbox=False tests units as they really run.
SANDBOX_DROPIN = """\
# TEST IMAGE ONLY (tests/testnet): systemd cannot build the sandboxes' mount namespaces inside the test
# harness on these machines. Never ship this on a real host.
[Service]
PrivateTmp=no
PrivateDevices=no
PrivateMounts=no
PrivateUsers=no
ProtectSystem=no
ProtectHome=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectClock=no
ProtectHostname=no
ProtectProc=default
ProcSubset=all
RestrictNamespaces=no
SystemCallFilter=
MemoryDenyWriteExecution=no
RestrictAddressFamilies=
ReadWritePaths=
ReadWriteDirectories=
ReadOnlyPaths=
ReadOnlyDirectories=
InaccessiblePaths=
InaccessibleDirectories=
ExecPaths=
NoExecPaths=
TemporaryFileSystem=
BindPaths=
BindReadOnlyPaths=
"""

# cloud-init reads only NoCloud seeds the caller places (no probing of cloud metadata addresses), and leaves
# the network alone: the harness configures the host's interfaces from outside before boot.
CLOUD_INIT_CONFIG = """\
# TEST IMAGE ONLY (tests/testnet)
datasource_list: [ NoCloud ]
network:
  config: disabled
"""

# Each host makes its own SSH host keys at first boot (the image ships none, so no two hosts share keys).
SSH_HOSTKEYS_UNIT = """\
[Unit]
Description=Generate SSH host keys (test image)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""


def base_image() -> Path:
    """The cached root filesystem (built now if missing); read-only for callers: boot an overlay of it."""
    mirror = debian_mirror()
    return _base_image(mirror, INCLUDE)


@functools.cache
def _base_image(mirror: str, include: tuple[str, ...]) -> Path:
    key = image_key(mirror, include)
    final = IMAGES_DIR / key
    rootfs = final / "rootfs"
    if (final / "ready").exists():
        log.info("testnet image %s: cached at %s", key, rootfs)
        return rootfs
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with machine_cache.locked(IMAGES_DIR / ".lock", "builds the test image", LOCK_TIMEOUT, note_every=PROGRESS_EVERY):
        if (final / "ready").exists():  # another process built it while we waited
            log.info("testnet image %s: built by another process", key)
            return rootfs
        _remove_stale_builds()
        _build(final, mirror, include)
        _remove_unused_images(keep=final)
    return rootfs


def image_key(mirror: str, include: tuple[str, ...]) -> str:
    """A name that changes whenever anything that goes into the image changes: the package list, the
    mirror, and this module (what prepare() writes, the masked units, the configs)."""
    recipe = json.dumps({"suite": SUITE, "variant": VARIANT, "include": sorted(include), "mirror": mirror},
                        sort_keys=True)
    return f"{SUITE}-{machine_cache.digest(recipe, Path(__file__).read_bytes())}"


@functools.cache
def debian_mirror() -> str:
    """The Debian archive URL this machine's own apt uses for bookworm (a registry it may reach)."""
    return _mirror_for_suite(SUITE)


@functools.cache
def debian_security_mirror() -> str | None:
    """The machine's debian-security URL, if its apt has one."""
    try:
        return _mirror_for_suite(f"{SUITE}-security")
    except RuntimeError:
        return None


def _mirror_for_suite(suite: str) -> str:
    for uri, suites in _apt_sources():
        if suite in suites and uri.startswith("http://"):
            return uri.rstrip("/")
    raise RuntimeError(f"no http:// apt source for {suite!r} in /etc/apt/sources.list(.d)")


def _apt_sources() -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of each `deb` source in the machine's apt configuration (one-line and deb822)."""
    etc = Path("/etc/apt")
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.exists():
            for line in path.read_text().splitlines():
                fields = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(fields) >= 3 and fields[0] == "deb":
                    yield fields[1], [fields[2]]
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = _deb822_fields(stanza)
            if "deb" in fields.get("types", "").split():
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split()


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        name, value = line.split(":", 1)
        fields[name.strip().lower()] = value.strip()
    return fields


def _remove_stale_builds() -> None:
    """Half-built trees left by an interrupted build (we hold the lock: nobody is building now)."""
    for stale in IMAGES_DIR.glob(".build-*"):
        log.info("removing interrupted image build %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _remove_unused_images(keep: Path) -> None:
    """Images of other recipes (older include lists) that no running host has as its overlay's lower layer."""
    mounts = Path("/proc/self/mounts").read_text()
    for image in IMAGES_DIR.glob(f"{SUITE}-*"):
        if image != keep and f"{image}/" not in mounts:  # a lower layer of a running host's overlay
            log.info("removing the outdated test image %s", image)
            shutil.rmtree(image, ignore_errors=True)


def _build(final: Path, mirror: str, include: tuple[str, ...]) -> None:
    staging = IMAGES_DIR / f".build-{final.name}-{os.getpid()}"
    rootfs = staging / "rootfs"
    staging.mkdir()
    try:
        started = time.monotonic()
        _mmdebstrap(rootfs, mirror, include, staging / "mmdebstrap.log")
        prepare(rootfs)
        (staging / "ready").write_text(f"built in {time.monotonic() - started:.1f} s from {mirror}\n")
        staging.rename(final)
        log.info("testnet image %s built in %.1f s", final.name, time.monotonic() - started)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _mmdebstrap(rootfs: Path, mirror: str, include: tuple[str, ...], log_path: Path) -> None:
    # a cold build fetches a few hundred packages: a dropped connection is retried, not the whole build
    argv = ["mmdebstrap", f"--variant={VARIANT}", "--mode=root", f"--include={','.join(include)}",
            f'--aptopt=Acquire::Retries "{APT_RETRIES}"', SUITE, str(rootfs), mirror]
    log.info("building the test image: %s (log: %s)", " ".join(argv), log_path)
    with log_path.open("w") as output:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_logged(process, "mmdebstrap", BUILD_TIMEOUT)
        except BaseException:
            process.kill()
            process.wait()
            raise
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-30:])
        raise RuntimeError(f"mmdebstrap failed ({process.returncode}):\n{tail}")


def _wait_logged(process: subprocess.Popen, what: str, timeout: float) -> None:
    """Wait for `process`, logging progress every PROGRESS_EVERY seconds; TimeoutError after `timeout`."""
    started = time.monotonic()
    while True:
        try:
            process.wait(timeout=PROGRESS_EVERY)
            return
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise TimeoutError(f"{what} still running after {timeout:g} s") from None
            log.info("%s still running (%.0f s)", what, elapsed)


def prepare(rootfs: Path) -> None:
    """Make a fresh mmdebstrap tree fit to boot in namespaces (see the module docstring)."""
    systemd_dir = rootfs / "etc/systemd/system"
    for unit in MASKED_UNITS:
        link = systemd_dir / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    _write(rootfs / "etc/cloud/cloud.cfg.d/90-ceres-test.cfg", CLOUD_INIT_CONFIG)
    _write(systemd_dir / "ceres-test-ssh-hostkeys.service", SSH_HOSTKEYS_UNIT)
    wants = systemd_dir / "ssh.service.wants"
    wants.mkdir(exist_ok=True)
    (wants / "ceres-test-ssh-hostkeys.service").symlink_to("../ceres-test-ssh-hostkeys.service")
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Written per host at boot: never share these through the image.
    for per_host in ("etc/resolv.conf", "etc/hostname", "etc/machine-id"):
        (rootfs / per_host).unlink(missing_ok=True)
    (rootfs / "etc/machine-id").write_text("")
    _generate_locale(rootfs)


def _generate_locale(rootfs: Path) -> None:
    """en_US.UTF-8 generated and set as default, so cloud-init's locale module has nothing to change."""
    (rootfs / "etc/locale.gen").write_text(f"{LOCALE} UTF-8\n")
    (rootfs / "etc/default/locale").write_text(f"LANG={LOCALE}\n")
    subprocess.run(["chroot", str(rootfs), "/usr/sbin/locale-gen"], check=True, capture_output=True,
                   env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, timeout=300)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
