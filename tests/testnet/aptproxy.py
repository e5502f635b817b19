"""An apt proxy (apt-cacher-ng) of the test's own, the one way test hosts get Debian packages.

Why: test hosts must not reach past the test's namespaces, yet the product installs packages with apt. So
each test host gets a second interface on a machine-side bridge, and apt-cacher-ng, started by the test with
its own config dir (never the packaged service), listens on that bridge's address only and fetches from the
Debian mirror this machine's own apt uses. Its cache persists in the machine cache
(tests/machine_cache.py: `<root>/testnet/apt-cacher-ng/`, outside the clone), so a later run, also from a
fresh clone, downloads no package again (only the small InRelease files are revalidated).

Layout: bridge `ctn<hex>apt` holds 10.254.N.1/24 (a /24 of 10.254.0.0/16 that `ip route` shows unused);
each host gets one of 10.254.N.2-254/24 on its `apt0`. Bridge ports are isolated (hosts cannot talk to each other
through it), IPv6 is off on the machine side, the hosts get no route beyond the /24, and this machine does not
forward (net.ipv4.ip_forward stays as it is: 0 here). With ForceManaged, the proxy serves Debian archives
only.

One proxy serves a whole test run: tools/run_tests.py starts it and names it to pytest's workers in
$CERES_MAIL_APT_PROXY, and each worker's hosts join its bridge (joined()), so they all share the one
persistent cache instead of each starting with an empty one.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.testnet import linux
from tests.testnet.image import CACHE_DIR, debian_mirror, debian_security_mirror

log = logging.getLogger(__name__)

ACNG = "/usr/sbin/apt-cacher-ng"
SUPPORT_DIR = "/usr/lib/apt-cacher-ng"
DEFAULT_CACHE = CACHE_DIR / "apt-cacher-ng"
POOL = ipaddress.ip_network("10.254.0.0/16")
DEFAULT_PORT = 3142
START_TIMEOUT = 20.0


ENVIRONMENT = "CERES_MAIL_APT_PROXY"  #: the running proxy a test process joins (see joined())


class AptBridge:
    """Attaching hosts to an apt proxy's bridge: what the process that runs the proxy and the processes that
    join it (pytest's workers: joined()) share. A host's number is taken by creating its link, whose name
    holds the number: the kernel refuses a second link of that name, so two processes never take one
    address, with no lock and no bookkeeping between them."""

    prefix: str
    bridge: str
    network: ipaddress.IPv4Network | None
    port: int
    _token: str
    _links: dict[str, str]  # netns -> machine-side veth, for the hosts this process attached

    @property
    def address(self) -> str:
        assert self.network is not None, "AptProxy not started"
        return str(self.network[1])

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def attach(self, netns: str) -> str:
        """Give network namespace `netns` an `apt0` on the bridge; returns its address (CIDR)."""
        for number in range(2, self.network.num_addresses - 1):
            link = f"ctn{self._token}a{number}"
            made = linux.ip("link", "add", link, "type", "veth", "peer", "name", "apt0", "netns", netns, check=False)
            if made.returncode == 0:
                break
            if "exists" not in made.stderr:
                raise RuntimeError(f"ip link add {link} failed ({made.returncode}): {made.stderr.strip()}")
        else:
            raise RuntimeError(f"the apt bridge {self.bridge} has no address left")
        self._links[netns] = link
        host_cidr = f"{self.network[number]}/{self.network.prefixlen}"
        linux.ip("link", "set", "dev", link, "alias", f"{self.prefix}-{netns}")
        linux.set_sysctl(f"net/ipv6/conf/{link}/disable_ipv6", "1")
        linux.ip("link", "set", "dev", link, "master", self.bridge)
        linux.ip("link", "set", "dev", link, "type", "bridge_slave", "isolated", "on")
        linux.ip("link", "set", "dev", link, "up")
        linux.set_sysctl("net/ipv6/conf/apt0/disable_ipv6", "1", netns=netns)
        linux.ip("addr", "add", host_cidr, "dev", "apt0", netns=netns)
        linux.ip("link", "set", "dev", "apt0", "up", netns=netns)
        return host_cidr

    def detach(self, netns: str) -> None:
        """Delete the link `attach(netns)` made (deleting the namespace deletes it too)."""
        if netns in self._links:
            linux.delete_link(self._links.pop(netns))


class JoinedAptProxy(AptBridge):
    """A proxy another process runs (see joined()): this process attaches its hosts to it and owns nothing
    else."""

    def __init__(self, description: dict):
        self.prefix, self.bridge, self.port = description["prefix"], description["bridge"], description["port"]
        self.network = ipaddress.ip_network(description["network"])
        self._token = description["token"]
        self._links = {}

    def __enter__(self) -> JoinedAptProxy:
        return self

    def __exit__(self, *exc) -> None:
        for netns in list(self._links):
            self.detach(netns)


def joined() -> contextlib.AbstractContextManager[AptBridge]:
    """The apt proxy of this test run: the one another process runs, when $CERES_MAIL_APT_PROXY describes
    it (tools/run_tests.py starts one for all of pytest's workers, so they share its cache), else one of
    this process's own."""
    description = os.environ.get(ENVIRONMENT)
    return JoinedAptProxy(json.loads(description)) if description else AptProxy()


class AptProxy(AptBridge):
    """`with AptProxy() as proxy:` apt-cacher-ng on a machine-side bridge; `TestNet(apt_proxy=proxy)` uses it."""

    def __init__(self, cache_dir: Path = DEFAULT_CACHE, port: int = DEFAULT_PORT):
        self.prefix, token = linux.new_prefix()
        self.bridge = f"ctn{token}apt"
        self._token = token
        self._wanted_cache = cache_dir
        self.cache_dir = cache_dir
        self.port = port
        self.network: ipaddress.IPv4Network | None = None
        self.process: subprocess.Popen | None = None  # apt-cacher-ng, once started
        self._links = {}
        self._stack = contextlib.ExitStack()

    def description(self) -> str:
        """What a process needs to join this proxy (joined()), as the value of $CERES_MAIL_APT_PROXY."""
        return json.dumps({"prefix": self.prefix, "bridge": self.bridge, "port": self.port,
                           "network": str(self.network), "token": self._token})

    def __enter__(self) -> AptProxy:
        try:
            linux.remove_stale()
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-", dir=linux.RUN_ROOT))
            self._stack.callback(linux.remove_tree, self.run_dir)
            self._make_bridge()
            self._lock_cache()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop apt-cacher-ng, delete the bridge and every host link, release the cache (idempotent)."""
        self._stack.close()

    # -- setup --

    def _make_bridge(self) -> None:
        self.network = _free_subnet()
        linux.ip("link", "add", self.bridge, "type", "bridge")
        self._stack.callback(self._delete_links)
        linux.ip("link", "set", "dev", self.bridge, "alias", self.prefix)
        linux.set_sysctl(f"net/ipv6/conf/{self.bridge}/disable_ipv6", "1")
        linux.ip("addr", "add", f"{self.address}/{self.network.prefixlen}", "dev", self.bridge)
        linux.ip("link", "set", "dev", self.bridge, "up")
        log.info("apt proxy bridge %s: %s", self.bridge, self.network)

    def _delete_links(self) -> None:
        for netns in list(self._links):
            self.detach(netns)
        linux.delete_link(self.bridge)

    def _lock_cache(self) -> None:
        """Own the persistent cache for the proxy's life; if another run holds it, use a private cold one."""
        self._wanted_cache.mkdir(parents=True, exist_ok=True)
        handle = (self._wanted_cache / ".lock").open("a")
        self._stack.callback(handle.close)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.cache_dir = self._wanted_cache / "cache"
        except BlockingIOError:
            log.warning("apt cache %s is in use by another run: this proxy starts with an empty cache",
                        self._wanted_cache)
            self.cache_dir = self.run_dir / "cache"
        self.cache_dir.mkdir(exist_ok=True)

    def _start(self) -> None:
        self.port = _free_port(self.address, self.port)
        conf_dir = self.run_dir / "conf"
        _write_config(conf_dir, self.run_dir, self.cache_dir, self.address, self.port)
        console = (self.run_dir / "console.log").open("w")
        self._stack.callback(console.close)
        self.process = subprocess.Popen(
            [ACNG, "-c", str(conf_dir)], stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.run_dir,
        )
        self._stack.callback(linux.stop_process, self.process, "apt-cacher-ng")
        self._stack.callback(self._log_traffic)
        self._wait_listening()
        log.info("apt proxy %s up (pid %d, cache %s)", self.url, self.process.pid, self.cache_dir)

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"apt-cacher-ng exited ({self.process.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"apt-cacher-ng not listening on {self.url} after {START_TIMEOUT:g} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(linux.POLL)

    def traffic(self) -> dict[str, int]:
        """Bytes apt-cacher-ng fetched from the mirror ("fetched") and sent to hosts ("served") so far."""
        totals = {"fetched": 0, "served": 0}
        path = self.run_dir / "log" / "apt-cacher.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            fields = line.split("|")
            if len(fields) >= 3 and fields[1] in ("I", "O") and fields[2].isdigit():
                totals["fetched" if fields[1] == "I" else "served"] += int(fields[2])
        return totals

    def _log_traffic(self) -> None:
        log.info("apt proxy %s: %s bytes (cache %s)", self.url, self.traffic(), self.cache_dir)

    def log_tail(self, lines: int = 30) -> str:
        """The end of apt-cacher-ng's console output and error log (for failure messages)."""
        texts = []
        for name in ("console.log", "log/apt-cacher.err", "log/apt-cacher.log"):
            path = self.run_dir / name
            if path.exists():
                texts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(texts)


def _write_config(conf_dir: Path, run_dir: Path, cache_dir: Path, address: str, port: int) -> None:
    conf_dir.mkdir()
    (run_dir / "log").mkdir()
    (conf_dir / "backends_debian").write_text(f"{debian_mirror()}/\n")
    security = debian_security_mirror()
    security_remap = ""
    if security:
        (conf_dir / "backends_debsec").write_text(f"{security}/\n")
        security_remap = ("Remap-secdeb: security.debian.org security.debian.org/debian-security "
                          "deb.debian.org/debian-security /debian-security ; file:backends_debsec\n")
    (conf_dir / "acng.conf").write_text(
        f"""# apt-cacher-ng of tests/testnet: this test run's own, never the packaged service
CacheDir: {cache_dir}
LogDir: {run_dir / 'log'}
SupportDir: {SUPPORT_DIR}
SocketPath: {run_dir / 'acng.socket'}
PidFile: {run_dir / 'acng.pid'}
ForeGround: 1
BindAddress: {address}
Port: {port}
# Debian archives only, fetched from the mirror this machine's apt uses; no CONNECT tunnels.
ForceManaged: 1
PassThroughPattern: ^nothing\\.invalid:0$
Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian
{security_remap}ReportPage: acng-report.html
ExThreshold: 4
VerboseLog: 1
"""
    )


def _free_subnet() -> ipaddress.IPv4Network:
    """A random /24 of POOL that no address or route on the machine overlaps."""
    used = []
    for args in (("-4", "-o", "addr", "show"), ("-4", "route", "show", "table", "all")):
        for line in linux.ip(*args).stdout.splitlines():
            for token in line.split():
                with contextlib.suppress(ValueError):
                    if "/" in token or token[0].isdigit():
                        used.append(ipaddress.ip_network(token, strict=False))
    candidates = [net for net in POOL.subnets(new_prefix=24) if not any(net.overlaps(u) for u in used)]
    if not candidates:
        raise RuntimeError(f"no free /24 in {POOL} on this machine")
    return random.choice(candidates)


def _free_port(address: str, preferred: int) -> int:
    """`preferred` if it can be bound on `address`, else a free one the kernel picks."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
                return probe.getsockname()[1]
            except OSError:
                log.warning("port %d is taken on %s; picking another", port, address)
    raise RuntimeError(f"no free port on {address}")
