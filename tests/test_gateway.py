"""The WireGuard gateway (gatewayMode wireguard), offline: its settings, what its stages render, the graph of
the `home` stack, its keys and the policy on it. The real tunnel, forwarding and mail run in
tests/test_gateway_host.py."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import replace

import pytest

from components.builders.gateway import (
    COMPONENT_TYPE,
    FORWARDED_PORTS,
    SSH_FROM,
    GatewayInputs,
    render_nftables,
    render_vm_stage,
    render_vps_stage,
    smtp_bind_addresses,
    wireguard_public_key,
)
from components.builders.native import render_mail_stage
from mailctl.plan import SECRET
from mailctl.recorder import record
from policy.rules import COMMAND, evaluate
from tests.conftest import INSTALL, one, open_the_gateway_vps_to, refused, stack_config

DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
VPS = "-gateway-install-vps"
GATEWAY = GatewayInputs(host="198.51.100.25", user="root", host_key="ssh-ed25519 AAAA", public_ipv4="198.51.100.25",
                        public_ipv6="", port=51820, tunnel="10.254.25.0/30",
                        admin_cidrs=("192.168.77.0/24", "198.51.100.77/32", "2001:db8:ad::/48"), mail_host="mail.example.com")


# --- settings ------------------------------------------------------------------------------------------


def test_the_home_stack_publishes_the_vps_addresses_and_keeps_the_vm_at_home(plans):
    """Behind a VPS, DNS, PTR and SPF name the VPS's public addresses, while the VM keeps its home address."""
    plan = plans["home"]
    addresses = {(r.inputs["type"], r.inputs["content"]) for r in plan.of_type(DNS_RECORD) if r.inputs["type"] in ("A", "AAAA")}
    assert addresses == {("A", "198.51.100.25"), ("AAAA", "2001:db8:77::25")}
    assert plan.outputs["ptr"] == {"198.51.100.25": "mail.home.example.org", "2001:db8:77::25": "mail.home.example.org"}
    assert plan.outputs["ptrRecords"][0] == "25.100.51.198.in-addr.arpa. 3600 IN PTR mail.home.example.org."
    spf = next(r for r in plan.of_type(DNS_RECORD) if r.inputs["type"] == "TXT" and r.inputs["name"] == "home.example.org")
    assert spf.inputs["content"].startswith('"v=spf1 mx'), "the VPS sends as the MX: SPF names it through mx"
    vm = one(plan, "proxmoxve:index/vmLegacy:VmLegacy")
    assert vm.inputs["initialization"]["ipConfigs"][0]["ipv4"] == {"address": "192.168.77.25/24", "gateway": "192.168.77.1"}
    gateway = plan.outputs["gateway"]
    assert gateway["publicAddresses"] == ["198.51.100.25", "2001:db8:77::25"]
    assert gateway["forwardedTcpPorts"] == [25, 80, 443, 465, 587, 993]
    assert gateway["tunnel"]["vm"] == "10.254.25.2" and gateway["vmHomeAddress"] == "192.168.77.25"


WIREGUARD = {"ceres-mail:gatewayMode": "wireguard"}


@pytest.mark.parametrize("case, edits, key, words", [
    ("a private address without a gateway", {"ceres-mail:gatewayMode": "off"}, "ipv4Address", "gatewayMode wireguard"),
    ("no VPS", {"ceres-mail:gatewayHost": None}, "gatewayHost", "is required with gatewayMode wireguard"),
    ("no pinned host key", {"ceres-mail:gatewayHostKey": None}, "gatewayHostKey", "the only one trusted"),
    ("no key for the VPS", {"ceres-mail:gatewaySshPrivateKey": None}, "gatewaySshPrivateKey", "config set --secret"),
    ("no public address", {"ceres-mail:gatewayPublicIpv4": None}, "gatewayPublicIpv4", "is required"),
    ("a private public address", {"ceres-mail:gatewayPublicIpv4": "10.1.2.3"}, "gatewayPublicIpv4", "cannot be reached from the internet"),
    ("IPv6 as the IPv4 address", {"ceres-mail:gatewayPublicIpv4": "2001:db8::1"}, "gatewayPublicIpv4", "is not an IPv4 address"),
    ("IPv4 as the IPv6 address", {"ceres-mail:gatewayPublicIpv6": "198.51.100.26"}, "gatewayPublicIpv6", "is not an IPv6 address"),
    ("a host key that is no key", {"ceres-mail:gatewayHostKey": "hello"}, "gatewayHostKey", ""),
    ("a tunnel of 256 addresses", {"ceres-mail:gatewayTunnelCidr": "10.254.25.0/24"}, "gatewayTunnelCidr", "private IPv4 /30"),
    ("a public tunnel", {"ceres-mail:gatewayTunnelCidr": "198.51.100.0/30"}, "gatewayTunnelCidr", "private IPv4 /30"),
    ("the tunnel inside the home network", {"ceres-mail:gatewayTunnelCidr": "192.168.77.100/30"}, "gatewayTunnelCidr",
     "overlaps the VM's network"),
    ("mailcow", {"ceres-mail:mailStack": "mailcow"}, "gatewayMode", "not supported with mailStack mailcow"),
    ("a mode of no kind", {"ceres-mail:gatewayMode": "ipsec"}, "gatewayMode", ""),
    ("a port of no kind", {"ceres-mail:gatewayWireguardPort": 70000}, "gatewayWireguardPort", ""),
])
def test_bad_gateway_settings_are_refused_naming_the_key(scratch_project, case, edits, key, words):
    """Each bad gateway setting is refused with an error naming its key and what is wrong, never a traceback."""
    error = refused(scratch_project, stack_config("home", edits))
    messages = [message for problem_key, message in error.problems if problem_key == key]
    assert messages, f"{case}: {key} not named in {error.problems}"
    assert any(words in message for message in messages), messages
    assert "Traceback" not in str(error)


