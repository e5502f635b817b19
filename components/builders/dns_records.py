"""The DNS records of the mail domains, as plain data (what a mail domain needs to receive and to be believed, and the RFCs each record cites).

Each record is held in zone-file presentation form (`rdata`, absolute names with the trailing dot) and
carries the reason it exists; the reason becomes the Cloudflare comment, the zone-file comment and what
`mailctl verify` prints when the record is missing. dnspython parses every rdata, so a record that is
not valid DNS cannot be built, and the Cloudflare fields and the zone file are both derived from it.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from components.builders.ports import DANE_SERVICES, NOT_OFFERED_SRV, PUBLIC

TXT_STRING_MAX = 255  # RFC 1035 3.3: one character-string carries at most 255 bytes
SPF_MAX_LOOKUPS = 10  # RFC 7208 4.6.4
SPF_MAX_BYTES = 450  # RFC 7208 3.4: keep the answer within a 512-byte UDP response
SPF_LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")  # RFC 7208 4.6.4, with the redirect modifier


@dataclass(frozen=True)
class Dmarc:
    """The DMARC policy of every mail domain (RFC 7489 6.3)."""

    rua: str  #: aggregate report mailbox
    ruf: str  #: failure report mailbox
    policy: str = "none"
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


@dataclass(frozen=True)
class DnsInputs:
    """What the record set depends on; all plain values known before any resource exists."""

    domain: str  #: the primary mail domain; the mail host lives in its zone
    mail_host: str
    ipv4: str
    ipv6: str
    mx_priority: int
    ttl: int
    spf_extra: tuple[str, ...]
    dkim_selector: str  #: the selector that signs
    dmarc: Dmarc
    tls_rpt_address: str  #: mailbox for TLS-RPT reports
    caa_iodef: str  #: URL a CA reports refused issuance to (mailto:…)
    extra_domains: tuple[str, ...] = ()
    mta_sts_mode: str = "testing"
    mta_sts_max_age: int = 604800
    caa_issuers: tuple[str, ...] = ("letsencrypt.org",)
    autoconfig: bool = False
    dkim_published: tuple[str, ...] = ()  #: selectors published without signing (a rotation's next or previous key)
    dkim_reasons: tuple[tuple[str, str], ...] = ()  #: (published selector, why it is published), where given
    #: `dane`: the SHA-256 of each key the mail host may serve (its SubjectPublicKeyInfo, hex), each pinned by
    #: a TLSA `3 1 1` record on every DANE port; empty publishes no TLSA
    tlsa_spki_sha256: tuple[str, ...] = ()
    #: `dane` with ACME: the names of the keys the stack owns, pinned once they exist: the served one
    #: (`tlsKeySelector`) first, then those published without being served (`tlsPublishedKeys`)
    tlsa_stack_keys: tuple[str, ...] = ()
    tlsa_reasons: tuple[tuple[str, str], ...] = ()  #: (published key, why it is published), where given

    @property
    def mail_domains(self) -> tuple[str, ...]:
        return (self.domain, *self.extra_domains)

    @property
    def dkim_selectors(self) -> tuple[str, ...]:
        """Every selector with a key and a record: the signing one first."""
        return (self.dkim_selector, *self.dkim_published)


@dataclass(frozen=True)
class Record:
    """One DNS record: owner name (no trailing dot), type, rdata in presentation form, and why."""

    zone: str  #: the mail domain whose zone holds the record
    name: str
    type: str
    rdata: str
    ttl: int
    why: str
    key: str = field(default="")  #: stable id: the same record always maps to the same Pulumi resource

    def __post_init__(self):
        # parse now: an invalid record fails here, in the builder, not at the provider
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(self.type), self.rdata)
        if not self.key:
            object.__setattr__(self, "key", record_key(self.type, self.name))

    def parsed(self) -> dns.rdata.Rdata:
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(self.type), self.rdata)


def record_key(type_: str, name: str) -> str:
    """A record's stable id, `<type>-<owner name>` (mx-example.com): its resource name in the plan and
    what `dnsImportIds` names. Made here only, so the three agree."""
    return f"{type_.lower()}-{name}"


def fqdn(name: str) -> str:
    return name.rstrip(".") + "."


# --- TXT values ------------------------------------------------------------------------------------


def _quote(chunk: bytes) -> str:
    """One RFC 1035 character-string in presentation form: quotes, backslashes, non-ASCII escaped."""
    out = []
    for byte in chunk:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def txt_rdata(value: str) -> str:
    """A TXT value of any length as ≤255-byte character-strings, `"…" "…"`: the form BIND reads and
    Cloudflare accepts; verifiers concatenate the strings back (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
    data = value.encode()
    chunks = [data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)] or [b""]
    return " ".join(_quote(chunk) for chunk in chunks)


