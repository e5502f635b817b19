"""Mail at home, the public address on a VPS (`gatewayMode: wireguard`, README, Mail at home behind a VPS),
end to end on real hosts of the test internet (tests/mailnet/gateway_net.py): the VM on a home network behind a
NAT router, a VPS holding the address the stack publishes, every command of both ends run over SSH from an
operator at home, as `pulumi up` would run them.

- both ends install, each with userspace WireGuard (wireguard-go: this kernel has no module);
- the VM cannot be reached from the internet; the VPS opens only the mail ports, WireGuard and SSH from
  adminCidrs;
- mail from the remote domain reaches the VM's mailbox through the VPS with the sender's own address;
- mail from the VM leaves from the VPS's address, SPF, DKIM and DMARC passing at the receiver;
- `mailctl verify` is green against the VPS's address, red exactly in its connection checks while the tunnel
  is down, green once it is up again;
- a re-run of both ends changes no file and restarts no service;
- the tunnel comes back after a reboot of the VPS, then of the VM (tests/testnet: SystemHost.reboot);
- no private key in any output or journal.
"""

from __future__ import annotations

import base64
import email
import ipaddress
import json
import logging
import sys
import time

import pytest

from tests.mailnet.gateway_net import HOME_ROUTER_OUTSIDE, VM_HOME, VPS, open_gateway_net
from tests.mailnet.host_checks import secret_file, stdin_secrets, verdict
from tests.mailnet.scenario import ADDRESSES, REMOTE_DOMAIN
from tests.testnet import linux

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

NO_REPLY = "no-reply@example.com"
REMOTE, CLIENT = ADDRESSES["remote"], ADDRESSES["client"]
FORWARDED = (25, 80, 443, 465, 587, 993)
VM_FILES = ("/etc/wireguard/wg-ceres.conf", "/etc/postfix/main.cf")
VPS_FILES = ("/etc/wireguard/wg-ceres.conf", "/etc/ceres-mail/gateway.nft", "/etc/sysctl.d/60-ceres-gateway.conf",
             "/etc/systemd/system/ceres-mail-gateway-firewall.service")
VM_SERVICES = ("wg-quick@wg-ceres", "postfix")
VPS_SERVICES = ("wg-quick@wg-ceres", "ceres-mail-gateway-firewall")
#: the rows of `mailctl verify` that read DNS only: they stay green whatever the tunnel does
RECORD_CHECKS = ("dns ", "dkim ", "ptr ", "mta-sts id ")
#: the rows of the checks that connect to the host (through the VPS)
CONNECTING = ("smtp ", "submission ", "imaps ", "https ", "webmail ", "mta-sts policy ")
#: a TCP connection's fate from a namespace: open, refused, or the error (timeout: a drop on the way)
CONNECT = ("import socket, sys\n"
           "try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4).close(); print('open')\n"
           "except ConnectionRefusedError: print('refused')\n"
           "except OSError as e: print(type(e).__name__)\n")
#: every output of the module's commands, for the last test: no private key in any of them
OUTPUTS: list[str] = []


@pytest.fixture(scope="module")
def gwnet(tmp_path_factory, shared_apt_proxy):
    with open_gateway_net(tmp_path_factory.mktemp("gatewaynet"), shared_apt_proxy) as net:
        yield net


@pytest.fixture(scope="module")
def installed(gwnet):
    """The VPS's command, then the VM's chain: every CompletedProcess, in order."""
    started = time.monotonic()
    results = gwnet.install()
    log.info("install of both ends: %.0f s", time.monotonic() - started)
    OUTPUTS.extend(r.stdout + r.stderr for r in results)
    failed = [r for r in results if r.returncode != 0]
    if failed:
        pytest.fail(f"install failed:\n{failed[0].stdout[-4000:]}\n{failed[0].stderr[-4000:]}", pytrace=False)
    return results


@pytest.fixture(scope="module")
def password(gwnet, installed) -> str:
    return stdin_secrets(gwnet.mailnet, "-install-mail")["MAILBOX_PASSWORD"]


