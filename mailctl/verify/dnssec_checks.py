"""DNSSEC of each mail domain: the resolver validates the zone (the AD bit of its answer), and the parent
holds a DS that names a key of the zone (the registrar step, `mailctl zone --ds`).

Without both, every TLSA is ignored (DANE needs a validated answer) and a zone signed without its DS is
merely unsigned to the world; a DS that names no key of the zone is worse: validating resolvers refuse the
whole domain. Rows appear for a stack with `dnssec`, and for any zone that publishes a DNSKEY."""

from __future__ import annotations

import dns.dnssec
import dns.name
import dns.rdata

from mailctl.verify.model import FAIL, OK, Result, Target

SEP = 0x0001  #: the DNSKEY flag of a key-signing key (RFC 4034 2.1.1), the key a DS names
REGISTRAR_FIX = "publish at the registrar the DS that `mailctl zone --ds` prints, then wait the parent's TTL"


def check_dnssec(target: Target) -> list[Result]:
    """Two rows per signed (or meant to be signed) mail domain: validation, and the parent's DS."""
    results = []
    for domain in target.mail_domains:
        keys, validated = target.lookup_validated(domain, "DNSKEY")
        if not keys and not target.dnssec:
            continue
        results.append(_validation(domain, keys, validated))
        if keys:
            results.append(_delegation(target, domain, keys))
    return results


def _validation(domain: str, keys: list[dns.rdata.Rdata], validated: bool) -> Result:
    check = f"dnssec {domain}"
    if validated:
        return Result(check, OK, f"the resolver validates {domain} (AD bit)")
    if not keys:
        return Result(check, FAIL, f"{domain} publishes no DNSKEY: the zone is not signed",
                      "pulumi up with dnssec: true (the stack signs each zone with Cloudflare)")
    return Result(check, FAIL, f"{domain} is signed, but the resolver does not validate it (no AD bit)",
                  f"{REGISTRAR_FIX} (see the ds row); or point --resolver at a validating resolver")


def _delegation(target: Target, domain: str, keys: list[dns.rdata.Rdata]) -> Result:
    check = f"ds {domain}"
    published = target.lookup(domain, "DS")
    if not published:
        return Result(check, FAIL, "the parent holds no DS for the zone: to the world it is unsigned", REGISTRAR_FIX)
    name = dns.name.from_text(domain)
    signing = [key for key in keys if key.flags & SEP]
    matched = [ds for ds in published
               if any(dns.dnssec.make_ds(name, key, ds.digest_type) == ds for key in signing)]
    tags = ", ".join(str(ds.key_tag) for ds in published)
    if matched:
        return Result(check, OK, f"the parent's DS (key tag {matched[0].key_tag}) names the zone's key")
    return Result(check, FAIL, f"the parent's DS (key tag {tags}) names no key of the zone: validating "
                               "resolvers refuse the whole domain", f"replace it: {REGISTRAR_FIX}")