def txt_value(rdata: str) -> str:
    """The value a TXT rdata carries, its strings joined (what SPF, DKIM and DMARC parsers read)."""
    parsed = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata)
    return b"".join(parsed.strings).decode()


# --- SPF -------------------------------------------------------------------------------------------


def spf_value(extra: tuple[str, ...]) -> str:
    """The minimal SPF (`v=spf1 mx -all`) with operator mechanisms before the final -all."""
    return " ".join(("v=spf1", "mx", *extra, "-all"))


def spf_term_looks_up(term: str) -> bool:
    """Whether an SPF term costs a DNS lookup (RFC 7208 4.6.4): include, a, mx, ptr, exists, redirect=."""
    term = term.lower()
    if term.startswith("redirect="):
        return True
    mechanism = term.lstrip("+-~?").split(":", 1)[0].split("/", 1)[0]
    return mechanism in SPF_LOOKUP_MECHANISMS


def spf_lookups(extra: tuple[str, ...]) -> int:
    """DNS lookups the record itself causes (RFC 7208 4.6.4); an include: may add its own."""
    return sum(spf_term_looks_up(term) for term in ("mx", *extra))


def spf_problems(extra: tuple[str, ...]) -> list[str]:
    """Why this SPF record must not be published, if it must not."""
    problems = []
    if any(term.lstrip("+-~?").lower() in ("all",) or term.lower().startswith("redirect=") for term in extra):
        problems.append("holds 'all' or 'redirect=': the record always ends with -all")
    if (count := spf_lookups(extra)) > SPF_MAX_LOOKUPS:
        problems.append(f"needs {count} DNS lookups; RFC 7208 4.6.4 allows {SPF_MAX_LOOKUPS} (receivers return permerror)")
    if (size := len(spf_value(extra).encode())) > SPF_MAX_BYTES:
        problems.append(f"would be {size} bytes; keep SPF under {SPF_MAX_BYTES} (RFC 7208 3.4) or use include:")
    return problems


# --- DKIM ------------------------------------------------------------------------------------------


def dkim_record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def dkim_selector_of(record_name: str) -> str:
    """The selector a DKIM record name is published for (the inverse of dkim_record_name)."""
    return record_name.split("._domainkey.", 1)[0]


def dkim_value(public_key_pem: str) -> str:
    """DKIM key record (RFC 6376 3.6.1): p= is the base64 DER SubjectPublicKeyInfo of the RSA key."""
    key = load_pem_public_key(public_key_pem.encode())
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


DKIM_OUTPUT = "dkimPublicKeyPem"  #: the stack output with the signing DKIM key, which `mailctl zone` and `verify` read
DKIM_KEYS_OUTPUT = "dkimPublicKeys"  #: the stack output with every published selector's key: {selector: PEM}
DKIM_SIGNING_OUTPUT = "dkimSigning"  #: the stack output {selector, maxAgeDays}: which key signs, and for how long
DKIM_WHY = "Required: receivers verify the DKIM signature of every message with this key (RFC 6376)"
DKIM_PUBLISHED_WHY = ("Published, not signing (dkimPublishedSelectors): the next key ahead of a rotation, or the "
                      "previous one, kept until mail signed with it can no longer arrive")
DKIM_PUBLISHED_BECAUSE = "Published, not signing: "  #: followed by the reason the stack gives for the selector


def dkim_why(inputs: DnsInputs, selector: str) -> str:
    """A DKIM record's comment: it signs, or it is published for the reason given (the generic one without)."""
    if selector == inputs.dkim_selector:
        return DKIM_WHY
    reason = dict(inputs.dkim_reasons).get(selector)
    return DKIM_PUBLISHED_BECAUSE + reason if reason else DKIM_PUBLISHED_WHY


def dkim_records(inputs: DnsInputs, public_keys: Mapping[str, str] | None = None) -> list[Record]:
    """One DKIM TXT per selector (the signing one, then the published ones) and mail domain; rspamd signs
    every domain with the signing selector's key.

    `public_keys` maps a selector to its key (PEM). A selector without one gets an empty string: the keys
    exist only once the stack has made them, so MailDns declares these records with their content as an
    Output of each key, and the settings check imports against their keys, before any exists."""
    keys = public_keys or {}
    return [
        Record(domain, dkim_record_name(selector, domain), "TXT",
               txt_rdata(dkim_value(keys[selector]) if keys.get(selector) else ""), inputs.ttl,
               dkim_why(inputs, selector))
        for selector in inputs.dkim_selectors
        for domain in inputs.mail_domains
    ]


