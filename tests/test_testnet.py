"""The test network itself (tests/testnet): Debian hosts boot with systemd, reach each other over the wire and
nothing beyond it, install packages through the test's own apt proxy, and leave nothing behind; a home segment
behind a NAT router reaches the internet and is unreachable from it; a host given /dev/net/tun runs userspace
WireGuard, and a tunnel from home through the NAT to a VPS carries traffic both ways; a signed DNS tree of its
own (tests/testnet/dns_tree.py) makes a zone secure at its resolver once the zone's DS is registered.

Tests of the mail host built on this harness rely on it; if these fail, fix the harness before reading theirs.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.dns_harness import named_argv, write_named_config
from tests.dns_signing import ds_of, make_key, sign
from tests.testnet import INTERNET, NetnsHost, Router, SystemHost, TestNet, leftovers, linux, snapshots
from tests.testnet.dns_tree import DnsTree
from tests.testnet.fixtures import open_testnet, require_testnet, testnet  # noqa: F401 (testnet: a fixture)

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

WIRE = "198.51.100"  # TEST-NET-2: the test's own addresses inside its namespaces
ALPHA, BETA, GAMMA = f"{WIRE}.10", f"{WIRE}.11", f"{WIRE}.12"
ALPHA6, BETA6 = "2001:db8:100::10", "2001:db8:100::11"
BOOT_STATES: dict[str, str] = {}  # what wait_running() said, per host
OUTSIDE = ("192.0.2.1", "203.0.113.80")  # this machine's gateway and (here) its Debian mirror: never reachable
PUBLIC, HOME = "203.0.113", "192.168.77"  # the home tests: internet addresses (TEST-NET-3), the home network
VPS, WEB, STRAY, ROUTER_OUT = f"{PUBLIC}.25", f"{PUBLIC}.30", f"{PUBLIC}.31", f"{PUBLIC}.77"
ROUTER_IN, MAIL_HOME, LAPTOP = f"{HOME}.1", f"{HOME}.25", f"{HOME}.30"
IDENTITY = ("/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key.pub")  #: what makes a booted host itself
# connect to argv[1]:argv[2] (timeout argv[3] s, refusals retried for argv[4] s: a server starting); prints
# "CONNECTED <what the server sent>", or "refused|<errno>|timeout <seconds>" (this machine has no ping)
CONNECT = textwrap.dedent(
    """\
    import socket, sys, time
    host, port, timeout, patience = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    started = time.monotonic()
    while True:
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                print("CONNECTED", s.recv(64).decode().strip())
            break
        except ConnectionRefusedError:
            if time.monotonic() - started < patience:
                time.sleep(0.1)
                continue
            print("refused", round(time.monotonic() - started, 2))
            break
        except OSError as error:
            print(error.errno or "timeout", round(time.monotonic() - started, 2))
            break
    """
)
# on argv[1]:7000, tells each client the address it came from
TELL_PEER = textwrap.dedent(
    """\
    import socket, sys
    server = socket.create_server((sys.argv[1], 7000))
    while True:
        client, peer = server.accept()
        client.sendall(f"{peer[0]}\\n".encode())
        client.close()
    """
)


@pytest.fixture(scope="module")
def hosts(testnet: TestNet) -> Iterator[tuple[SystemHost, SystemHost, NetnsHost]]:
    started = time.monotonic()
    alpha = testnet.add_system_host("alpha", f"{ALPHA}/24", f"{ALPHA6}/64", nameserver=GAMMA)
    beta = testnet.add_system_host("beta", f"{BETA}/24", f"{BETA6}/64", nameserver=GAMMA)
    gamma = testnet.add_netns_host("gamma", f"{GAMMA}/24")
    try:
        BOOT_STATES.update({host.name: host.wait_running() for host in (alpha, beta)})
        log.info("two hosts booted to %s in %.1f s", BOOT_STATES, time.monotonic() - started)
        yield alpha, beta, gamma
    finally:
        for host in (gamma, beta, alpha):
            testnet.remove_host(host.name)


def test_system_hosts_boot_with_systemd_and_sshd(hosts):
    """Each Debian host boots with systemd to a running sshd, with its own hostname, resolver and SSH host keys."""
    for host in hosts[:2]:
        assert BOOT_STATES[host.name] in ("running", "degraded"), host.failed_units()
        assert host.exec(["systemctl", "is-active", "ssh"]).stdout.strip() == "active"
        assert host.exec(["hostname"]).stdout.strip() == host.name
        assert host.exec(["cat", "/etc/resolv.conf"]).stdout == f"nameserver {GAMMA}\n"
    keys = [host.exec(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"], check=True).stdout for host in hosts[:2]]
    assert keys[0] != keys[1], "each host makes its own SSH host keys"


def test_hosts_reach_each_other_over_the_wire(hosts):
    """Hosts on the wire reach each other over IPv4 and IPv6, and a netns host reaches a booted host's sshd."""
    alpha, beta, gamma = hosts
    for source, target in ((alpha, BETA), (alpha, GAMMA), (beta, ALPHA), (beta, GAMMA)):
        result = source.exec(["ping", "-c1", "-W2", target], timeout=10)
        assert result.returncode == 0, f"{source.name} -> {target}: {result.stdout}{result.stderr}"
    result = alpha.exec(["ping", "-6", "-c1", "-W2", BETA6], timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    # and the other way round, from a process of this machine in the netns host to alpha's sshd
    probe = f"import socket; print(socket.create_connection(('{ALPHA}', 22), timeout=3).recv(64))"
    result = gamma.run([sys.executable, "-c", probe], timeout=10)
    assert result.returncode == 0 and "SSH-2.0-" in result.stdout, result.stdout + result.stderr


def test_nothing_beyond_the_wire(hosts):
    """No default route anywhere; the machine's gateway and mirror fail at once ("network unreachable")."""
    alpha, _, gamma = hosts
    assert "default" not in alpha.exec(["ip", "route"]).stdout
    assert "default" not in alpha.exec(["ip", "-6", "route"]).stdout
    assert "default" not in gamma.run(["ip", "route"]).stdout
    connect = textwrap.dedent(
        """\
        import socket, sys, time
        started = time.monotonic()
        try:
            socket.create_connection((sys.argv[1], 80), timeout=5)
            print("CONNECTED")
        except OSError as error:
            print(error.errno, round(time.monotonic() - started, 2))
        """
    )
    for address in OUTSIDE:
        for output in (alpha.exec(["python3", "-c", connect, address], timeout=15).stdout,
                       gamma.run([sys.executable, "-c", connect, address], timeout=15).stdout):
            errno_, seconds = output.split()
            assert errno_ == "101" and float(seconds) < 1, f"{address}: {output}"  # ENETUNREACH, fast


def test_netns_host_serves_http_to_a_system_host(hosts, tmp_path):
    """A server in a netns host answers a booted Debian host over HTTP."""
    alpha, _, gamma = hosts
    (tmp_path / "hello.txt").write_text("hello from gamma\n")
    gamma.popen([sys.executable, "-m", "http.server", "--bind", GAMMA, "--directory", tmp_path, "8080"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fetch = textwrap.dedent(
        f"""\
        import time, urllib.request
        deadline = time.monotonic() + 15
        while True:
            try:
                print(urllib.request.urlopen("http://{GAMMA}:8080/hello.txt", timeout=2).read().decode(), end="")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        """
    )
    result = alpha.exec(["python3", "-c", fetch], timeout=30)
    assert result.stdout == "hello from gamma\n", result.stdout + result.stderr


def test_apt_installs_through_the_proxy(hosts):
    """A host with no internet still runs apt-get update and install, through the test's apt proxy."""
    alpha = hosts[0]
    started = time.monotonic()
    update = alpha.exec(["apt-get", "update"], timeout=300)
    assert update.returncode == 0, update.stdout + update.stderr
    updated = time.monotonic()
    install = alpha.exec(["apt-get", "install", "-y", "--no-install-recommends", "hello"], timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    log.info("apt-get update %.1f s, install hello %.1f s", updated - started, time.monotonic() - updated)
    assert alpha.exec(["hello"]).stdout == "Hello, world!\n"



def test_a_snapshot_boots_what_its_command_made_and_nothing_of_the_host_that_made_it(testnet, tmp_path, monkeypatch):
    """tests/testnet/snapshots.py: a host booted over an installed snapshot has what the command installed, wrote
    and removed, but its own machine id and SSH host keys; the snapshot is built once, then taken from the cache."""
    monkeypatch.setattr(snapshots, "SNAPSHOTS_DIR", tmp_path / "snapshots")
    builder: dict[str, str] = {}

    def install(host: SystemHost) -> None:
        done = host.exec(["sh", "-c", "apt-get -q update && apt-get -q install -y --no-install-recommends hello"
                                      " && rm /etc/issue.net && echo layered > /etc/layered"], timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        builder.update({path: host.path(path).read_text() for path in IDENTITY})

    def never(host: SystemHost) -> None:
        raise AssertionError("a cached snapshot is not built again")

    snapshot = snapshots.installed_snapshot(testnet, "kappa", ("hello",), install)
    assert snapshots.installed_snapshot(testnet, "kappa", ("hello",), never) == snapshot
    host = testnet.add_system_host("kappa", f"{WIRE}.50/24", layers=(snapshot,))
    try:
        host.wait_running()
        assert host.exec(["hello"]).stdout == "Hello, world!\n"
        assert host.exec(["cat", "/etc/layered"]).stdout == "layered\n"
        assert host.exec(["test", "-e", "/etc/issue.net"]).returncode == 1, "what the command removed stays removed"
        assert host.exec(["test", "-e", "/etc/issue"]).returncode == 0
        for path in IDENTITY:
            assert host.path(path).read_text() != builder[path], f"{path}: the host's own"
    finally:
        testnet.remove_host("kappa")


def test_cloud_init_runs_a_nocloud_seed(testnet):
    """Files given to a host land before boot; a NoCloud seed among them makes cloud-init run it."""
    seed = "/var/lib/cloud/seed/nocloud"
    user_data = "#cloud-config\nwrite_files:\n- path: /etc/seeded\n  content: seeded\nruncmd:\n- [touch, /root/ran]\n"
    host = testnet.add_system_host("zeta", f"{WIRE}.30/24", gateway=GAMMA, files={
        f"{seed}/meta-data": "instance-id: zeta-1\nlocal-hostname: zeta\n",
        f"{seed}/user-data": (user_data, 0o600, 0, 0),
        "/root/.ssh/authorized_keys": ("ssh-ed25519 AAAA test\n", 0o600, 0, 0),
    })
    try:
        assert host.wait_running() == "running", host.failed_units()
        assert "status: done" in host.exec(["cloud-init", "status", "--wait"], timeout=60).stdout
        assert host.exec(["cat", "/etc/seeded"]).stdout == "seeded"
        assert host.exec(["test", "-e", "/root/ran"]).returncode == 0
        assert host.exec(["stat", "-c", "%a %U", "/root/.ssh/authorized_keys"]).stdout == "600 root\n"
        assert host.path("/etc/seeded").read_text() == "seeded"  # the same file, seen from this machine
        assert f"default via {GAMMA} dev eth0" in host.exec(["ip", "route"]).stdout
    finally:
        testnet.remove_host("zeta")


@dataclass
class Home:
    """The home tests' network: a home segment behind `router`, a laptop there and one internet web host."""
    segment: str
    router: Router
    laptop: NetnsHost
    web: NetnsHost
    stray: NetnsHost  # on the home segment with an internet address, and no router: alone on its Ethernet


@pytest.fixture(scope="module")
def home(testnet: TestNet) -> Iterator[Home]:
    segment = testnet.add_segment("home")
    names = []
    try:
        router = testnet.add_router("router", inside=(segment, f"{ROUTER_IN}/24"),
                                    outside=(INTERNET, f"{ROUTER_OUT}/24"))
        names.append("router")
        laptop = testnet.add_netns_host("laptop", f"{LAPTOP}/24", segment=segment, gateway=ROUTER_IN)
        names.append("laptop")
        web = testnet.add_netns_host("web", f"{WEB}/24")
        names.append("web")
        stray = testnet.add_netns_host("stray", f"{STRAY}/24", segment=segment)
        names.append("stray")
        web.popen([sys.executable, "-c", TELL_PEER, WEB], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield Home(segment, router, laptop, web, stray)
    finally:
        for name in reversed(names):
            testnet.remove_host(name)


def connect(source: NetnsHost, address: str, port: int = 7000, timeout: float = 3, patience: float = 0) -> str:
    """What CONNECT says, run in `source` (the first word: CONNECTED, refused, an errno or timeout)."""
    result = source.run([sys.executable, "-c", CONNECT, address, str(port), str(timeout), str(patience)],
                        timeout=timeout + patience + 15)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_segments_are_separate_ethernets(home):
    """Same subnet, other segment: nothing gets across without a router (not even ARP: no such host)."""
    for source, target in ((home.stray, WEB), (home.web, STRAY)):
        assert connect(source, target, timeout=8).split()[0] == "113", f"{source.name} -> {target}"  # EHOSTUNREACH
    for source, target in ((home.laptop, ROUTER_IN), (home.web, ROUTER_OUT)):
        assert connect(source, target, port=9).split()[0] == "refused", f"{source.name} -> {target}"  # it's there


def test_home_reaches_the_internet_with_the_routers_address(home):
    """A laptop at home reaches an internet host, which sees only the router's public address (NAT)."""
    assert connect(home.laptop, WEB, patience=10) == f"CONNECTED {ROUTER_OUT}\n"  # masqueraded


def test_home_is_unreachable_from_the_internet(home):
    """No route to the home network ("network unreachable" at once); and with a route given by hand to the
    router, the router lets nothing in that home did not start."""
    home.laptop.popen([sys.executable, "-c", TELL_PEER, LAPTOP], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    assert connect(home.router, LAPTOP, patience=10) == f"CONNECTED {ROUTER_IN}\n"  # it listens, for home
    assert HOME not in home.web.run(["ip", "route"]).stdout
    errno_, seconds = connect(home.web, LAPTOP).split()
    assert errno_ == "101" and float(seconds) < 1, f"{errno_} after {seconds} s"  # ENETUNREACH, fast
    home.web.run(["ip", "route", "add", f"{HOME}.0/24", "via", ROUTER_OUT], check=True)
    try:
        assert connect(home.web, LAPTOP, timeout=2).split()[0] == "timeout"  # dropped by the router
    finally:
        home.web.run(["ip", "route", "del", f"{HOME}.0/24"], check=True)


@pytest.fixture(scope="module")
def wireguard_hosts(testnet: TestNet, home: Home) -> Iterator[tuple[SystemHost, SystemHost]]:
    """A mail server at home (behind the router) and a VPS on the internet, both with /dev/net/tun."""
    names = []
    try:
        vps = testnet.add_system_host("vps", f"{VPS}/24", devices=("net/tun",))
        names.append("vps")
        mail = testnet.add_system_host("mailhome", f"{MAIL_HOME}/24", segment=home.segment, gateway=ROUTER_IN,
                                       devices=("net/tun",))
        names.append("mailhome")
        for host in (vps, mail):
            assert host.wait_running() in ("running", "degraded")
        yield mail, vps
    finally:
        for name in reversed(names):
            testnet.remove_host(name)


def test_tun_device_only_when_asked(testnet, wireguard_hosts):
    """Only a host given /dev/net/tun can make tun devices, its own; a missing or relative device path is refused."""
    mail, _ = wireguard_hosts
    assert mail.exec(["stat", "-c", "%F %t:%T", "/dev/net/tun"]).stdout == "character special file a:c8\n"
    mail.exec(["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"], check=True)
    assert "tun0:" in mail.exec(["ip", "link", "show", "tun0"], check=True).stdout
    assert " tun0:" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout  # its own
    mail.exec(["ip", "link", "delete", "tun0"], check=True)
    plain = testnet.add_system_host("plain", f"{WIRE}.40/24")
    try:
        assert plain.exec(["test", "-e", "/dev/net/tun"]).returncode != 0
        result = plain.exec(["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"])
        assert result.returncode != 0 and "No such file or directory" in result.stderr, result.stderr
        assert plain.exec(["ip", "link", "show", "tun0"]).returncode != 0
    finally:
        testnet.remove_host("plain")
    with pytest.raises(ValueError, match="no /dev/no-such-device"):
        testnet.add_system_host("nodevice", f"{WIRE}.41/24", devices=("no-such-device",))
    with pytest.raises(ValueError, match="relative path"):
        testnet.add_system_host("nodevice", f"{WIRE}.41/24", devices=("../sda",))
    assert "nodevice" not in testnet.hosts


def test_wireguard_from_home_through_the_nat(wireguard_hosts):
    """wireguard-go (wg-quick's fallback: this kernel has no wireguard module) from Debian, through the apt
    proxy; the home host starts the tunnel and keeps it alive, then the VPS reaches the home host through it."""
    mail, vps = wireguard_hosts
    keys = {}
    for host in (mail, vps):
        started = time.monotonic()
        host.exec(["apt-get", "update"], timeout=300, check=True)
        host.exec(["apt-get", "install", "-y", "--no-install-recommends", "wireguard-go", "wireguard-tools"],
                  timeout=300, check=True)
        log.info("%s: wireguard-go and wireguard-tools in %.1f s", host.name, time.monotonic() - started)
        private = host.exec(["wg", "genkey"], check=True).stdout.strip()
        public = host.exec(["wg", "pubkey"], input=private + "\n", check=True).stdout.strip()
        keys[host.name] = private, public
    configs = {
        vps: f"[Interface]\nAddress = 10.77.0.1/24\nListenPort = 51820\nPrivateKey = {keys['vps'][0]}\n\n"
             f"[Peer]\nPublicKey = {keys['mailhome'][1]}\nAllowedIPs = 10.77.0.2/32\n",
        mail: f"[Interface]\nAddress = 10.77.0.2/24\nPrivateKey = {keys['mailhome'][0]}\n\n"
              f"[Peer]\nPublicKey = {keys['vps'][1]}\nEndpoint = {VPS}:51820\nAllowedIPs = 10.77.0.1/32\n"
              "PersistentKeepalive = 5\n",
    }
    for host in (vps, mail):
        host.exec(["install", "-m", "600", "/dev/stdin", "/etc/wireguard/wg0.conf"], input=configs[host], check=True)
        result = host.exec(["systemctl", "start", "wg-quick@wg0"], timeout=60)
        journal = host.exec(["journalctl", "-u", "wg-quick@wg0", "--no-pager"]).stdout
        assert result.returncode == 0, f"{host.name}: {result.stderr}\n{journal}"
        log.info("%s: wg-quick up:\n%s", host.name, journal)
        assert "userspace" in journal, journal  # wireguard-go, not a kernel interface
    for source, target in ((mail, "10.77.0.1"), (vps, "10.77.0.2")):
        result = source.exec(["ping", "-c1", "-W2", "-w20", target], timeout=30)
        assert result.returncode == 0, f"{source.name} -> {target}: {result.stdout}{result.stderr}"
    endpoints = vps.exec(["wg", "show", "wg0", "endpoints"], check=True).stdout
    assert f"\t{ROUTER_OUT}:" in endpoints, endpoints  # the VPS knows home only by the router's address
    # without the tunnel, the VPS has no way to the home host
    result = vps.exec(["ping", "-c1", "-W1", MAIL_HOME], timeout=10)
    assert result.returncode != 0 and "unreachable" in result.stdout + result.stderr, result.stdout + result.stderr


def child_zone(origin: str, server: str) -> str:
    """A domain served by `server` as ns.<origin>, with one A record (mail.<origin>, 203.0.113.25)."""
    return (f"$TTL 300\n@ IN SOA ns.{origin}. hostmaster.{origin}. 1 10000 2400 604800 300\n@ IN NS ns.{origin}.\n"
            f"ns IN A {server}\nmail IN A 203.0.113.25\n")


def test_the_signed_tree_validates_a_zone_once_its_ds_is_registered(testnet, tmp_path):
    """In a test internet, the tree's resolver answers a signed zone with AD once the registrar's step put its
    DS in the parent (insecure before, never SERVFAIL), and an unsigned zone without AD."""
    root_dns, resolver, auth = (testnet.add_netns_host(name, f"{WIRE}.{last}/24")
                                for name, last in (("root-dns", 60), ("resolver", 61), ("auth", 62)))
    try:
        key = make_key("example.com", tmp_path / "keys")
        zones = {"example.com": sign("example.com", child_zone("example.com", auth.address), [key]),
                 "example.org": child_zone("example.org", auth.address)}
        (tmp_path / "auth").mkdir()
        auth.popen(named_argv(write_named_config(tmp_path / "auth", zones, auth.address)),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        tree = DnsTree(tmp_path / "tree", root_dns, resolver)
        for origin in zones:
            tree.delegate(origin, {f"ns.{origin}": auth.address})
        tree.start()
        log.info("signed tree up in %.1f s", time.monotonic() - started)
        linux.wait_until(lambda: tree.serving(auth.address, zones), 10, "the zones' named")
        before = tree.ask(auth, "mail.example.com", "A")
        assert before.rdata("A") == ["203.0.113.25"] and not before.secure, before
        tree.register_ds("example.com", [ds_of(key)])
        after = tree.ask(auth, "mail.example.com", "A")
        assert after.secure and after.rdata("A") == ["203.0.113.25"], after
        unsigned = tree.ask(auth, "mail.example.org", "A")
        assert unsigned.rdata("A") == ["203.0.113.25"] and not unsigned.secure, unsigned
    finally:
        for host in ("auth", "resolver", "root-dns"):
            testnet.remove_host(host)


def test_a_new_hosts_addresses_are_final_at_once():
    """Nothing of a host just added is still tentative (duplicate address detection), so a program started in it
    at once sees no network change a second later (Chromium aborts its first page load when it does)."""
    require_testnet()
    with TestNet() as net:
        host = net.add_netns_host("zeta", f"{WIRE}.30/24", "2001:db8:100::30/64")
        addresses = host.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert "scope link" in addresses and "2001:db8:100::30/64" in addresses, addresses
        assert "tentative" not in addresses, addresses


def test_cleanup_leaves_nothing_behind(tmp_path):
    """A whole session's worth (proxy, wire, a booted host, a netns host with a process) leaves no trace."""
    require_testnet()
    with open_testnet(cache_dir=tmp_path) as net:
        host = net.add_system_host("delta", f"{WIRE}.20/24")
        other = net.add_netns_host("epsilon", f"{WIRE}.21/24")
        other.popen(["sleep", "600"])
        proxy = net.apt_proxy
        owners = (net.prefix, proxy.prefix)
        process = proxy.process
        assert all(leftovers(owner) for owner in owners)
        assert host.exec(["true"]).returncode == 0
    assert [leftovers(owner) for owner in owners] == [{}, {}]
    assert process.poll() is not None, "apt-cacher-ng still runs"
    listings = {
        "ip netns": subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout,
        "ip link": subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout,
        "/proc/mounts": open("/proc/mounts").read(),
    }
    for what, listing in listings.items():
        for mark in (*owners, proxy.bridge):
            assert mark not in listing, f"{mark} still in {what}"
