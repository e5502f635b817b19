"""BIND zone files of the stack's records, rendered by dnspython (never by string concatenation).

For review (`mailctl zone`), for `named-checkzone` in the tests, and as the zone a test DNS server
serves. Cloudflare owns the real SOA and NS; the ones here only make the file a complete zone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from components.builders.dns_records import Record, fqdn


def _serial(records: Iterable[Record]) -> int:
    """A serial that changes exactly when the records do (no dates: same records, same bytes)."""
    digest = hashlib.sha256("\n".join(f"{r.name} {r.type} {r.rdata}" for r in records).encode()).hexdigest()
    return int(digest[:8], 16) % 4_000_000_000 or 1


def render_zone(origin: str, records: list[Record], nameservers: tuple[str, ...], ttl: int, header: str = "") -> str:
    """The zone `origin` with `records` (each commented with its reason), SOA and NS."""
    zone = dns.zone.Zone(dns.name.from_text(origin))

    def add(name: str, type_: str, rdata: str, record_ttl: int, why: str) -> None:
        rdtype = dns.rdatatype.from_text(type_)
        parsed = dns.rdata.from_text(dns.rdataclass.IN, rdtype, rdata).replace(rdcomment=why)
        node = zone.find_node(dns.name.from_text(name), create=True)
        node.find_rdataset(dns.rdataclass.IN, rdtype, create=True).add(parsed, record_ttl)

    in_zone = [r for r in records if r.zone == origin]
    soa = f"{fqdn(nameservers[0])} hostmaster.{fqdn(origin)} {_serial(in_zone)} 7200 3600 1209600 3600"
    add(origin, "SOA", soa, ttl, "Cloudflare's SOA in reality; not managed by this stack")
    for nameserver in nameservers:
        add(origin, "NS", fqdn(nameserver), ttl, "the zone's Cloudflare nameserver; not managed by this stack")
    for record in in_zone:
        add(record.name, record.type, record.rdata, record.ttl, record.why)
    body = zone.to_text(sorted=True, relativize=True, want_comments=True, want_origin=True)
    return "".join(f"; {line}\n" for line in header.splitlines()) + body


def render_rrsets(records: list[Record]) -> str:
    """Records as absolute zone-file lines (for zones this stack does not own, e.g. reverse zones)."""
    lines = []
    for record in records:
        rrset = dns.rrset.from_text(fqdn(record.name), record.ttl, "IN", record.type, record.rdata)
        lines.append(f"; {record.why}\n{rrset.to_text()}\n")
    return "".join(lines)
