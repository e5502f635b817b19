"""The test network itself (tests/testnet): Debian hosts boot with systemd, reach each other over the wire and
nothing beyond it, install packages through the test's own apt proxy, and leave nothing behind.

Tests of the mail host built on this harness rely on it; if these fail, fix the harness before reading theirs.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.testnet import NetnsHost, SystemHost, TestNet, leftovers
from tests.testnet.fixtures import open_testnet, require_testnet, testnet  # noqa: F401 (testnet: a fixture)

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

WIRE = "198.51.100"  # TEST-NET-2: the test's own addresses inside its namespaces
ALPHA, BETA, GAMMA = f"{WIRE}.10", f"{WIRE}.11", f"{WIRE}.12"
ALPHA6, BETA6 = "2001:db8:100::10", "2001:db8:100::11"
BOOT_STATES: dict[str, str] = {}  # what wait_running() said, per host
OUTSIDE = ("192.0.2.1", "203.0.113.80")  # this machine's gateway and (here) its Debian mirror: never reachable


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
    for host in hosts[:2]:
        assert BOOT_STATES[host.name] in ("running", "degraded"), host.failed_units()
        assert host.exec(["systemctl", "is-active", "ssh"]).stdout.strip() == "active"
        assert host.exec(["hostname"]).stdout.strip() == host.name
        assert host.exec(["cat", "/etc/resolv.conf"]).stdout == f"nameserver {GAMMA}\n"
    keys = [host.exec(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"], check=True).stdout for host in hosts[:2]]
    assert keys[0] != keys[1], "each host makes its own SSH host keys"


def test_hosts_reach_each_other_over_the_wire(hosts):
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
    alpha = hosts[0]
    started = time.monotonic()
    update = alpha.exec(["apt-get", "update"], timeout=300)
    assert update.returncode == 0, update.stdout + update.stderr
    updated = time.monotonic()
    install = alpha.exec(["apt-get", "install", "-y", "--no-install-recommends", "hello"], timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    log.info("apt-get update %.1f s, install hello %.1f s", updated - started, time.monotonic() - updated)
    assert alpha.exec(["hello"]).stdout == "Hello, world!\n"


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