@pytest.fixture(scope="module")
def cafile(gwnet, installed) -> str:
    return gwnet.mailnet.pebble_root()


def connects(host, address: str, port: int) -> str:
    return host.run([sys.executable, "-c", CONNECT, address, str(port)], timeout=30).stdout.strip()


def dns(gwnet, name: str, rtype: str) -> list[str]:
    return gwnet.mailnet.probe("dns", "--host", ADDRESSES["dns"], "--name", name, "--subject", rtype)["answer"]


def inbound(gwnet, password: str, cafile: str, subject: str) -> str:
    """A message from the remote domain's MTA to the MX the DNS names, read back over IMAPS at that address:
    the message as the VM's mailbox holds it."""
    [mx] = dns(gwnet, "example.com", "MX")
    assert mx.endswith("10 mail.example.com."), mx
    [a] = dns(gwnet, "mail.example.com", "A")
    assert a.endswith(f"A {VPS}"), a
    sent = gwnet.mailnet.probe("send", "--host", VPS, "--sender", f"someone@{REMOTE_DOMAIN}", "--to", NO_REPLY,
                               "--subject", subject, host=gwnet.mailnet.remote)
    assert sent.get("accepted"), sent
    read = gwnet.mailnet.probe("imap", "--host", VPS, "--port", "993", "--user", NO_REPLY, "--password-file",
                               secret_file(gwnet.mailnet, "no-reply", password), "--cafile", cafile,
                               "--subject", subject, "--wait", "60", timeout=120)
    assert read.get("found"), read
    return read["message"]


def postfix_received(message: str) -> str:
    """The Received header Postfix on the VM wrote: whom it saw connecting (the VPS keeps the client's
    address: DNAT only)."""
    return next(" ".join(h.split()) for h in email.message_from_string(message).get_all("Received", []) if "(Postfix)" in h)


def outbound(gwnet, password: str, cafile: str, subject: str) -> dict:
    """A message submitted on 587 at the VPS's address as the no-reply mailbox to the remote domain: the
    remote MTA's verdict."""
    sent = gwnet.mailnet.probe("submit", "--host", VPS, "--port", "587", "--user", NO_REPLY, "--password-file",
                               secret_file(gwnet.mailnet, "no-reply", password), "--cafile", cafile,
                               "--sender", NO_REPLY, "--to", f"someone@{REMOTE_DOMAIN}", "--subject", subject)
    assert sent.get("sent"), sent
    return verdict(gwnet.mailnet, subject, timeout=90)


# --- 1. the install --------------------------------------------------------------------------------------


def test_both_ends_install_with_userspace_wireguard(gwnet, installed):
    """Both ends install in order with userspace WireGuard and the tunnel up; DNS publishes the VPS, never home."""
    vps, *vm = installed
    assert vps.returncode == 0 and [r.returncode for r in vm] == [0] * len(gwnet.deployment.commands)
    # the tunnel comes up after the packages and before the certificate, which ACME checks through the VPS
    stage = gwnet.deployment.stage
    assert stage("-install-packages") < stage("-install-gateway") < stage("-install-tls")
    assert gwnet.deployment.gateway.command.name.endswith("-gateway-install-vps")
    assert gwnet.deployment.gateway.user == "root"
    gateway = vm[stage("-install-gateway")]
    for output in (vps.stdout, gateway.stdout):
        assert "wireguard: wireguard-go (userspace: this kernel has no WireGuard module)" in output, output[-2000:]
    assert "gateway: WireGuard on udp/51820" in vps.stdout, vps.stdout[-2000:]
    assert "public addresses on eth0" in vps.stdout, "the VPS holds the published address on its interface"
    tunnel = ipaddress.ip_network(gwnet.tunnel)  # the VPS at its first address, the VM at the second
    assert f"gateway: tunnel up, {tunnel[2]} <-> {tunnel[1]}" in gateway.stdout
    # DNS publishes the VPS: the mail host's A record and the PTR of the VPS's address
    assert dns(gwnet, "mail.example.com", "A")[0].endswith(f"A {VPS}")
    assert dns(gwnet, "25.113.0.203.in-addr.arpa", "PTR")[0].endswith("PTR mail.example.com.")
    assert not any(VM_HOME in answer for zone in gwnet.deployment.zones.values() for answer in zone.splitlines())


