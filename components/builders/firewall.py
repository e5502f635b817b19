"""Inbound rules of the mail VM's Proxmox firewall: the public services of `ports`, SSH from admins.

Everything not listed is dropped (input policy DROP). Rules without a source apply to IPv4 and IPv6
alike, so the IPv6 side mirrors the IPv4 side by construction; ICMP needs one rule per family.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from components.builders.ports import PUBLIC


@dataclass(frozen=True)
class FirewallRule:
    """One inbound ACCEPT rule."""

    proto: str
    comment: str
    dport: str = ""
    source: str = ""


def firewall_rules(admin_cidrs: tuple[str, ...]) -> list[FirewallRule]:
    """ICMP, the public mail ports, then SSH from each admin network only, in a stable order."""
    rules = [
        FirewallRule("icmp", "ICMP: ping and path-MTU discovery over IPv4"),
        FirewallRule("ipv6-icmp", "ICMPv6: ping and path-MTU discovery over IPv6"),
    ]
    rules += [FirewallRule("tcp", service.why, dport=str(service.port)) for service in PUBLIC]
    for cidr in sorted(admin_cidrs, key=lambda c: (ipaddress.ip_network(c).version, ipaddress.ip_network(c))):
        rules.append(FirewallRule("tcp", f"SSH from admin network {cidr} only", dport="22", source=cidr))
    return rules
