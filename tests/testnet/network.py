"""A small offline "internet" for tests: hosts on Ethernet segments, routers between them, nothing beyond.

Why: the product configures a mail host that talks to DNS, ACME, peer MTAs and apt. Tests see whether that
works only with real daemons on real addresses, and must never send anything off this machine. So a
`TestNet` is a "wire" network namespace holding a bridge; each host is a network namespace with one veth on
that bridge and the addresses the test gives it (documentation ranges included: inside namespaces they are
the test's own). No host gets a route beyond the wire, except a SystemHost's `apt0` to the test's own
`AptProxy` (see aptproxy.py).

Segments and routers: that bridge is the segment `INTERNET`. `add_segment("home")` adds another bridge in the
wire namespace: a separate Ethernet (the wire namespace has no address and does not forward), so hosts on
different segments reach each other only through a `Router` that has a leg on both. A router is a home
router with one public address: it forwards, and masquerades what leaves its inside network by its outside
leg, and lets back in only the answers. Internet hosts get no route to the inside network, so, as at home
behind a NAT, a mail server on the home segment can open connections to the internet (a VPS, for a
WireGuard tunnel) but no internet host can open one to it.

Kinds of hosts:
- `NetnsHost`: a network namespace only; `popen`/`run` start programs of this machine inside it (named,
  pebble, python from .venv ...).
- `SystemHost`: a Debian 12 (image.base_image()) booted with systemd as PID 1 in its own pid, mount, uts,
  ipc, cgroup and network namespaces, on an overlay of the cached image: private /dev, /proc (kernel settings
  read-only except net.*), read-only /sys, tmpfs /run and /tmp, and a capability bounding set without module
  loading, clock setting, raw I/O or device nodes, so nothing in it reaches the machine's kernel settings or
  devices. `pivot_root` (not chroot) makes its root a real mount root, which is what systemd's own service
  sandboxing needs. `devices=("net/tun",)` adds machine device nodes to its /dev (userspace WireGuard).
- `Router`: a NetnsHost with a leg on two segments (see above; IPv4 only: it forwards no IPv6).

Cleanup is total: `TestNet.close()` (also on errors and KeyboardInterrupt) kills every process, deletes every
namespace and link and unmounts everything; `linux.remove_stale()` removes what a run killed with SIGKILL
left behind. Names carry the prefix `ceres-test-<pid>-<hex>` (machine-side links: alias), see linux.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import signal
import stat
import subprocess
import tempfile
import textwrap
import time
import uuid
from pathlib import Path, PurePosixPath

from tests.testnet import linux
from tests.testnet.aptproxy import AptBridge
from tests.testnet.image import APT_RETRIES, SANDBOX_DROPIN, base_image

log = logging.getLogger(__name__)

FileSpec = str | bytes | tuple[str | bytes, int, int, int]  # content | (content, mode, uid, gid)

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXEC_TIMEOUT = 120.0
BOOT_TIMEOUT = 15.0  # seconds until the host's systemd runs (reaching `running` is wait_running's job)
RUNNING_TIMEOUT = 120.0
INTERNET = "internet"  # the segment every TestNet has (bridge br0 of the wire namespace)
NFT = "/usr/sbin/nft"  # the machine's nftables (tests/system-packages.txt), run inside a router's namespace
SEED_DIR = "/var/lib/cloud/seed"
# Capabilities no test host needs and none may have: they reach the machine's kernel, clock or disks.
DROPPED_CAPS = ("sys_module", "sys_time", "sys_rawio", "mknod", "syslog", "wake_alarm", "dac_read_search",
                "audit_control", "mac_admin", "mac_override", "sys_pacct", "block_suspend", "bpf", "perfmon")
_DROP = ",".join(f"-{cap}" for cap in DROPPED_CAPS)  # setpriv --bounding-set

# Runs as PID 1 of the host's new namespaces, then becomes systemd. $1 = root, $2 = hostname, $3 = the
# capabilities to drop (setpriv --bounding-set), $4 = the extra device nodes (paths under /dev, spaces between).
BOOT_SCRIPT = r"""
set -eu
root=$1; name=$2
mount --make-rprivate /
mount --rbind "$root" "$root"  # recursive: the disks mounted below root come along
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount --bind "$root/proc/sys/net" "$root/proc/sys/net"
mount -o remount,bind,ro "$root/proc/sys"
if [ -e "$root/proc/sysrq-trigger" ]; then
  mount --bind "$root/proc/sysrq-trigger" "$root/proc/sysrq-trigger"
  mount -o remount,bind,ro "$root/proc/sysrq-trigger"
fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"
mount -t tmpfs -o mode=755,nosuid,size=65536k tmpfs "$root/dev"
for node in null zero full random urandom tty; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
for node in $4; do  # opt-in (SystemHost devices=): bound from the machine like those, never made (no mknod)
  mkdir -p -m 755 "$(dirname "$root/dev/$node")"
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir -m 755 "$root/dev/pts"
mkdir -m 1777 "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
ln -s pts/ptmx "$root/dev/ptmx"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
hostname "$name"
cd "$root"
mkdir "$root/run/oldroot"
pivot_root . run/oldroot
exec setpriv --bounding-set="$3" -- /usr/sbin/chroot . /bin/sh -c \
  'umount --lazy /run/oldroot && rmdir /run/oldroot && exec /usr/bin/env -i container=other /lib/systemd/systemd'
"""


def _ipv4(cidr: str) -> str:
    return str(ipaddress.ip_interface(cidr).ip)


class _Host:
    """What all hosts share: a network namespace on a segment of the wire, with the addresses given."""

    def __init__(self, net: TestNet, name: str, ipv4_cidr: str, ipv6_cidr: str | None, segment: str = INTERNET):
        self.net = net
        self.name = name
        self.netns = f"{net.prefix}-{name}"
        self.segment = segment
        self._bridge = net.bridge(segment)  # an unknown segment fails here, before anything is made
        self.ipv4_cidr = ipv4_cidr
        self.ipv6_cidr = ipv6_cidr
        self.address = _ipv4(ipv4_cidr)
        self.address6 = str(ipaddress.ip_interface(ipv6_cidr).ip) if ipv6_cidr else None
        self._stack = contextlib.ExitStack()

    def _plug_in(self, gateway: str | None = None) -> None:
        """Create the namespace, its eth0 on its segment with its addresses (and a default route via `gateway`)."""
        linux.add_netns(self.netns)
        self._stack.callback(linux.delete_netns, self.netns)
        self.port = self._add_leg("eth0", self._bridge, self.ipv4_cidr, self.ipv6_cidr)
        if gateway:
            linux.ip("route", "add", "default", "via", gateway, "dev", "eth0", netns=self.netns)

    def _add_leg(self, device: str, bridge: str, ipv4_cidr: str, ipv6_cidr: str | None = None) -> str:
        """A veth from `bridge` (in the wire namespace) to `device` here, up with its addresses; its wire port.

        The device skips duplicate address detection, so its IPv6 addresses (the link-local one included) are
        final the moment it is up: with DAD, each turns from tentative to valid a second or two later, and a
        program started in between sees the network change under it (Chromium aborts a page load with
        ERR_NETWORK_CHANGED)."""
        port = self.net._port_name()
        linux.ip("link", "add", port, "type", "veth", "peer", "name", device, "netns", self.netns,
                 netns=self.net.wire)
        self._stack.callback(linux.delete_link, port, self.net.wire)
        linux.ip("link", "set", "dev", port, "master", bridge, "up", netns=self.net.wire)
        linux.set_sysctl(f"net/ipv6/conf/{device}/accept_dad", "0", netns=self.netns)
        linux.ip("addr", "add", ipv4_cidr, "dev", device, netns=self.netns)
        if ipv6_cidr:
            linux.ip("-6", "addr", "add", ipv6_cidr, "dev", device, netns=self.netns)
        linux.ip("link", "set", "dev", device, "up", netns=self.netns)
        return port

    def stop(self) -> None:
        """Kill everything of this host and delete its namespace and links (idempotent)."""
        self._stack.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.ipv4_cidr}>"


class NetnsHost(linux.Programs, _Host):
    """A network namespace on the wire where tests run this machine's programs (its files, its .venv): `popen`
    and `run` (linux.Programs) start them inside it.

    With `nameserver`, its programs resolve names there: each runs in a mount namespace of its own whose
    /etc/resolv.conf names that server (programs that use the system resolver, a JVM say, need it; the
    machine's own resolv.conf is never touched). `segment` and `gateway` as for a SystemHost (TestNet)."""

    def __init__(self, net: TestNet, name: str, ipv4_cidr: str, ipv6_cidr: str | None = None,
                 nameserver: str | None = None, *, segment: str = INTERNET, gateway: str | None = None):
        super().__init__(net, name, ipv4_cidr, ipv6_cidr, segment)
        self._processes: list[subprocess.Popen] = []
        self._resolv_conf: Path | None = None
        try:
            if nameserver:
                self._resolv_conf = net.run_dir / f"{name}.resolv.conf"
                self._resolv_conf.write_text(f"nameserver {nameserver}\n")
            self._plug_in(gateway)
            self._stack.callback(self._stop_processes)
        except BaseException:
            self.stop()
            raise

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` as it runs inside this host (its network, and its resolv.conf if it has one)."""
        argv = [str(a) for a in argv]
        if self._resolv_conf:
            argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                    'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(self._resolv_conf), *argv]
        return linux.netns_exec(self.netns, argv)



class Router(NetnsHost):
    """A home router: eth0 on the `outside` segment with its one public address, eth1 on the `inside` one.

    Why: a mail server at home sits behind a NAT; what it sends to the internet leaves with the router's
    address, and nothing on the internet can open a connection to it (a WireGuard tunnel to a VPS, started
    from home, is how it gets reached). So, in its own namespace only (net.* settings are per namespace):
    IPv4 forwarding on, and one nftables table: masquerade for what comes from the inside network and leaves
    by eth0, and from eth0 to eth1 only the answers to connections made from inside (conntrack), so even an
    internet host given a route by hand gets nothing through. Inside hosts use `inside_address` as their
    gateway; internet hosts get no route to `inside_network`. `run`/`popen` work as on any NetnsHost.
    """

    def __init__(self, net: TestNet, name: str, inside: tuple[str, str], outside: tuple[str | None, str],
                 outside_gateway: str | None = None):
        (inside_segment, inside_cidr), (outside_segment, outside_cidr) = inside, outside
        self.inside_cidr = inside_cidr
        self.inside_address = _ipv4(inside_cidr)
        self.inside_network = str(ipaddress.ip_interface(inside_cidr).network)
        self.inside_segment = inside_segment
        outside_segment = outside_segment or INTERNET
        if net.bridge(inside_segment) == net.bridge(outside_segment):
            raise ValueError(f"router {name!r}: inside and outside on one segment ({inside_segment!r})")
        super().__init__(net, name, outside_cidr, segment=outside_segment, gateway=outside_gateway)
        try:
            self.inside_port = self._add_leg("eth1", net.bridge(inside_segment), inside_cidr)
            linux.set_sysctl("net/ipv4/ip_forward", "1", self.netns)
            rules = net.run_dir / f"{name}.nft"
            rules.write_text(self.ruleset())
            linux.sh(linux.netns_exec(self.netns, [NFT, "-f", str(rules)]))
        except BaseException:
            self.stop()
            raise

    def ruleset(self) -> str:
        """The router's nftables table (lives and dies with its namespace)."""
        return textwrap.dedent(f"""\
            table ip home_router {{
              chain postrouting {{
                type nat hook postrouting priority srcnat; policy accept;
                ip saddr {self.inside_network} oifname "eth0" masquerade
              }}
              chain forward {{
                type filter hook forward priority filter; policy accept;
                iifname "eth0" oifname "eth1" ct state established,related accept
                iifname "eth0" oifname "eth1" drop
              }}
            }}
            """)


class SystemHost(_Host):
    """A booted Debian 12 with systemd as PID 1, on a segment (and on the apt proxy's bridge, if any)."""

    def __init__(self, net: TestNet, name: str, ipv4_cidr: str, ipv6_cidr: str | None = None, *,
                 nameserver: str | None = None, gateway: str | None = None,
                 files: dict[str, FileSpec] | None = None, relax_sandbox: bool = True,
                 disks: dict[str, str] | None = None, segment: str = INTERNET, devices: tuple[str, ...] = (),
                 layers: tuple[Path, ...] = ()):
        super().__init__(net, name, ipv4_cidr, ipv6_cidr, segment)
        self.devices = _checked_devices(devices)
        self.layers = layers
        self.dir = net.run_dir / name
        self.root = self.dir / "root"
        self.pid: int | None = None
        self.apt_address: str | None = None
        self._boot: subprocess.Popen | None = None
        try:
            started = time.monotonic()
            self._mount_root()
            self._mount_disks(disks or {})
            self._plug_in(gateway)
            if net.apt_proxy:
                self.apt_address = _ipv4(net.apt_proxy.attach(self.netns))
                self._stack.callback(net.apt_proxy.detach, self.netns)
            self._write_host_files(nameserver, relax_sandbox, files or {})
            self._start_systemd()
            log.info("%s: systemd started as pid %d in %.1f s", name, self.pid, time.monotonic() - started)
        except BaseException:
            self.stop()
            raise

    # -- inside the host --

    def exec(self, argv: list[str], timeout: float = EXEC_TIMEOUT, check: bool = False,
             input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `argv` inside the booted host (all its namespaces, its root) as root; output captured as text."""
        environment = {"PATH": HOST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                       "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        command = ["nsenter", "-t", str(self.pid), "-a", "--", "/usr/bin/setpriv", f"--bounding-set={_DROP}",
                   "--", "/usr/bin/env", "-i",
                   *(f"{k}={v}" for k, v in environment.items()), *[str(a) for a in argv]]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: {argv} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def wait_running(self, timeout: float = RUNNING_TIMEOUT) -> str:
        """Wait until systemd says `running` or `degraded` (failed units are logged); returns that state."""
        started = time.monotonic()
        next_note = started + 10.0
        state = "unknown"
        while True:
            if self._boot.poll() is not None:
                raise RuntimeError(f"{self.name}: its systemd exited ({self._boot.returncode}):\n{self.console()}")
            state = self.exec(["systemctl", "is-system-running"], timeout=10).stdout.strip() or "unknown"
            if state in ("running", "degraded"):
                break
            if state in ("maintenance", "stopping"):
                raise RuntimeError(f"{self.name}: systemd is {state}:\n{self.failed_units()}")
            now = time.monotonic()
            if now - started > timeout:
                jobs = self.exec(["systemctl", "list-jobs", "--no-pager"], timeout=10).stdout
                raise TimeoutError(f"{self.name}: still {state} after {timeout:g} s; jobs:\n{jobs}"
                                   f"failed:\n{self.failed_units()}")
            if now >= next_note:
                log.info("%s: systemd is %s (%.0f s)", self.name, state, now - started)
                next_note += 10.0
            time.sleep(0.2)
        log.info("%s: %s after %.1f s", self.name, state, time.monotonic() - started)
        if state == "degraded":
            log.warning("%s: degraded, failed units:\n%s", self.name, self.failed_units())
        return state

    def power_off(self) -> None:
        """Every process of the host killed (a power cut); its root stays mounted as it was left, to be read."""
        if self._boot is None:
            raise RuntimeError(f"{self.name}: not booted")
        self._kill(linux.cgroup2_root() / self.netns)
        self._boot = None
        self.pid = None

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """As far as the harness can: every process of the host killed (a power cut, no clean shutdown), its
        network namespace back to what a fresh boot finds (no nftables ruleset, no policy rule, no link
        but lo, eth0 and apt0 with their addresses and routes, IP forwarding off), and systemd started again
        on the same root. What is on the root stays, as on a disk; /run and /tmp are new tmpfs.
        TEST HARNESS: systemd-sysctl is masked in the test image (it would write the machine's non-net keys),
        so the net.* keys of the host's /etc/sysctl.d/*.conf are applied here, in its namespace, as that
        unit would at boot."""
        if self._boot is None or self.pid is None:
            raise RuntimeError(f"{self.name}: not booted")
        log.info("%s: rebooting", self.name)
        self._kill(linux.cgroup2_root() / self.netns)
        self._boot = None
        self.pid = None
        self._reset_network()
        self._start_systemd()
        log.info("%s: systemd started again as pid %d", self.name, self.pid)

    def _reset_network(self) -> None:
        def inside(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run(linux.netns_exec(self.netns, list(argv)), capture_output=True, text=True, timeout=30)

        inside(NFT, "flush", "ruleset")
        links = json.loads(inside("ip", "-j", "link", "show").stdout or "[]")
        for link in links:
            if link["ifname"] not in ("lo", "eth0", "apt0"):
                inside("ip", "link", "delete", "dev", link["ifname"])
        for family in ("-4", "-6"):
            rules = json.loads(inside("ip", "-j", family, "rule", "show").stdout or "[]")
            for rule in rules:
                if rule.get("priority") not in (0, 32766, 32767):
                    inside("ip", family, "rule", "del", "priority", str(rule["priority"]))
        settings = {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"}
        for conf in sorted(self.path("/etc/sysctl.d").glob("*.conf")):
            for line in conf.read_text().splitlines():
                key, sep, value = line.partition("=")
                key, value = key.strip().lstrip("-"), value.strip()
                if sep and not line.lstrip().startswith(("#", ";")):
                    settings[key] = value
        for key, value in settings.items():
            if key.startswith("net.") and re.fullmatch(r"[\w.-]+", key) and re.fullmatch(r"[\w.:-]+", value):
                inside("sh", "-c", f"[ ! -e /proc/sys/{key.replace('.', '/')} ] || echo {value} > /proc/sys/{key.replace('.', '/')}")

    def failed_units(self) -> str:
        return self.exec(["systemctl", "--failed", "--no-legend", "--plain", "--no-pager"], timeout=10).stdout

    def console(self) -> str:
        """What the boot script and systemd printed (errors before the journal runs end up here)."""
        path = self.dir / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def path(self, path: str) -> Path:
        """Where the host's `path` is on the machine (its symlinks followed inside its root, never out)."""
        return _inside(self.root, path)

    # -- setup --

    def _mount_root(self) -> None:
        """An overlay: the test image at the bottom, the `layers` over it (lowest first), the host's own
        upper directory on top (what it writes)."""
        lower = ":".join(str(path) for path in (*reversed(self.layers), base_image()))
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(parents=True)
        self._stack.callback(linux.remove_tree, self.dir)
        options = f"lowerdir={lower},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}"
        linux.sh(["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)])
        self._stack.callback(linux.unmount_all, self.dir)

    def _mount_disks(self, disks: dict[str, str]) -> None:
        """A filesystem of its own at each path (a tmpfs named after the disk), as a VM's extra disk would be."""
        for path, label in sorted(disks.items()):
            target = _inside(self.root, path)
            _make_parents(target)
            linux.sh(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0755", label, str(target)])

    def _write_host_files(self, nameserver: str | None, relax_sandbox: bool, files: dict[str, FileSpec]) -> None:
        """Per-host identity, resolver and apt proxy; then the caller's files, which win over ours."""
        defaults: dict[str, FileSpec] = {
            "/etc/hostname": f"{self.name}\n",
            "/etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            "/etc/machine-id": f"{uuid.uuid4().hex}\n",
            "/etc/resolv.conf": f"nameserver {nameserver}\n" if nameserver else "# no nameserver (tests/testnet)\n",
        }
        if self.net.apt_proxy:
            defaults["/etc/apt/apt.conf.d/00ceres-test-proxy"] = (
                f'Acquire::http::Proxy "{self.net.apt_proxy.url}";\nAcquire::Retries "{APT_RETRIES}";\n')
        if relax_sandbox:
            defaults["/etc/systemd/system/service.d/10-test-sandbox.conf"] = SANDBOX_DROPIN
        if not any(PurePosixPath(p).is_relative_to(SEED_DIR) for p in files):
            defaults["/etc/cloud/cloud-init.disabled"] = "no NoCloud seed given to this test host\n"
        for path, spec in {**defaults, **files}.items():
            _write_file(self.root, path, spec)

    def _start_systemd(self) -> None:
        cgroup = linux.cgroup2_root() / self.netns
        cgroup.mkdir()
        self._stack.callback(self._kill, cgroup)
        outer = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'  # into its cgroup before anything starts
        argv = ["sh", "-c", outer, "sh", str(cgroup),
                *linux.netns_exec(self.netns, [
                    "unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--cgroup", "--",
                    "sh", "-c", BOOT_SCRIPT, "sh", str(self.root), self.name, _DROP, " ".join(self.devices)])]
        with (self.dir / "console.log").open("w") as console:
            self._boot = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.pid = self._wait_for_init()

    def _wait_for_init(self) -> int:
        """The machine pid of the host's PID 1 once it is systemd (the child of `unshare --fork`)."""
        children = Path(f"/proc/{self._boot.pid}/task/{self._boot.pid}/children")
        found: list[int] = []

        def systemd_runs() -> bool:
            if self._boot.poll() is not None:
                raise RuntimeError(f"{self.name}: boot failed ({self._boot.returncode}):\n{self.console()}")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        found.append(int(pid))
            return bool(found)

        linux.wait_until(systemd_runs, BOOT_TIMEOUT, f"{self.name}'s systemd to start")
        return found[0]

    def _kill(self, cgroup: Path) -> None:
        """SIGKILL to every process of the host (its cgroup: systemd, services, the boot chain); reap."""
        linux.kill_cgroup(cgroup)
        if self._boot is not None:
            if self._boot.poll() is None:  # only if it never reached the cgroup
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._boot.pid, signal.SIGKILL)
            self._boot.wait(timeout=10)


class TestNet:
    """`with TestNet(apt_proxy=None) as net:` a wire (bridge in its own network namespace) for test hosts."""

    __test__ = False  # not a pytest test class

    def __init__(self, apt_proxy: AptBridge | None = None):
        self.prefix, _ = linux.new_prefix()
        self.wire = f"{self.prefix}-wire"
        self.apt_proxy = apt_proxy
        self.hosts: dict[str, _Host] = {}
        self.segments: dict[str, str] = {INTERNET: "br0"}  # segment name -> its bridge in the wire namespace
        self._ports = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> TestNet:
        try:
            linux.remove_stale()
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir=linux.RUN_ROOT))
            self._stack.callback(linux.remove_tree, self.run_dir)
            linux.add_netns(self.wire)
            self._stack.callback(linux.delete_netns, self.wire)
            linux.ip("link", "add", "br0", "type", "bridge", netns=self.wire)
            linux.ip("link", "set", "dev", "br0", "up", netns=self.wire)
            self._stack.callback(self._stop_hosts)
        except BaseException:
            self.close()
            raise
        log.info("testnet %s: wire up", self.prefix)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop every host, delete the wire and the run directory (idempotent; runs every step)."""
        self._stack.close()

    def add_segment(self, name: str) -> str:
        """Another Ethernet segment (a bridge in the wire namespace, deleted with it); returns `name`.

        Hosts on it reach hosts of other segments only through a router (`add_router`): the wire namespace
        has no address and does not forward, so a host at home cannot be reached from the internet by chance.
        """
        if name in self.segments:
            raise ValueError(f"segment {name!r} already exists on this testnet")
        if not name.replace("-", "").isalnum() or len(name) > 40:
            raise ValueError(f"segment name {name!r}: letters, digits and '-' only, at most 40")
        bridge = f"br{len(self.segments)}"
        linux.ip("link", "add", bridge, "type", "bridge", netns=self.wire)
        linux.ip("link", "set", "dev", bridge, "up", netns=self.wire)
        self.segments[name] = bridge
        return name

    def bridge(self, segment: str) -> str:
        """The wire namespace's bridge of `segment`."""
        if segment not in self.segments:
            raise ValueError(f"no segment {segment!r} on this testnet (add_segment first): {sorted(self.segments)}")
        return self.segments[segment]

    def add_netns_host(self, name: str, ipv4_cidr: str, ipv6_cidr: str | None = None,
                       nameserver: str | None = None, *, segment: str = INTERNET,
                       gateway: str | None = None) -> NetnsHost:
        """A network namespace host: eth0 on `segment`, a default route via `gateway` if given."""
        return self._add(NetnsHost, name, ipv4_cidr, ipv6_cidr, nameserver=nameserver, segment=segment,
                         gateway=gateway)

    def add_system_host(self, name: str, ipv4_cidr: str, ipv6_cidr: str | None = None, *,
                        nameserver: str | None = None, gateway: str | None = None,
                        files: dict[str, FileSpec] | None = None, relax_sandbox: bool = True,
                        disks: dict[str, str] | None = None, segment: str = INTERNET,
                        devices: tuple[str, ...] = (), layers: tuple[Path, ...] = ()) -> SystemHost:
        """Boot a Debian host (returns once its systemd runs: `host.wait_running()` waits for the rest).

        files: {absolute path in the host: content or (content, mode, uid, gid)}, written before boot (e.g. a
        cloud-init NoCloud seed under /var/lib/cloud/seed/nocloud/; without one, cloud-init is disabled).
        relax_sandbox: add the TEST-IMAGE-ONLY drop-in that resets systemd's service sandboxing.
        disks: {absolute path in the host: name}: a filesystem of its own mounted there before boot (a tmpfs),
        where a VM would mount an extra disk.
        segment: where its eth0 is plugged in (default: the internet); gateway: its default route.
        devices: machine character devices (paths under /dev, e.g. "net/tun") bind-mounted into its /dev.
        Opt-in: a host's /dev otherwise holds only null, zero, full, random, urandom, tty and its own ptys.
        /dev/net/tun is what userspace WireGuard (wireguard-go, wg-quick's fallback) needs, as this kernel has
        no wireguard module; a tun interface made with it lives in the host's network namespace only.
        layers: overlay layers between the test image and the host's own writes, lowest first (installed
        snapshots, tests/testnet/snapshots.py): the host boots with what they hold already on its disk.
        """
        return self._add(SystemHost, name, ipv4_cidr, ipv6_cidr, nameserver=nameserver, gateway=gateway,
                         files=files, relax_sandbox=relax_sandbox, disks=disks, segment=segment,
                         devices=devices, layers=layers)

    def add_router(self, name: str, inside: tuple[str, str], outside: tuple[str | None, str],
                   outside_gateway: str | None = None) -> Router:
        """A home router (see Router): inside=(segment, its CIDR there), outside=(segment or None for the
        internet, its public CIDR); `outside_gateway`: its own default route, if the outside needs one."""
        return self._add(Router, name, inside, outside, outside_gateway)

    def remove_host(self, name: str) -> None:
        """Stop host `name` and forget it (its name and addresses can be used again)."""
        self.hosts.pop(name).stop()

    def _add(self, kind, name: str, *args, **kwargs):
        if name in self.hosts:
            raise ValueError(f"host {name!r} already exists on this testnet")
        if not name.replace("-", "").isalnum() or len(name) > 40:
            raise ValueError(f"host name {name!r}: letters, digits and '-' only, at most 40")
        host = kind(self, name, *args, **kwargs)
        self.hosts[name] = host
        return host

    def _port_name(self) -> str:
        self._ports += 1
        return f"h{self._ports}"

    def _stop_hosts(self) -> None:
        errors = []
        for name in reversed(list(self.hosts)):
            try:
                self.remove_host(name)
            except Exception as error:  # go on: every host must be cleaned up
                log.exception("testnet %s: stopping %s failed", self.prefix, name)
                errors.append(f"{name}: {error}")
        if errors:
            raise RuntimeError(f"testnet {self.prefix}: cleanup failed: {errors}")


def _checked_devices(devices: tuple[str, ...]) -> tuple[str, ...]:
    """`devices` if each is a plain path under /dev to a character device of the machine (never a disk)."""
    if isinstance(devices, str):
        raise TypeError(f"devices={devices!r}: a tuple of paths under /dev, e.g. ('net/tun',)")
    for device in devices:
        parts = device.split("/")
        if not all(part.replace("-", "").replace("_", "").isalnum() for part in parts):
            raise ValueError(f"device {device!r}: a relative path under /dev, e.g. 'net/tun'")
        try:
            mode = os.stat(f"/dev/{device}").st_mode
        except FileNotFoundError:
            raise ValueError(f"device {device!r}: this machine has no /dev/{device}") from None
        if not stat.S_ISCHR(mode):
            raise ValueError(f"device {device!r}: /dev/{device} is not a character device")
    return tuple(devices)


def _write_file(root: Path, path: str, spec: FileSpec) -> None:
    content, mode, uid, gid = spec if isinstance(spec, tuple) else (spec, 0o644, 0, 0)
    target = _inside(root, path)
    _make_parents(target.parent)
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chown(target, uid, gid)
    target.chmod(mode)


def _make_parents(directory: Path) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(mode=0o755)


def _inside(root: Path, path: str) -> Path:
    """`path` as the host sees it, on the machine: symlinks are followed within `root`, never out of it."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r}: host paths are absolute")
    pending = list(PurePosixPath(path).parts[1:])
    current = root
    for _ in range(1024):  # bounds symlink loops
        if not pending:
            return current
        part = pending.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            target = os.readlink(candidate)
            pending = list(PurePosixPath(target).parts[1:] if target.startswith("/") else
                           PurePosixPath(target).parts) + pending
            current = root if target.startswith("/") else current
            continue
        current = candidate
    raise ValueError(f"{path!r}: too many symlinks under {root}")
