"""DNS as published, against what the stack declares; PTR and forward-confirmed reverse DNS."""

from __future__ import annotations

import base64
import ipaddress

import dns.exception
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.reversename
from cryptography.hazmat.primitives.serialization import load_der_public_key

from components.builders.dns_records import dkim_record_name
from mailctl.verify.model import FAIL, OK, WARN, Result, Target

def _value(rdata: dns.rdata.Rdata) -> str:
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode(errors="replace")
    return rdata.to_text()


def check_resolver(target: Target) -> list[Result]:
    """The resolver answers at all (any answer, even "no such name"). When it does not, every record would
    look missing, and the fix is the resolver, not the records."""
    try:
        target.resolver.resolve(target.domain, "SOA", lifetime=target.timeout)
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
        servers = ", ".join(getattr(target.resolver, "nameservers", []) or ["the system's"])
        return [Result("dns resolver", FAIL, f"no DNS answer from {servers} ({type(error).__name__})",
                       "this is the resolver, not your records: check --resolver (does a DNS server answer "
                       "there?) or the machine's /etc/resolv.conf, then run verify again")]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        pass  # an answer: the resolver works
    return [Result("dns resolver", OK, "answers")]


def check_declared_records(target: Target) -> list[Result]:
    """Every record the stack declares is published with its declared value."""
    results = []
    for record in target.expected:
        if record.type == "PTR":
            continue  # set at the IP provider: check_reverse_dns
        wanted = _value(record.parsed())
        published = [_value(r) for r in target.lookup(record.name, record.type)]
        check = f"dns {record.type} {record.name}"
        if wanted in published:
            results.append(Result(check, OK, wanted))
        else:
            seen = ", ".join(published) or "nothing"
            results.append(Result(check, FAIL, f"published: {seen}",
                                  f"publish {record.name} {record.type} {wanted!r} ({record.why})"))
    return results


def check_mail_records(target: Target) -> list[Result]:
    """Without a stack: the minimum every mail domain needs, MX to the host, SPF, DMARC, the host's address."""
    results = []
    mx = [r.exchange.to_text(omit_final_dot=True) for r in target.lookup(target.domain, "MX")]
    results.append(Result(f"dns MX {target.domain}", OK if target.host in mx else FAIL, ", ".join(mx) or "no MX",
                          "" if target.host in mx else f"publish {target.domain} MX 10 {target.host}."))
    for name, prefix, fix in (
        (target.domain, "v=spf1", f'publish {target.domain} TXT "v=spf1 mx -all"'),
        (f"_dmarc.{target.domain}", "v=DMARC1", f'publish _dmarc.{target.domain} TXT "v=DMARC1; p=none; rua=mailto:dmarc@{target.domain}"'),
    ):
        values = [v for v in map(_value, target.lookup(name, "TXT")) if v.startswith(prefix)]
        results.append(Result(f"dns TXT {name}", OK if len(values) == 1 else FAIL,
                              "; ".join(values) or f"no {prefix} record", "" if len(values) == 1 else fix))
    return results


def check_dkim(target: Target) -> list[Result]:
    """Every mail domain's DKIM keys are published: rspamd signs each domain's mail with the signing
    selector's key, so a domain without that record has all its mail fail DKIM (and DMARC), however well
    the primary is set up; a published selector (the next key of a rotation, or the previous one) must be
    served as the stack has it before it signs, and while mail signed with it may still arrive."""
    selectors = {target.dkim_selector: target.dkim_txt, **target.dkim_published}
    return [_dkim_result(target, domain, selector, expected)
            for selector, expected in selectors.items() for domain in target.mail_domains]


def _dkim_result(target: Target, domain: str, selector: str, expected: str) -> Result:
    """One selector's key in one domain: published, RSA of 2048 bits or more, and (with the stack's value)
    the stack's own; the check says whether the selector signs."""
    name = dkim_record_name(selector, domain)
    values = [v for v in map(_value, target.lookup(name, "TXT")) if "p=" in v]
    role = "signs" if selector == target.dkim_selector else "published, not signing"
    check = f"dkim {name} ({role})"
    output = "dkimTxt" if selector == target.dkim_selector else f"dkimPublicKeys {selector}"
    if not values:
        return Result(check, FAIL, "no DKIM record", f"publish {name} TXT with the stack's key (pulumi stack output {output})")
    tags = dict(part.strip().split("=", 1) for part in values[0].split(";") if "=" in part)
    try:
        bits = load_der_public_key(base64.b64decode(tags.get("p", ""))).key_size
    except (ValueError, TypeError):
        return Result(check, FAIL, "the p= key does not parse", f"publish at {name} the key exactly as `pulumi stack output {output}`")
    if expected and values[0].replace(" ", "") != expected.replace(" ", ""):
        return Result(check, FAIL, "a different key is published", f"publish `pulumi stack output {output}` at {name}")
    if bits < 2048:
        return Result(check, WARN, f"RSA {bits} bits", "use a 2048-bit key (dkimKeyBits)")
    return Result(check, OK, f"RSA {bits} bits" + (", the stack's key" if expected else ""))


def _same_address(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


def _host_addresses(target: Target) -> list[str]:
    """The host's addresses as published, then any the stack declares that are not: the server sends from
    the declared one, so its PTR matters even while its A/AAAA is missing."""
    found = target.addresses()
    declared = [r.parsed().address for r in target.expected if r.type in ("A", "AAAA") and r.name == target.host]
    return found + [a for a in declared if not any(_same_address(a, f) for f in found)]


def check_reverse_dns(target: Target) -> list[Result]:
    """Every address of the host has a PTR naming the host, and that name resolves back (FCrDNS): large
    receivers reject or junk mail from an address without it. Always at least one row: a PTR left
    unchecked (no address, a failed lookup) must not read as a PTR that is fine."""
    addresses = _host_addresses(target)
    if not addresses:
        return [Result(f"ptr {target.host}", FAIL, f"no address to look up: the resolver gives no A/AAAA for {target.host}",
                       f"publish {target.host} A (and AAAA), then ask the IP provider to set the PTR of each "
                       f"address to {target.host}")]
    return [_ptr_result(target, address) for address in addresses]


def _ptr_result(target: Target, address: str) -> Result:
    check, host = f"ptr {address}", target.host
    set_ptr = f"ask the IP provider to set the PTR of {address} to {host}"
    try:
        answer = target.resolver.resolve(dns.reversename.from_address(address), "PTR", lifetime=target.timeout)
        names = [r.target.to_text(omit_final_dot=True) for r in answer]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        names = []
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
        return Result(check, WARN, f"the PTR lookup failed ({type(error).__name__}): receivers cannot see it either",
                      f"{set_ptr}, and have its reverse zone answer; run verify again")
    if host not in names:
        return Result(check, FAIL, f"PTR: {', '.join(names) or 'none'}", set_ptr)
    back = target.addresses(host)
    seen = f"{address} -> {host} -> {', '.join(back) or 'no address'}"
    if not any(_same_address(address, b) for b in back):
        return Result(check, FAIL, seen, f"publish {host} {'AAAA' if ':' in address else 'A'} {address}")
    if len(names) > 1:
        return Result(check, WARN, f"{seen}; the PTR also names {', '.join(n for n in names if n != host)}",
                      f"{set_ptr} alone (a receiver may check any one of several names)")
    return Result(check, OK, seen)