# --- 2. what the internet reaches ------------------------------------------------------------------------


def test_the_home_vm_is_unreachable_from_the_internet(gwnet, installed):
    """The home VM cannot be reached from the internet, not even with a route to home added by hand."""
    client = gwnet.mailnet.client
    assert connects(client, VM_HOME, 25) != "open"
    # even with a route to the home network by hand, the router lets in only answers
    client.run(["ip", "route", "add", "192.168.77.0/24", "via", HOME_ROUTER_OUTSIDE], timeout=10)
    try:
        assert {port: connects(client, VM_HOME, port) for port in (22, 25)} == {22: "TimeoutError", 25: "TimeoutError"}
    finally:
        client.run(["ip", "route", "del", "192.168.77.0/24"], timeout=10)


def test_the_vps_opens_only_the_mail_ports_wireguard_and_ssh_from_admin_networks(gwnet, installed):
    """The VPS opens the mail ports to all and SSH to adminCidrs only; anything else listening on it stays shut."""
    client = gwnet.mailnet.client
    assert {port: connects(client, VPS, port) for port in FORWARDED} == dict.fromkeys(FORWARDED, "open")
    assert connects(client, VPS, 22) == "TimeoutError", "SSH from outside adminCidrs is dropped"
    assert connects(gwnet.operator, VPS, 22) == "open"
    assert gwnet.vps_ssh("true", timeout=60).returncode == 0, "the operator logs in (NATed, from an admin network)"
    # something listens on the VPS on ports it does not forward: the firewall drops them
    gwnet.vps.exec(["systemd-run", "--unit=test-listener-8080", "python3", "-m", "http.server", "8080"], check=True)
    gwnet.vps.exec(["systemd-run", "--unit=test-listener-3306", "python3", "-m", "http.server", "3306"], check=True)
    try:
        linux.wait_until(lambda: "8080" in gwnet.vps.exec(["ss", "-ltn"]).stdout, 20, "the test listener", every=5)
        assert gwnet.vps.exec(["python3", "-c", CONNECT, "127.0.0.1", "8080"]).stdout.strip() == "open"
        assert {port: connects(client, VPS, port) for port in (3306, 8080)} == {3306: "TimeoutError", 8080: "TimeoutError"}
    finally:
        gwnet.vps.exec(["systemctl", "stop", "test-listener-8080", "test-listener-3306"])
    # the VM's own SSH stays at home: the VPS forwards no port 22
    ruleset = gwnet.vps.exec(["nft", "list", "table", "inet", "ceres_gateway"], check=True).stdout
    assert "dport 22" in ruleset and f"{HOME_ROUTER_OUTSIDE}" in ruleset


def test_the_vps_rule_set_itself_forwards_the_mail_ports_and_lets_in_nothing_else(gwnet, installed):
    """The probes above cannot tell a port the VPS drops from one it forwards to the VM that resets it, so
    the rule set the VPS runs is judged on its own, as nft reads it back (JSON): both filter chains drop by
    default; exactly the mail ports are DNATed and forwarded; in, only answers, loopback, ICMP, WireGuard's
    port, and SSH from the admin networks' sets."""
    listed = json.loads(gwnet.vps.exec(["nft", "-j", "list", "table", "inet", "ceres_gateway"], check=True).stdout)
    chains = {item["chain"]["name"]: item["chain"] for item in listed["nftables"] if "chain" in item}
    rules = [item["rule"] for item in listed["nftables"] if "rule" in item]
    assert chains["input"]["policy"] == chains["forward"]["policy"] == "drop"

    def ports(rule: dict, protocol: str) -> set[int]:
        """The destination ports a rule matches for `protocol` (one port, or a set of them)."""
        found = set()
        for expr in rule["expr"]:
            left, right = expr.get("match", {}).get("left", {}), expr.get("match", {}).get("right")
            if left.get("payload", {}).get("protocol") == protocol and left["payload"].get("field") == "dport":
                found |= set(right["set"]) if isinstance(right, dict) else {right}
        return found

    def verdict(rule: dict) -> str:
        return next((key for expr in rule["expr"] for key in ("accept", "drop", "dnat", "snat") if key in expr), "")

    dnat = [rule for rule in rules if rule["chain"] == "prerouting" and verdict(rule) == "dnat"]
    assert dnat and set().union(*(ports(rule, "tcp") for rule in dnat)) == set(FORWARDED)
    assert all(ports(rule, "udp") == set() for rule in dnat)
    forwarded = [ports(rule, "tcp") for rule in rules if rule["chain"] == "forward" and verdict(rule) == "accept"]
    assert set().union(*forwarded) == set(FORWARDED), forwarded
    let_in = [rule for rule in rules if rule["chain"] == "input" and verdict(rule) == "accept"]
    assert set().union(*(ports(rule, "udp") for rule in let_in)) == {51820}
    ssh = [rule for rule in let_in if ports(rule, "tcp")]
    assert ssh and all(ports(rule, "tcp") == {22} and "@admin_v" in json.dumps(rule) for rule in ssh), ssh


