"""The WireGuard gateway (`gatewayMode: wireguard`): the mail VM at home, its public address on a VPS.

A home line often has no static address, no PTR of its own and port 25 blocked. The VPS has all three, so it
holds the mail host's public address and forwards the mail ports (`ports.PUBLIC`: 25, 80, 443, 465, 587, 993)
through a WireGuard tunnel to the VM, with a DNAT that keeps the client's address: Postfix, rspamd, SPF checks
and fail2ban on the VM see the real sender. Mail the VM sends leaves through the tunnel from its tunnel address
(Postfix binds to it, `smtp_bind_addresses`), and the VPS rewrites that to its public address, the one SPF
(`mx`) and the PTR name. The VM is the side that dials (it may sit behind NAT, its address may change), with a
keepalive so the VPS can always reach it.

Two stages, one per end, each a pure function of `GatewayInputs`:
- `gateway-vps` on the VPS (over its own SSH connection, host key pinned): WireGuard, IP forwarding, and an
  nftables table of its own that lets in only the tunnel's UDP port and SSH from adminCidrs, forwards the mail
  ports to the VM and rewrites the VM's outbound source.
- `gateway` on the VM, right after its packages and before the certificate (the ACME server reaches the VM
  through the VPS): WireGuard with policy routing, so that whatever leaves from the tunnel address (Postfix's
  mail, and every reply to a forwarded connection) goes back through the tunnel and nothing else does.

Both install `wireguard-tools`, and `wireguard-go` (userspace) only where the kernel has no WireGuard module;
the stage says which it uses. `wg-quick@` brings the tunnel up at every boot. The private keys arrive on
standard input with the peer's public key and are written only to a root-only file; nothing prints them.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from components.builders.mail_stacks import PlacedStage
from components.builders.ports import PUBLIC
from components.builders.shell_script import PRELUDE, READ_SECRETS, Stage, render_script

INTERFACE = "wg-ceres"  #: the tunnel's interface at both ends (wg-quick@wg-ceres)
ROUTING_TABLE = "2525"  #: the VM's routing table for what leaves from its tunnel address
NFT_TABLE = "ceres_gateway"  #: the VPS's own nftables table: nothing else of the VPS's firewall is touched
KEEPALIVE_SECONDS = "25"  #: the VM's keepalive, so a NAT at home keeps the VPS's way in open
#: the tunnel's IPv6 network (a ULA, RFC 4193) when the VPS has a public IPv6 address: VPS ::1, VM ::2
TUNNEL_IPV6 = ipaddress.ip_network("fd63:6572:6573:6d61::/126")
FORWARDED_PORTS = tuple(service.port for service in PUBLIC)
#: what each stage reads on stdin: its own private key and the other end's public key
SECRETS = ("WIREGUARD_PRIVATE_KEY", "WIREGUARD_PEER_KEY")
VPS_STAGE = "gateway-vps"  #: the name the VPS's install goes by among what stages wait for (Stage.after)
COMPONENT_TYPE = "ceres-mail:mail:Gateway"  #: the MailGateway component: the VPS, as the graph registers it
#: the networks SSH on the VPS answers, a plain list: registered on the component and in the `gateway` output
SSH_FROM = "sshFrom"
KEY_BYTES = 32  #: a WireGuard (Curve25519) private key
#: what each end's stage needs besides WireGuard, which a minimal or cloud image of Debian 12 may lack: `nft` on
#: the VPS, `ping` (the tunnel check) on the VM
VPS_PACKAGES = ("nftables",)
VM_PACKAGES = ("iputils-ping",)


@dataclass(frozen=True)
class GatewayInputs:
    """The VPS and the tunnel (settings `gateway*`); the VM's own address stays its home one."""

    host: str  #: where the stack reaches the VPS over SSH
    user: str  #: the SSH user there (root, or one with passwordless sudo)
    host_key: str  #: the VPS's SSH host key, the only one trusted
    public_ipv4: str  #: the VPS's public IPv4 address: the mail host's A record and PTR
    public_ipv6: str  #: "" or its public IPv6 address: AAAA and PTR
    port: int  #: the VPS's WireGuard UDP port
    tunnel: str  #: the tunnel's IPv4 network, a /30: the VPS has its first address, the VM the second
    admin_cidrs: tuple[str, ...]  #: the only networks SSH on the VPS answers
    mail_host: str

    @property
    def vps_tunnel_ipv4(self) -> str:
        return str(ipaddress.ip_network(self.tunnel)[1])

    @property
    def vm_tunnel_ipv4(self) -> str:
        return str(ipaddress.ip_network(self.tunnel)[2])

    @property
    def vps_tunnel_ipv6(self) -> str:
        return str(TUNNEL_IPV6[1]) if self.public_ipv6 else ""

    @property
    def vm_tunnel_ipv6(self) -> str:
        return str(TUNNEL_IPV6[2]) if self.public_ipv6 else ""

    def interface_addresses(self, end: str) -> tuple[str, ...]:
        """The addresses of `end`'s ("vps" or "vm") tunnel interface, with their prefix lengths."""
        v4, v6 = (self.vps_tunnel_ipv4, self.vps_tunnel_ipv6) if end == "vps" else (self.vm_tunnel_ipv4, self.vm_tunnel_ipv6)
        return (f"{v4}/{ipaddress.ip_network(self.tunnel).prefixlen}", *((f"{v6}/{TUNNEL_IPV6.prefixlen}",) if v6 else ()))

    @property
    def endpoint(self) -> str:
        """Where the VM dials: the VPS's public IPv4 address and port."""
        return f"{self.public_ipv4}:{self.port}"

    def placed_stages(self) -> tuple[PlacedStage, ...]:
        """The VM's end of the tunnel, right after its packages: before anything asks the internet to reach it."""
        return (PlacedStage(vm_stage(self), follows="packages"),)


