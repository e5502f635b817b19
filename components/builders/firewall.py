"""Inbound rules of the mail VM's Proxmox firewall: the public services of `ports`, SSH from admins.

Everything not listed is dropped (input policy DROP). Rules without a source apply to IPv4 and IPv6
alike, so the IPv6 side mirrors the IPv4 side by construction; ICMP needs one rule per family.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from components.builders.ports import LDAPS, PUBLIC


@dataclass(frozen=True)
class FirewallRule:
    """One inbound ACCEPT rule."""

    proto: str
    comment: str
    dport: str = ""
    source: str = ""


def _by_family(cidrs: tuple[str, ...]) -> list[str]:
    return sorted(cidrs, key=lambda c: (ipaddress.ip_network(c).version, ipaddress.ip_network(c)))


def firewall_rules(admin_cidrs: tuple[str, ...], directory_cidrs: tuple[str, ...] = ()) -> list[FirewallRule]:
    """ICMP, the public mail ports, SSH from each admin network only, then (ldapMode local) LDAPS from
    each directory client network only, in a stable order."""
    rules = [
        FirewallRule("icmp", "ICMP: ping and path-MTU discovery over IPv4"),
        FirewallRule("ipv6-icmp", "ICMPv6: ping and path-MTU discovery over IPv6"),
    ]
    rules += [FirewallRule("tcp", service.why, dport=str(service.port)) for service in PUBLIC]
    for cidr in _by_family(admin_cidrs):
        rules.append(FirewallRule("tcp", f"SSH from admin network {cidr} only", dport="22", source=cidr))
    for cidr in _by_family(directory_cidrs):
        rules.append(FirewallRule("tcp", f"LDAPS from directory client network {cidr} only", dport=str(LDAPS.port), source=cidr))
    return rules