# --- 3. and 4. mail in and out ---------------------------------------------------------------------------


def test_mail_from_the_internet_reaches_the_home_mailbox_with_the_senders_address(gwnet, installed, password, cafile):
    """Mail from another domain reaches the home mailbox through the VPS, Postfix seeing the sender's own address."""
    subject = f"to the home mailbox {time.monotonic_ns()}"
    message = inbound(gwnet, password, cafile, subject)
    assert f"from mx.example.net (mx.example.net [{REMOTE}])" in postfix_received(message), message[:1500]
    assert f"Subject: {subject}" in message


def test_mail_from_the_vm_leaves_from_the_vps_address_signed_and_aligned(gwnet, installed, password, cafile):
    """Mail from the home VM leaves from the VPS's address, passing SPF, DKIM and DMARC alignment at the receiver."""
    judged = outbound(gwnet, password, cafile, f"from the home server {time.monotonic_ns()}")
    assert judged["peer"] == VPS, judged
    assert (judged["spf"], judged["dkim"], judged["dkim_domain"]) == ("pass", "pass", "example.com"), judged
    assert judged["dmarc_aligned"] and judged["mail_from"] == NO_REPLY, judged


# --- the client's address reaches the VM, so fail2ban judges it: good logins must not count --------------


def dovecot_failures(gwnet) -> int:
    shown = gwnet.mailnet.mail.exec(["fail2ban-client", "status", "dovecot"], check=True).stdout
    return int(next(line for line in shown.splitlines() if "Total failed" in line).split()[-1])


def test_a_good_login_from_the_internet_is_not_counted_as_a_failure(gwnet, installed, password, cafile):
    """More good logins than bruteForceMaxRetry, from an address outside adminCidrs: none counts, none bans
    (Debian's system-user passdb, which failed each one first, is off)."""
    before = dovecot_failures(gwnet)
    for _ in range(6):
        read = gwnet.mailnet.probe("imap", "--host", VPS, "--port", "993", "--user", NO_REPLY, "--password-file",
                                   secret_file(gwnet.mailnet, "no-reply", password), "--cafile", cafile,
                                   "--subject", "nothing", "--wait", "0")
        assert "exception" not in read, read
    time.sleep(2)  # fail2ban reads the journal
    assert dovecot_failures(gwnet) == before
    assert CLIENT not in gwnet.mailnet.mail.exec(["fail2ban-client", "status", "dovecot"], check=True).stdout


# --- 5. mailctl verify -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verify(gwnet, installed, cafile):
    """`mailctl verify --stack e2e` from the client namespace; returns (exit code, JSON)."""
    work = gwnet.mailnet.workdir
    (work / "dkim.pem").write_text(gwnet.deployment.dkim_public_pem)

    def run(timeout: str = "15") -> tuple[int, dict]:
        argv = [sys.executable, "-m", "mailctl.cli", "-C", str(work / "stack"), "verify", "--stack", "e2e",
                "--resolver", ADDRESSES["dns"], "--ca-file", cafile, "--timeout", timeout,
                "--password-file", secret_file(gwnet.mailnet, "verify", gwnet.deployment.ceres_env["CERES_SMTP_PASS"]),
                "--dkim-public-key", str(work / "dkim.pem"), "--json"]
        result = gwnet.mailnet.client.run(argv, timeout=600)
        OUTPUTS.append(result.stdout + result.stderr)
        return result.returncode, json.loads(result.stdout)

    return run