def summary(inputs: GatewayInputs, vm_address: str) -> dict[str, object]:
    """The stack's `gateway` output (and what `mailctl plan` shows of it): where the public address lives and
    what it forwards where. No key: the private ones are secrets, and nothing needs the public ones."""
    return {
        "mode": "wireguard",
        "host": inputs.host,
        "publicAddresses": [a for a in (inputs.public_ipv4, inputs.public_ipv6) if a],
        "forwardedTcpPorts": list(FORWARDED_PORTS),
        "wireguard": f"udp/{inputs.port}",
        **component_props(inputs),
        "tunnel": {"vps": inputs.vps_tunnel_ipv4, "vm": inputs.vm_tunnel_ipv4,
                   **({"vpsIpv6": inputs.vps_tunnel_ipv6, "vmIpv6": inputs.vm_tunnel_ipv6} if inputs.public_ipv6 else {})},
        "vmHomeAddress": vm_address,
    }


def component_props(inputs: GatewayInputs) -> dict[str, list[str]]:
    """What the gateway's component registers: the networks its nftables table lets reach SSH, from the same
    adminCidrs the VPS stage is rendered from. The policy pack reads them there as a plain value."""
    return {SSH_FROM: sorted(inputs.admin_cidrs)}


def smtp_bind_addresses(gateway: GatewayInputs | None) -> tuple[str, str]:
    """(IPv4, IPv6) Postfix's SMTP client binds to: the VM's tunnel addresses, so outbound mail leaves from the
    VPS's address; ("", "") without a gateway (Postfix's default: the route decides)."""
    if gateway is None:
        return "", ""
    return gateway.vm_tunnel_ipv4, gateway.vm_tunnel_ipv6


def wireguard_public_key(private_key: str) -> str:
    """The public key (base64, as `wg pubkey` prints it) of a base64 WireGuard private key: X25519 of its 32
    bytes, which WireGuard clamps as RFC 7748 does."""
    raw = base64.b64decode(private_key)
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a WireGuard private key is {KEY_BYTES} bytes, not {len(raw)}")
    public = X25519PrivateKey.from_private_bytes(raw).public_key()
    return base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def _split(cidrs: tuple[str, ...], version: int) -> tuple[str, ...]:
    return tuple(sorted(c for c in cidrs if ipaddress.ip_network(c, strict=False).version == version))