# --- DMARC -----------------------------------------------------------------------------------------


def _mailbox_domain(address: str) -> str:
    return address.rsplit("@", 1)[1].lower()


def _within(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def dmarc_value(dmarc: Dmarc) -> str:
    """The DMARC starting point `v=DMARC1; p=none; rua=…; ruf=…; fo=1`, plus pct/adkim/aspf where they
    differ from the RFC defaults (100, r, r)."""
    tags = ["v=DMARC1", f"p={dmarc.policy}"]
    if dmarc.pct != 100:
        tags.append(f"pct={dmarc.pct}")
    tags += [f"rua=mailto:{dmarc.rua}", f"ruf=mailto:{dmarc.ruf}", "fo=1"]
    tags += [f"{tag}={getattr(dmarc, tag)}" for tag in ("adkim", "aspf") if getattr(dmarc, tag) != "r"]
    return "; ".join(tags)


def dmarc_report_authorizations(inputs: DnsInputs) -> list[Record]:
    """RFC 7489 7.1: a report address outside the domain needs `<domain>._report._dmarc.<its domain>`
    TXT "v=DMARC1" in the receiving domain's zone. Returned with `zone` set to that receiving domain,
    which may or may not be one this stack manages."""
    records = []
    for domain in inputs.mail_domains:
        receivers = {_mailbox_domain(a) for a in (inputs.dmarc.rua, inputs.dmarc.ruf)}
        for receiver in sorted(r for r in receivers if not _within(r, domain)):
            records.append(
                Record(
                    receiver,
                    f"{domain}._report._dmarc.{receiver}",
                    "TXT",
                    txt_rdata("v=DMARC1"),
                    inputs.ttl,
                    f"Required: {receiver} accepts DMARC reports about {domain} (RFC 7489 7.1)",
                )
            )
    return records


# --- MTA-STS and TLS-RPT ---------------------------------------------------------------------------


def mta_sts_policy(inputs: DnsInputs) -> str:
    """The policy served at https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 3.2)."""
    return (
        "version: STSv1\n"
        f"mode: {inputs.mta_sts_mode}\n"
        f"mx: {inputs.mail_host}\n"
        f"max_age: {inputs.mta_sts_max_age}\n"
    )


def mta_sts_id(policy: str) -> str:
    """RFC 8461 3.1 id: changes exactly when the policy does, so senders refetch only then."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


# --- reverse DNS -----------------------------------------------------------------------------------


def reverse_records(inputs: DnsInputs) -> list[Record]:
    """The PTR each address must have, set at the IP provider (not here); `verify` checks it."""
    records = []
    for address in (inputs.ipv4, inputs.ipv6):
        if address:
            name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
            zone = ".".join(name.split(".")[1:]) if ipaddress.ip_address(address).version == 4 else name
            records.append(
                Record(zone, name, "PTR", fqdn(inputs.mail_host), inputs.ttl,
                       "Required at the IP provider: receivers reject mail from an address whose PTR does not name the host (forward-confirmed reverse DNS, RFC 8601 2.7.3)")
            )
    return records


# --- DANE ------------------------------------------------------------------------------------------

TLSA_WHY = ("Required with dane: senders that validate DNSSEC accept only the key this pins on {service} "
            "(TLSA 3 1 1, RFC 7672/7671)")
TLSA_PUBLISHED = "Published, not served"  #: how the comment of a TLSA whose key the host does not serve begins
TLSA_PUBLISHED_WHY = (TLSA_PUBLISHED + " on {service} (tlsPublishedKeys): the next key ahead of a rollover, or "
                      "the previous one")
TLSA_PUBLISHED_BECAUSE = TLSA_PUBLISHED + " on {service}: "  #: then the reason the stack gives for the key
STACK_KEY_INFIX = "-tls-key-"  #: a key the stack owns for DANE is the resource `<platform>-tls-key-<name>`


def spki_sha256(pem: str) -> str:
    """The SHA-256 (hex) of the SubjectPublicKeyInfo in a PEM certificate (its leaf: the first) or public key:
    what a TLSA `3 1 1` record carries (DANE-EE, the key alone, so a renewal that keeps the key keeps it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    data = pem.encode()
    if b"-----BEGIN CERTIFICATE-----" in data:
        key = x509.load_pem_x509_certificates(data)[0].public_key()
    else:
        key = serialization.load_pem_public_key(data)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    return digest.finalize().hex()


#: the stack output {name: public key PEM} of every TLS key the stack owns: the served one and those published
TLS_KEYS_OUTPUT = "tlsPublicKeys"


def record_waited_on(key: str) -> str:
    """The name by which a stage waits for one of the stack's DNS records (`Stage.after`; MailDns.waitables)."""
    return f"dns:{key}"


def tlsa_name(port: int, host: str) -> str:
    return f"_{port}._tcp.{host}"


def tlsa_why(inputs: DnsInputs, pin: str, service: str) -> str:
    """The comment of a TLSA on `service`: the host serves the key it pins, or the key is published for the
    reason given (the generic one without)."""
    if pin not in inputs.tlsa_stack_keys[1:]:
        return TLSA_WHY.format(service=service)
    reason = dict(inputs.tlsa_reasons).get(pin)
    if not reason:
        return TLSA_PUBLISHED_WHY.format(service=service)
    return TLSA_PUBLISHED_BECAUSE.format(service=service) + reason  # the reason as written, braces and all


def tlsa_serves(comment: str) -> bool:
    """Whether a TLSA record of the stack (by its comment) pins the key the host serves."""
    return not comment.startswith(TLSA_PUBLISHED)


def tlsa_pin(resource_name: str, record_name: str) -> str:
    """The key a TLSA record of the stack pins (its name, or a provided key's digest prefix), from the record's
    resource name (`<dns>-tlsa-<record name>-<pin>`)."""
    return resource_name.rpartition(f"tlsa-{record_name}-")[2]


def _tlsa(inputs: DnsInputs, pin: str, digest: str) -> list[Record]:
    """A pinned key's TLSA on every DANE port; `pin` names the key in the records' keys."""
    host = inputs.mail_host
    return [Record(inputs.domain, tlsa_name(service.port, host), "TLSA", f"3 1 1 {digest}", inputs.ttl,
                   tlsa_why(inputs, pin, f"{service.name} ({service.port})"),
                   f"tlsa-{tlsa_name(service.port, host)}-{pin}")
            for service in DANE_SERVICES]


def tlsa_records(inputs: DnsInputs) -> list[Record]:
    """The TLSA of each key known before apply (a provided certificate's), pinned by its digest; sorted so a
    key added next to the served one (a rollover's next key) changes no other record."""
    return [record for digest in sorted(inputs.tlsa_spki_sha256) for record in _tlsa(inputs, digest[:12], digest)]


def stack_key_tlsa_records(inputs: DnsInputs, public_keys: Mapping[str, str] | None = None,
                           names: tuple[str, ...] | None = None) -> list[Record]:
    """The TLSA of each key the stack owns (`tlsKeySelector`, then `tlsPublishedKeys`), by its name, or of the
    keys `names` only. `public_keys` maps a key's name to its public key (PEM); like `dkim_records`, a key not
    made yet gets a placeholder digest, and MailDns declares these records with their digest as an Output of
    the key."""
    keys = public_keys or {}
    return [record for name in (inputs.tlsa_stack_keys if names is None else names)
            for record in _tlsa(inputs, name, spki_sha256(keys[name]) if keys.get(name) else "0" * 64)]


def tlsa_record_keys(inputs: DnsInputs) -> tuple[str, ...]:
    """The keys of every TLSA record the stack publishes: what the stage that serves the key waits for."""
    return tuple(record.key for record in (*tlsa_records(inputs), *stack_key_tlsa_records(inputs)))


def tlsa_data(digest: str) -> dict:
    """A `3 1 1` TLSA's Cloudflare data."""
    return {"usage": 3, "selector": 1, "matching_type": 1, "certificate": digest}


# --- the whole set ---------------------------------------------------------------------------------


def _host_records(inputs: DnsInputs) -> list[Record]:
    zone, host, ttl = inputs.domain, inputs.mail_host, inputs.ttl
    records = [Record(zone, host, "A", inputs.ipv4, ttl, "Required: the mail host's address, target of every MX and of the PTR check")]
    if inputs.ipv6:
        records.append(Record(zone, host, "AAAA", inputs.ipv6, ttl, "Recommended: IPv6 address of the mail host; its PTR must match too"))
    return records


def _domain_records(inputs: DnsInputs, domain: str) -> list[Record]:
    host, ttl = fqdn(inputs.mail_host), inputs.ttl
    policy = mta_sts_policy(inputs)

    def rec(name: str, type_: str, rdata: str, why: str, key: str = "") -> Record:
        return Record(domain, name, type_, rdata, ttl, why, key)

    records = [
        rec(domain, "MX", f"{inputs.mx_priority} {host}", f"Required: mail for {domain} is delivered to {inputs.mail_host}"),
        rec(domain, "TXT", txt_rdata(spf_value(inputs.spf_extra)), "Required: SPF, only the MX hosts may send for the domain (RFC 7208)", f"spf-{domain}"),
        rec(f"_dmarc.{domain}", "TXT", txt_rdata(dmarc_value(inputs.dmarc)),
            f"Required: DMARC policy {inputs.dmarc.policy} with aggregate and failure reports (RFC 7489)"),
        rec(f"_mta-sts.{domain}", "TXT", txt_rdata(f"v=STSv1; id={mta_sts_id(policy)}"),
            f"Recommended: MTA-STS ({inputs.mta_sts_mode}), senders must use TLS to the MX; id follows the policy (RFC 8461)"),
        rec(f"mta-sts.{domain}", "CNAME", host, "Recommended: the HTTPS host that serves the MTA-STS policy (RFC 8461 3.3)"),
        rec(f"_smtp._tls.{domain}", "TXT", txt_rdata(f"v=TLSRPTv1; rua=mailto:{inputs.tls_rpt_address}"),
            "Recommended: senders report TLS failures to us (RFC 8460)"),
    ]
    # What mail clients discover (RFC 6186), implicit TLS preferred (RFC 8314 5.1)
    for service in (s for s in PUBLIC if s.srv):
        records.append(rec(f"{service.srv}.{domain}", "SRV", f"{service.srv_priority} 1 {service.port} {host}",
                           f"Recommended: mail clients find {service.name} on port {service.port} with {service.tls_words} (RFC 6186, RFC 8314)"))
    # Services this host does not offer, said explicitly so clients do not guess (RFC 6186 4)
    for label in NOT_OFFERED_SRV:
        service = label.split(".")[0].lstrip("_")
        records.append(rec(f"{label}.{domain}", "SRV", "0 0 0 .", f"Recommended: {service} is not offered here (RFC 6186 4)"))
    for issuer in inputs.caa_issuers:
        records.append(rec(domain, "CAA", f'0 issue "{issuer}"', f"Recommended: only {issuer} may issue certificates (RFC 8659)", f"caa-{domain}-issue-{issuer}"))
    if inputs.caa_issuers:
        records.append(rec(domain, "CAA", f'0 iodef "{inputs.caa_iodef}"', "Recommended: where a CA reports refused issuance (RFC 8659 4.4)", f"caa-{domain}-iodef"))
    if inputs.autoconfig:
        records.append(rec(f"autoconfig.{domain}", "CNAME", host, "Optional: Thunderbird-style client autoconfiguration host"))
    return records


def build_records(inputs: DnsInputs) -> list[Record]:
    """Every record whose content is known before apply, in a stable order: the host records once,
    then each mail domain's own, then DMARC report authorizations in zones this stack manages.
    The DKIM records come from `dkim_records` once the stack's key exists."""
    records = _host_records(inputs) + tlsa_records(inputs)
    for domain in inputs.mail_domains:
        records += _domain_records(inputs, domain)
    records += [r for r in dmarc_report_authorizations(inputs) if r.zone in inputs.mail_domains]
    return records


def external_authorizations(inputs: DnsInputs) -> list[Record]:
    """DMARC report authorizations that belong in zones this stack does not manage: say so."""
    return [r for r in dmarc_report_authorizations(inputs) if r.zone not in inputs.mail_domains]


# --- Cloudflare's form of a record -----------------------------------------------------------------


def cloudflare_fields(record: Record) -> dict:
    """`content`/`priority`/`data` of a cloudflare.DnsRecord, derived from the parsed rdata."""
    rd = record.parsed()
    if record.type in ("A", "AAAA"):
        return {"content": rd.address}
    if record.type in ("CNAME", "PTR"):
        return {"content": rd.target.to_text(omit_final_dot=True)}
    if record.type == "MX":
        return {"content": rd.exchange.to_text(omit_final_dot=True), "priority": rd.preference}
    if record.type == "TXT":
        return {"content": record.rdata}
    if record.type == "SRV":
        return {"data": {"priority": rd.priority, "weight": rd.weight, "port": rd.port,
                         "target": rd.target.to_text(omit_final_dot=True) or "."}}
    if record.type == "CAA":
        return {"data": {"flags": rd.flags, "tag": rd.tag.decode(), "value": rd.value.decode()}}
    if record.type == "TLSA":
        return {"data": {**tlsa_data(rd.cert.hex()), "usage": rd.usage, "selector": rd.selector,
                         "matching_type": rd.mtype}}
    raise ValueError(f"no Cloudflare form for {record.type}")