def bans(gwnet) -> str:
    """fail2ban's jails on the VM, with whom they ban (for a failure's message)."""
    mail = gwnet.mailnet.mail
    jails = mail.exec(["fail2ban-client", "status"]).stdout.rsplit(":", 1)[-1].replace(",", " ").split()
    status = "\n".join(mail.exec(["fail2ban-client", "status", jail]).stdout for jail in jails)
    journal = mail.exec(["journalctl", "--no-pager", "-o", "short-monotonic", "-u", "dovecot", "-u", "postfix@-",
                         "-u", "fail2ban", "-n", "150"]).stdout
    return f"{status}\n{journal}"


def failed(report: dict) -> dict[str, dict]:
    return {r["check"]: r for r in report["results"] if r["status"] == "fail"}


def test_verify_is_green_red_in_its_connection_checks_while_the_tunnel_is_down_and_green_again(gwnet, verify):
    """`mailctl verify` is green; tunnel down, only its connection checks fail (DNS rows stay green); back up, green."""
    code, report = verify()
    assert code == 0 and report["ok"], (failed(report), bans(gwnet))
    rows = {r["check"]: r["status"] for r in report["results"]}
    for name in (f"ptr {VPS}", "smtp 25 relay", "submission 587 login", "imaps 993 login", "dns MX example.com"):
        assert rows.get(name) == "ok", (name, rows)
    records = {name for name in rows if name.startswith(RECORD_CHECKS)}
    assert f"ptr {VPS}" in records and "dns MX example.com" in records

    gwnet.mailnet.mail.exec(["systemctl", "stop", "wg-quick@wg-ceres"], check=True)
    try:
        code, down = verify(timeout="5")
    finally:
        gwnet.mailnet.mail.exec(["systemctl", "start", "wg-quick@wg-ceres"], check=True)
    shown = {r["check"]: r["status"] for r in down["results"]}
    bad = failed(down)
    log.info("red while the tunnel was down: %s", sorted(bad))
    assert code == 1
    # the DNS rows all there and green; red only where verify connects, and every service it connects to red
    assert {name: shown.get(name) for name in records} == dict.fromkeys(records, "ok")
    assert all(name.startswith(CONNECTING) for name in bad), sorted(bad)
    assert not [name for name, status in shown.items() if name.startswith(CONNECTING) and status == "ok"]
    assert {" ".join(name.split()[:2]) for name in bad} == {"smtp 25", "submission 465", "submission 587",
                                                            "imaps 993", "https 443", "webmail mail.example.com"}

    deadline = time.monotonic() + 60
    while (again := verify())[0] != 0 and time.monotonic() < deadline:
        time.sleep(2)
    assert again[0] == 0, failed(again[1])


# --- 6. a re-run ------------------------------------------------------------------------------------------


def test_a_rerun_of_both_ends_changes_no_file_and_restarts_nothing(gwnet, installed):
    """Running the install again on both ends rewrites no file and restarts no service."""
    mailnet = gwnet.mailnet

    def state():
        return (mailnet.file_hashes(VM_FILES), mailnet.service_starts(VM_SERVICES),
                mailnet.file_hashes(VPS_FILES, gwnet.vps), mailnet.service_starts(VPS_SERVICES, gwnet.vps))

    before = state()
    assert all("ActiveState=active" in s for s in (*before[1].values(), *before[3].values())), before
    again = gwnet.install()
    OUTPUTS.extend(r.stdout + r.stderr for r in again)
    assert [r.returncode for r in again] == [0] * (1 + len(gwnet.deployment.commands)), again[-1].stderr[-2000:]
    assert [line for r in again for line in r.stdout.splitlines() if line.startswith("updated ")] == []
    assert state() == before


