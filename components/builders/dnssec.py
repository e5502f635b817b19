"""DNSSEC of the mail domains: the key Cloudflare signs a zone with, and the DS record its parent must hold.

With `dnssec` on, Cloudflare signs each mail domain's zone (one `ZoneDnssec` per domain, in MailDns) with a
key of its own: one combined key (flags 257, a secure entry point) of algorithm 13, ECDSA P-256 with
SHA-256 (RFC 6605). The zone validates only once its parent holds the key's DS record (RFC 4034 5),
which only the domain's registrar can put there: the stack exports each domain's DS (`dsRecords`), and
`mailctl zone --ds` prints it in the fields a registrar's form asks for and as a zone-file line.

Pure: no Pulumi, every DS parsed by dnspython, so a malformed one is refused here and never handed on.
dnspython's DNSSEC module is imported where a key is at hand, not with the program: every plan would pay
for it, and only an applied zone has a key.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype

DS_OUTPUT = "dsRecords"  #: the stack output {domain: {ds, keyTag, algorithm, digestType, digest}}
KSK_FLAGS = 257  #: a zone key that is the secure entry point (RFC 4034 2.1.1), as Cloudflare's
ALGORITHM = 13  #: ECDSAP256SHA256 (RFC 6605), the only algorithm Cloudflare signs with
DIGEST_TYPE = 2  #: SHA-256 (RFC 4509), the digest Cloudflare reports
DS_TTL = 3600  #: the TTL of the `ds` line Cloudflare reports (the parent's own TTL applies there)
#: the name MailDns gives a domain's ZoneDnssec after its own: `<dns component>-dnssec-<domain>`
RESOURCE_INFIX = "-dnssec-"
#: digest types as registrars' forms spell them (RFC 3658, 4509, 6605)
DIGEST_NAMES = {1: "SHA-1", 2: "SHA-256", 4: "SHA-384"}


@dataclass(frozen=True)
class DsRecord:
    """The DS record of one mail domain, as its registrar takes it (RFC 4034 5.1)."""

    domain: str
    key_tag: int
    algorithm: int
    digest_type: int
    digest: str  #: hexadecimal, upper case as registrars show it

    @property
    def rdata(self) -> str:
        return f"{self.key_tag} {self.algorithm} {self.digest_type} {self.digest}"

    @property
    def algorithm_name(self) -> str:
        import dns.dnssec

        return dns.dnssec.algorithm_to_text(self.algorithm)

    @property
    def digest_name(self) -> str:
        import dns.dnssec

        return DIGEST_NAMES.get(self.digest_type) or dns.dnssec.DSDigest.to_text(self.digest_type)


def _number(value: Any) -> int:
    """A whole number from Cloudflare's fields, which give some as floats (flags, key tag) and some as text."""
    return int(float(value))


def ds_export(ds: str, key_tag: Any, algorithm: Any, digest_type: Any, digest: str) -> dict[str, Any]:
    """One domain's entry of `dsRecords`, from its ZoneDnssec's outputs."""
    return {"ds": ds, "keyTag": _number(key_tag), "algorithm": _number(algorithm),
            "digestType": _number(digest_type), "digest": digest.upper()}


def ds_record(domain: str, entry: Any) -> DsRecord:
    """The DS record of `domain` from its entry of `dsRecords`; ValueError saying what is wrong otherwise."""
    fields = ("keyTag", "algorithm", "digestType", "digest")
    missing = [name for name in fields if not isinstance(entry, Mapping) or entry.get(name) in (None, "")]
    if missing:
        raise ValueError(f"the DS of {domain} has no {', '.join(missing)}")
    try:
        record = DsRecord(domain, _number(entry["keyTag"]), _number(entry["algorithm"]),
                          _number(entry["digestType"]), str(entry["digest"]).upper())
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DS, record.rdata)
    except (ValueError, TypeError, dns.exception.DNSException) as error:
        raise ValueError(f"the DS of {domain} is not a DS record ({error})") from None
    return record


def zone_key_report(zone: str, public_key: Any) -> dict[str, Any]:
    """What Cloudflare reports for `zone` signed with the ECDSA P-256 `public_key` (a `cryptography` key),
    under ZoneDnssec's output names: the DNSKEY's fields and the DS its parent must hold. The offline mock
    and the tests' Cloudflare stand-in both answer with it."""
    import dns.dnssec

    algorithm, digest_type = dns.dnssec.Algorithm(ALGORITHM), dns.dnssec.DSDigest(DIGEST_TYPE)
    dnskey = dns.dnssec.make_dnskey(public_key, algorithm, flags=KSK_FLAGS)
    ds = dns.dnssec.make_ds(f"{zone}.", dnskey, digest_type)
    digest = ds.digest.hex().upper()
    return {
        "algorithm": str(ALGORITHM),
        "digest": digest,
        "digestAlgorithm": digest_type.name,
        "digestType": str(DIGEST_TYPE),
        "ds": f"{zone}. {DS_TTL} IN DS {ds.key_tag} {ALGORITHM} {DIGEST_TYPE} {digest}",
        "flags": KSK_FLAGS,
        "keyTag": ds.key_tag,
        "keyType": algorithm.name,
        "publicKey": base64.b64encode(dnskey.key).decode(),
    }
