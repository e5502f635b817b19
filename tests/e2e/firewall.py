"""A VM's Proxmox firewall, enforced in front of its test host with nftables (tests only).

Proxmox filters a VM's traffic on the host side of its network device: bridged packets go through
netfilter (br_netfilter), stateful, with the VM's options (enabled, input and output policy) and its rules
in order. The test internet does the same in its wire namespace: the bridge hands IPv4 to netfilter
(net.bridge.bridge-nf-call-iptables), and one `inet` table per VM filters what is forwarded to or from the
VM's address, so what the graph leaves closed is closed before the packet reaches the host, whatever the
host itself runs. Only what the program declares is understood; anything else is refused, so a rule the
program adds cannot be silently ignored here.
"""

from __future__ import annotations

import ipaddress

# rule and option keys this translation understands (beyond them the stand-in refuses)
RULE_KEYS = {"type", "action", "proto", "dport", "source", "dest", "comment", "enabled", "pos"}
ACTIONS = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject"}
PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "ipv6-icmp": "ipv6-icmp"}


class FirewallError(ValueError):
    """A firewall setting this translation does not understand."""


def table_name(vm_id: int) -> str:
    return f"proxmox_vm{int(vm_id)}"


def _rule_lines(rule: dict, address: str) -> list[str]:
    unknown = set(rule) - RULE_KEYS
    if unknown:
        raise FirewallError(f"firewall rule keys not enforced by the test internet: {sorted(unknown)}")
    if rule.get("enabled") is False:
        return []
    inbound = rule.get("type", "in") == "in"
    if rule.get("type", "in") not in ("in", "out"):
        raise FirewallError(f"firewall rule type {rule['type']!r}: only in and out")
    family = "ip6" if ipaddress.ip_address(address).version == 6 else "ip"
    match = [f"{family} {'daddr' if inbound else 'saddr'} {address}"]
    for key, direction in (("source", "saddr"), ("dest", "daddr")):
        if rule.get(key):
            network = ipaddress.ip_network(rule[key], strict=False)
            if network.version != ipaddress.ip_address(address).version:
                return []  # a rule for the other family never matches this address
            match.append(f"{family} {direction} {network}")
    proto = rule.get("proto")
    if proto:
        if proto not in PROTOCOLS:
            raise FirewallError(f"firewall rule protocol {proto!r} not enforced by the test internet")
        if (proto == "icmp") != (family == "ip") and proto in ("icmp", "ipv6-icmp"):
            return []
        match.append(f"meta l4proto {PROTOCOLS[proto]}")
        if rule.get("dport"):
            ports = rule["dport"].replace(":", "-")
            match.append(f"{proto} dport {{ {ports} }}")
    elif rule.get("dport"):
        raise FirewallError("a firewall rule with a port needs a protocol")
    return [" ".join(match) + f" {ACTIONS[rule['action'].upper()]}"]


def ruleset(vm_id: int, address: str, options: dict | None, rules: list[dict]) -> str:
    """The nft script that (re)creates the VM's table: empty (nothing filtered) unless the options
    enable the firewall, as on Proxmox."""
    table = table_name(vm_id)
    lines = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{",
             "  chain forward {", "    type filter hook forward priority 0; policy accept;"]
    if options and options.get("enabled"):
        family = "ip6" if ipaddress.ip_address(address).version == 6 else "ip"
        lines += [f"    {family} daddr {address} ct state established,related accept",
                  f"    {family} saddr {address} ct state established,related accept",
                  f"    {family} daddr {address} ct state invalid drop"]
        for rule in rules:
            lines += [f"    {line}" for line in _rule_lines(rule, address)]
        for direction, policy in (("daddr", options.get("inputPolicy", "DROP")), ("saddr", options.get("outputPolicy", "ACCEPT"))):
            if policy.upper() != "ACCEPT":
                lines.append(f"    {family} {direction} {address} {ACTIONS[policy.upper()]}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def removal(vm_id: int) -> str:
    table = table_name(vm_id)
    return f"table inet {table}\ndelete table inet {table}\n"