# --- 7. a reboot ------------------------------------------------------------------------------------------


def test_the_tunnel_comes_back_after_a_reboot_of_the_vps_then_of_the_vm(gwnet, installed, password, cafile):
    """After a reboot of the VPS, then of the VM, the tunnel, firewall and mail both ways come back unaided."""
    for host, units in ((gwnet.vps, VPS_SERVICES), (gwnet.mailnet.mail, VM_SERVICES[:1])):
        for unit in units:
            assert host.exec(["systemctl", "is-enabled", unit]).stdout.strip() == "enabled", (host.name, unit)
    for host in (gwnet.vps, gwnet.mailnet.mail):
        started = time.monotonic()
        host.reboot()
        host.wait_running(timeout=300)
        for unit in (VPS_SERVICES if host is gwnet.vps else VM_SERVICES):
            assert host.exec(["systemctl", "is-active", unit]).stdout.strip() == "active", (host.name, unit)
        if host is not gwnet.vps:
            linux.wait_until(lambda: host.exec(["fail2ban-client", "ping"]).returncode == 0, 60, "fail2ban", every=5)
            # Postfix holds every message for rspamd's verdict (milter_default_action = tempfail)
            linux.wait_until(lambda: host.exec(["bash", "-c", ": </dev/tcp/127.0.0.1/11332"]).returncode == 0,
                             120, "rspamd's milter", every=5)
        if host is gwnet.vps:
            assert "ip daddr 203.0.113.25" in host.exec(["nft", "list", "ruleset"]).stdout
            assert host.exec(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        # the tunnel is back once a client at the published address meets Postfix on the VM again (the
        # peers' handshake and Postfix's start take their time on a loaded machine)
        linux.wait_until(lambda: gwnet.mailnet.probe("greeting", "--host", VPS, "--port", "587",
                                                     host=gwnet.mailnet.remote).get("code") == 220,
                         120, "the submission port through the tunnel", every=5)
        subject = f"after the reboot of {host.name} {time.monotonic_ns()}"
        judged = outbound(gwnet, password, cafile, f"{subject} out")
        assert judged["peer"] == VPS and judged["dkim"] == "pass", judged
        assert f"[{REMOTE}]" in postfix_received(inbound(gwnet, password, cafile, f"{subject} in"))
        log.info("%s rebooted: mail flows again %.0f s after", host.name, time.monotonic() - started)


# --- 8. secrets -------------------------------------------------------------------------------------------


def test_no_private_key_in_any_output_or_journal(gwnet, installed):
    """No WireGuard or VPS login private key shows in any output, journal or log; wg-ceres.conf is root-only (600)."""
    keys = {
        "the VPS's WireGuard key": base64.b64decode(
            dict(l.split("=", 1) for l in gwnet.deployment.gateway.command.stdin.splitlines())["WIREGUARD_PRIVATE_KEY"]).decode(),
        "the VM's WireGuard key": stdin_secrets(gwnet.mailnet, "-install-gateway")["WIREGUARD_PRIVATE_KEY"],
        "the VPS's login key": gwnet.deployment.gateway.private_key.splitlines()[1],
    }
    assert all(len(k) >= 40 for k in keys.values())
    journals = [host.exec(["journalctl", "--no-pager", "-o", "cat"], timeout=60).stdout
                for host in (gwnet.vps, gwnet.mailnet.mail)]
    logs = [p.read_text(errors="replace") for p in gwnet.mailnet.workdir.glob("*.log")]
    assert len(OUTPUTS) >= 1 + len(gwnet.deployment.commands)
    for what, key in keys.items():
        for where, texts in (("a command's output", OUTPUTS), ("a journal", journals), ("a test log", logs)):
            assert not any(key in text for text in texts), f"{what} in {where}"
    # written where it belongs, root-only
    for host in (gwnet.vps, gwnet.mailnet.mail):
        shown = host.exec(["stat", "-c", "%a %U", "/etc/wireguard/wg-ceres.conf"], check=True).stdout.strip()
        assert shown == "600 root", (host.name, shown)
