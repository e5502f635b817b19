"""The DNS records a mail domain needs, as plain data (seed section 3).

Each record carries the reason it exists; it becomes the Cloudflare comment, the zone-file comment and
what `mailctl verify` prints when the record is missing.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)


@dataclass(frozen=True)
class DnsInputs:
    """What the record set depends on; all plain values known before any resource exists."""

    domain: str
    mail_host: str
    ipv4: str
    ipv6: str
    mx_priority: int
    ttl: int
    spf_extra: tuple[str, ...]
    dkim_selector: str
    dmarc_policy: str
    dmarc_reports_to: str


@dataclass(frozen=True)
class Record:
    """One DNS record. `name` is fully qualified without the trailing dot."""

    name: str
    type: str
    content: str
    ttl: int
    why: str
    priority: int | None = None

    @property
    def key(self) -> str:
        """Stable resource-name suffix: the same record always maps to the same Pulumi resource."""
        return f"{self.type.lower()}-{self.name}"


def spf_value(extra: tuple[str, ...]) -> str:
    """The seed's minimal SPF (`v=spf1 mx -all`) with operator mechanisms before the final -all."""
    return " ".join(("v=spf1", "mx", *extra, "-all"))


def dmarc_value(policy: str, reports_to: str) -> str:
    """The seed's DMARC start: observe (p=none), aggregate and failure reports, fo=1 (RFC 7489 6.3)."""
    return f"v=DMARC1; p={policy}; rua=mailto:{reports_to}; ruf=mailto:{reports_to}; fo=1"


def dkim_record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def dkim_value(public_key_pem: str) -> str:
    """DKIM key record (RFC 6376 3.6.1): p= is the base64 DER SubjectPublicKeyInfo of the RSA key."""
    key = load_pem_public_key(public_key_pem.encode())
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def dkim_record(inputs: DnsInputs, public_key_pem: str = "") -> Record:
    """The DKIM TXT record; without the key (not generated yet) its content is empty and the component
    fills it from the key's Output with `dkim_value`."""
    return Record(
        name=dkim_record_name(inputs.dkim_selector, inputs.domain),
        type="TXT",
        content=dkim_value(public_key_pem) if public_key_pem else "",
        ttl=inputs.ttl,
        why="Required: receivers verify the DKIM signature of every message with this key",
    )


def build_records(inputs: DnsInputs) -> list[Record]:
    """Every record whose content is known before apply, in a stable order.

    The DKIM record is built by `dkim_record` once the stack's key exists.
    """
    records = [
        Record(inputs.mail_host, "A", inputs.ipv4, inputs.ttl,
               "Required: the mail host's address, target of the MX and of the PTR check"),
    ]
    if inputs.ipv6:
        records.append(Record(inputs.mail_host, "AAAA", inputs.ipv6, inputs.ttl,
                              "Recommended: IPv6 address of the mail host; its PTR must match too"))
    records += [
        Record(inputs.domain, "MX", inputs.mail_host, inputs.ttl,
               f"Required: mail for {inputs.domain} is delivered to {inputs.mail_host}",
               priority=inputs.mx_priority),
        Record(inputs.domain, "TXT", spf_value(inputs.spf_extra), inputs.ttl,
               "Required: SPF, only the MX hosts may send for the domain (RFC 7208)"),
        Record(f"_dmarc.{inputs.domain}", "TXT", dmarc_value(inputs.dmarc_policy, inputs.dmarc_reports_to),
               inputs.ttl, f"Required: DMARC policy {inputs.dmarc_policy}, reports to {inputs.dmarc_reports_to} (RFC 7489)"),
    ]
    return records