@pytest.mark.parametrize("key, value", [("gatewayHost", "vps.example.com"), ("gatewayPublicIpv4", "198.51.100.25"),
                                        ("gatewayHostKey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJxPGx0I5UbW486uhvWsAhlQoDUuOtG6r3gS+yivdGig")])
def test_gateway_keys_without_the_mode_are_refused(scratch_project, key, value):
    """A gateway key set while gatewayMode is off is refused, not silently ignored."""
    error = refused(scratch_project, stack_config("prod", {f"ceres-mail:{key}": value}))
    assert (key, "is set but gatewayMode is off") in error.problems


# --- what the stages render ----------------------------------------------------------------------------


def test_the_wireguard_public_key_is_x25519_of_the_private_one():
    """RFC 7748 6.1's test vector (Alice), as `wg pubkey` computes it from a base64 private key."""
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert wireguard_public_key(base64.b64encode(private).decode()) == base64.b64encode(public).decode()
    with pytest.raises(ValueError, match="32 bytes"):
        wireguard_public_key(base64.b64encode(b"short").decode())


@pytest.mark.parametrize("ipv6", ["", "2001:db8:77::25"])
def test_nftables_accepts_the_gateway_table(tmp_path, ipv6):
    """Debian's nft parses the table the VPS loads (--check, in a network namespace of its own)."""
    ruleset = tmp_path / "gateway.nft"
    ruleset.write_text(render_nftables(replace(GATEWAY, public_ipv6=ipv6)))
    result = subprocess.run(["unshare", "--net", "--", shutil.which("nft") or "/usr/sbin/nft", "--check", "-f", str(ruleset)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_vps_opens_only_ssh_from_admin_networks_and_the_tunnel_port():
    """The VPS lets in only WireGuard, ICMP and admin SSH, and forwards the mail ports to the VM, client address kept."""
    table = render_nftables(GATEWAY)
    accepted_in = [line.strip() for line in table.split("chain input {")[1].split("chain forward")[0].splitlines() if "accept" in line]
    assert accepted_in == ["ct state established,related accept", "iif lo accept", "meta l4proto { icmp, icmpv6 } accept",
                           "udp dport 51820 accept", "ip saddr @admin_v4 tcp dport 22 accept", "ip6 saddr @admin_v6 tcp dport 22 accept"]
    assert "elements = { 192.168.77.0/24, 198.51.100.77/32 }" in table
    assert "policy drop;" in table.split("chain input {")[1] and "policy drop;" in table.split("chain forward {")[1]
    ports = ", ".join(map(str, FORWARDED_PORTS))
    # DNAT only: the client keeps its address (no masquerade towards the VM); the VM's own traffic gets the public one
    assert f"ip daddr 198.51.100.25 tcp dport {{ {ports} }} dnat ip to 10.254.25.2" in table
    assert 'oifname != "wg-ceres" ip saddr 10.254.25.2 snat ip to 198.51.100.25' in table
    assert "masquerade" not in table


@pytest.mark.parametrize("render", [render_vps_stage, render_vm_stage])
@pytest.mark.parametrize("ipv6", ["", "2001:db8:77::25"])
def test_both_stages_pass_shellcheck_and_hold_no_key(tmp_path, render, ipv6):
    """Both gateway stages pass shellcheck and read the WireGuard keys from stdin, never from the script."""
    script = render(replace(GATEWAY, public_ipv6=ipv6))
    path = tmp_path / "stage.sh"
    path.write_text(script)
    result = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "SECRETS=(WIREGUARD_PRIVATE_KEY WIREGUARD_PEER_KEY)" in script, "both keys come on stdin"
    assert "PrivateKey = $WIREGUARD_PRIVATE_KEY" in script


def test_the_vm_routes_only_its_tunnel_address_through_the_tunnel():
    """Only traffic from the VM's tunnel address goes through the tunnel; the rest of the VM's stays at home."""
    script = render_vm_stage(GATEWAY)
    assert "Table = off" in script, "wg-quick must not send all of the VM's traffic through the tunnel"
    assert "ip $1 rule add from $2 lookup $ROUTING_TABLE" in script
    assert "ENDPOINT=198.51.100.25:51820" in script and "PersistentKeepalive" in script


def test_postfix_sends_from_the_tunnel_address_and_ipv4_only_when_the_vps_has_no_ipv6():
    """Postfix sends from the tunnel address, IPv4 only if the VPS has no IPv6; without a gateway it binds nothing."""
    bound = render_mail_stage(replace(INSTALL, smtp_bind_addresses=smtp_bind_addresses(GATEWAY)))
    assert "SMTP_BIND_ADDRESS=10.254.25.2" in bound and "INET_PROTOCOLS=ipv4" in bound
    dual = render_mail_stage(replace(INSTALL, smtp_bind_addresses=smtp_bind_addresses(replace(GATEWAY, public_ipv6="2001:db8::25"))))
    assert "SMTP_BIND_ADDRESS6=fd63:6572:6573:6d61::2" in dual and "INET_PROTOCOLS=all" in dual
    plain = render_mail_stage(INSTALL)
    assert "SMTP_BIND_ADDRESS=''" in plain and "INET_PROTOCOLS=all" in plain


# --- the graph -----------------------------------------------------------------------------------------


def test_both_ends_are_installed_before_the_certificate_and_the_consumers(plans):
    """Both tunnel ends are up before the ACME stage and before CERES and Keycloak switch; DNS waits for neither."""
    plan = plans["home"]
    vps, tunnel = one(plan, COMMAND, VPS), one(plan, COMMAND, "-server-install-gateway")
    packages, tls = one(plan, COMMAND, "-install-packages"), one(plan, COMMAND, "-install-tls")
    assert vps.urn in tunnel.dependencies and packages.urn in tunnel.dependencies
    assert tunnel.urn in tls.dependencies, "the ACME server reaches the VM through the VPS"
    by_urn = {r.urn: r for r in plan.resources}

    def upstream(resource) -> set[str]:
        seen, todo = set(), list(resource.dependencies)
        while todo:
            urn = todo.pop()
            if urn not in seen:
                seen.add(urn)
                todo += by_urn[urn].dependencies if urn in by_urn else []
        return seen

    for consumer in (one(plan, "kubernetes:core/v1:Secret"), one(plan, "keycloak:index/realm:Realm")):
        assert {vps.urn, tunnel.urn} <= upstream(consumer), f"{consumer.name} switches over before the gateway exists"
    # DNS never waits for either end
    assert all(not upstream(r) & {vps.urn, tunnel.urn} for r in plan.of_type(DNS_RECORD))


def test_the_vps_connection_pins_its_host_key_and_its_keys_are_secret(project_dir):
    """The VPS login pins its host key; each end trusts the other's WireGuard public key; no private key is shown."""
    raw: dict = {}
    plan = record(project_dir, "home", known_outputs=True, raw_inputs_hook=lambda urn, t, i: raw.__setitem__(urn, i))
    vps, tunnel = one(plan, COMMAND, VPS), one(plan, COMMAND, "-server-install-gateway")
    connection = raw[vps.urn]["connection"]
    assert connection["host"] == "198.51.100.25" and connection["user"] == "root"
    assert connection["hostKey"] == stack_config("home")["ceres-mail:gatewayHostKey"]
    assert raw[vps.urn]["create"].startswith("bash -c "), "root needs no sudo (many VPS images have none)"
    assert vps.inputs["stdin"] == SECRET and tunnel.inputs["stdin"] == SECRET

    def stdin_of(urn: str) -> dict[str, str]:
        return {name: base64.b64decode(value).decode() for name, value in
                (line.split("=", 1) for line in raw[urn]["stdin"].splitlines())}

    vps_keys, vm_keys = stdin_of(vps.urn), stdin_of(tunnel.urn)
    # each end trusts the public half of the other's key, derived in the program
    assert vps_keys["WIREGUARD_PEER_KEY"] == wireguard_public_key(vm_keys["WIREGUARD_PRIVATE_KEY"])
    assert vm_keys["WIREGUARD_PEER_KEY"] == wireguard_public_key(vps_keys["WIREGUARD_PRIVATE_KEY"])
    assert vps_keys["WIREGUARD_PRIVATE_KEY"] != vm_keys["WIREGUARD_PRIVATE_KEY"]
    shown = plan.to_json()  # what `mailctl plan --json` prints, outputs included
    for private in (vps_keys["WIREGUARD_PRIVATE_KEY"], vm_keys["WIREGUARD_PRIVATE_KEY"]):
        assert private not in shown
    for key in plan.of_type("random:index/randomBytes:RandomBytes"):
        assert key.inputs["length"] == 32


def test_a_stack_without_the_gateway_has_none_of_it(plans):
    """A stack without gatewayMode wireguard has no gateway resource and no gateway output."""
    for stack in ("prod", "staging"):
        assert not [r for r in plans[stack].resources if "gateway" in r.name]
        assert "gateway" not in plans[stack].outputs


# --- the policy ----------------------------------------------------------------------------------------


def test_the_gateway_registers_the_ssh_sources_its_vps_table_is_written_from(plans):
    """The policy's value is the VPS's: the gateway component's plain sshFrom, the gateway output's and the
    networks of the VPS's nftables table are all the stack's adminCidrs."""
    plan = plans["home"]
    gateway, vps = one(plan, COMPONENT_TYPE), one(plan, COMMAND, VPS)
    admin = sorted(stack_config("home")["ceres-mail:adminCidrs"])
    assert gateway.inputs == {SSH_FROM: admin}, "the component registers this one plain input"
    assert plan.outputs["gateway"][SSH_FROM] == admin
    assert f"elements = {{ {', '.join(admin)} }}" in vps.inputs["create"], "the VPS's table admits these networks"


def test_the_policy_refuses_a_vps_with_ssh_open_to_all_or_no_pinned_host_key(plans):
    """The policy refuses a gateway VPS with SSH open to the whole internet, or reached without a pinned host key."""
    plan = plans["home"]
    gateway, vps = one(plan, COMPONENT_TYPE), one(plan, COMMAND, VPS)
    assert not [v for v in evaluate([gateway, vps]) if v["policy"].startswith("ssh-")]
    for everyone in ("0.0.0.0/0", "::/0"):
        opened = replace(gateway, inputs={SSH_FROM: [*gateway.inputs[SSH_FROM], everyone]})
        [violation] = [v for v in evaluate([opened]) if v["policy"] == "ssh-not-open-to-the-world"]
        assert violation["urn"] == gateway.urn and violation["level"] == "mandatory"
        assert "gateway VPS opens SSH (22) to the whole internet" in violation["message"]
    unpinned = replace(vps, inputs={**vps.inputs, "connection": {"host": "198.51.100.25", "user": "root"}})
    assert [v for v in evaluate([unpinned]) if v["policy"] == "ssh-pins-host-key"]


def test_a_gateway_that_registers_no_ssh_sources_is_refused_not_passed(plans):
    """A gateway component without its sshFrom list fails the rule: a VPS the policy cannot see is not passed."""
    gateway = one(plans["home"], COMPONENT_TYPE)
    for unreadable in ({}, {SSH_FROM: "198.51.100.77/32"}):
        judged = evaluate([replace(gateway, inputs=unreadable)])
        [violation] = [v for v in judged if v["policy"] == "ssh-not-open-to-the-world"]
        assert f"registers no {SSH_FROM} list" in violation["message"]


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0"])
def test_a_home_plan_with_the_vps_open_to_all_fails_on_the_gateway(project_dir, monkeypatch, everyone):
    """`mailctl plan` over a program that opens the VPS's SSH to everyone fails with exactly that, on the gateway."""
    open_the_gateway_vps_to(monkeypatch, everyone)
    plan = record(project_dir, "home")
    assert everyone in one(plan, COMMAND, VPS).inputs["create"], "the VPS's own table opens it"
    mandatory = [(v["policy"], v["urn"]) for v in plan.policy if v["level"] == "mandatory"]
    assert mandatory == [("ssh-not-open-to-the-world", one(plan, COMPONENT_TYPE).urn)]