def render_nftables(inputs: GatewayInputs) -> str:
    """The VPS's nftables table, as `nft -f` reads it. Declared, deleted and declared again, so loading it
    replaces the table as a whole in one transaction; a drop in its base chains is final whatever another
    table accepts. In: established traffic, ICMP, the tunnel's port, SSH from adminCidrs; nothing else.
    Forwarded: the mail ports to the VM (DNAT only, the client keeps its address), and what the VM sends
    from its tunnel address, which leaves with the public one (SNAT)."""
    ports = ", ".join(str(port) for port in FORWARDED_PORTS)
    v4, v6 = _split(inputs.admin_cidrs, 4), _split(inputs.admin_cidrs, 6)
    six = bool(inputs.public_ipv6)
    lines = [
        "#!/usr/sbin/nft -f",
        "# ceres-mail: written by the gateway-vps stage on every pulumi up; change the stack, not this file",
        f"table inet {NFT_TABLE} {{}}",
        f"delete table inet {NFT_TABLE}",
        f"table inet {NFT_TABLE} {{",
        *([f"  set admin_v4 {{ type ipv4_addr; flags interval; elements = {{ {', '.join(v4)} }}; }}"] if v4 else []),
        *([f"  set admin_v6 {{ type ipv6_addr; flags interval; elements = {{ {', '.join(v6)} }}; }}"] if v6 else []),
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        "    ct state established,related accept",
        "    ct state invalid drop",
        "    iif lo accept",
        # (icmpv6 is nft's own name: `ipv6-icmp` would need /etc/protocols, which minimal images lack)
        "    meta l4proto { icmp, icmpv6 } accept",
        f"    udp dport {inputs.port} accept",
        *(["    ip saddr @admin_v4 tcp dport 22 accept"] if v4 else []),
        *(["    ip6 saddr @admin_v6 tcp dport 22 accept"] if v6 else []),
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
        "    ct state invalid drop",
        f'    oifname "{INTERFACE}" ct status dnat tcp dport {{ {ports} }} accept',
        f'    iifname "{INTERFACE}" oifname != "{INTERFACE}" ip saddr {inputs.vm_tunnel_ipv4} accept',
        *([f'    iifname "{INTERFACE}" oifname != "{INTERFACE}" ip6 saddr {inputs.vm_tunnel_ipv6} accept'] if six else []),
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat;",
        f"    ip daddr {inputs.public_ipv4} tcp dport {{ {ports} }} dnat ip to {inputs.vm_tunnel_ipv4}",
        *([f"    ip6 daddr {inputs.public_ipv6} tcp dport {{ {ports} }} dnat ip6 to {inputs.vm_tunnel_ipv6}"] if six else []),
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat;",
        f'    oifname != "{INTERFACE}" ip saddr {inputs.vm_tunnel_ipv4} snat ip to {inputs.public_ipv4}',
        *([f'    oifname != "{INTERFACE}" ip6 saddr {inputs.vm_tunnel_ipv6} snat ip6 to {inputs.public_ipv6}'] if six else []),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_vps_stage(inputs: GatewayInputs) -> str:
    return render_script(
        "gateway-vps",
        inputs.mail_host,
        (*PRELUDE, *READ_SECRETS, "lib/wireguard.sh", "gateway/vps.sh"),
        INTERFACE=INTERFACE,
        LISTEN_PORT=str(inputs.port),
        TUNNEL_ADDRESSES=inputs.interface_addresses("vps"),
        PEER_ALLOWED=(f"{inputs.vm_tunnel_ipv4}/32", *((f"{inputs.vm_tunnel_ipv6}/128",) if inputs.public_ipv6 else ())),
        PUBLIC_IPV4=inputs.public_ipv4,
        PUBLIC_IPV6=inputs.public_ipv6,
        FORWARDED_PORTS=tuple(str(port) for port in FORWARDED_PORTS),
        SSH_SOURCES_V4=_split(inputs.admin_cidrs, 4),
        SSH_SOURCES_V6=_split(inputs.admin_cidrs, 6),
        NFT_TABLE=NFT_TABLE,
        NFT_RULESET=render_nftables(inputs),
        EXTRA_PACKAGES=VPS_PACKAGES,
        SECRETS=SECRETS,
    )


def render_vm_stage(inputs: GatewayInputs) -> str:
    return render_script(
        "gateway",
        inputs.mail_host,
        (*PRELUDE, *READ_SECRETS, "lib/wireguard.sh", "gateway/vm.sh"),
        INTERFACE=INTERFACE,
        TUNNEL_ADDRESSES=inputs.interface_addresses("vm"),
        ENDPOINT=inputs.endpoint,
        VPS_IPV4=inputs.vps_tunnel_ipv4,
        VM_IPV4=inputs.vm_tunnel_ipv4,
        VM_IPV6=inputs.vm_tunnel_ipv6,
        ROUTING_TABLE=ROUTING_TABLE,
        KEEPALIVE=KEEPALIVE_SECONDS,
        EXTRA_PACKAGES=VM_PACKAGES,
        SECRETS=SECRETS,
    )


def vps_stage(inputs: GatewayInputs) -> Stage:
    """The VPS's stage: its command runs over the gateway's own connection (components/gateway.py)."""
    return Stage("gateway-vps", render_vps_stage(inputs), SECRETS)


def vm_stage(inputs: GatewayInputs) -> Stage:
    """The VM's stage, after its packages and before its certificate: the ACME server's http-01 request comes
    in through the VPS. It waits for the VPS's stage (MailServer gives it that edge)."""
    return Stage("gateway", render_vm_stage(inputs), SECRETS, after=(VPS_STAGE,))
