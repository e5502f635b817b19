"""DANE: on each DANE port the mail host serves a key its TLSA `3 1 1` records name (RFC 7671, 7672).

A sender that validates DNSSEC refuses a key that no TLSA of the port names, so a stale TLSA stops that
sender's mail altogether; and a TLSA the resolver does not validate (no AD bit: an unsigned zone, or no DS
at the parent) is ignored by every sender. So each port with a TLSA, published or declared by the stack,
gets one row: the key the host serves there against the published records, and whether DNSSEC
validated them. The key is read without judging the certificate (DANE-EE pins the key alone); the
certificate rows of the smtp, submission and imaps checks judge it for senders without DANE.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl

from components.builders.dns_records import spki_sha256, tlsa_name
from components.builders.ports import DANE_SERVICES, Service
from mailctl.verify.model import FAIL, OK, WARN, Result, Target
from mailctl.verify.net import connection_failure, open_connection
from mailctl.verify.smtp_checks import EHLO_NAME, STARTTLS, NamedSMTP

DANE_EE_SPKI_SHA256 = (3, 1, 1)  #: usage DANE-EE, selector SubjectPublicKeyInfo, matching SHA-256


def key_reader() -> ssl.SSLContext:
    """A context that completes any handshake (TLS 1.2 at least) so the served key can be read: what DANE
    trusts is the TLSA, not a CA, and the certificate rows judge the CA side."""
    reader = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    reader.check_hostname = False
    reader.verify_mode = ssl.CERT_NONE
    reader.minimum_version = ssl.TLSVersion.TLSv1_2
    return reader


def served_key_sha256(target: Target, service: Service) -> str:
    """The SHA-256 (hex) of the key the host serves on `service`'s port, after STARTTLS where it speaks it."""
    if service.tls == "implicit":
        with key_reader().wrap_socket(open_connection(target, target.host, service.port),
                                      server_hostname=target.host) as sock:
            der = sock.getpeercert(binary_form=True)
            with contextlib.suppress(OSError):
                sock.unwrap()  # a TLS goodbye (close_notify): the server sees a clean end, not a cut connection
    else:
        with NamedSMTP(target, service.port, STARTTLS) as smtp:
            smtp.ehlo(EHLO_NAME)
            smtp.starttls(context=key_reader())
            der = smtp.sock.getpeercert(binary_form=True)
    return spki_sha256(ssl.DER_cert_to_PEM_cert(der))


def check_dane(target: Target) -> list[Result]:
    """Each DANE port whose TLSA is published or declared: the served key against the published records."""
    return [result for service in DANE_SERVICES if (result := check_dane_port(target, service)) is not None]


def check_dane_port(target: Target, service: Service) -> Result | None:
    """One port's row, or None when neither DNS nor the stack has a TLSA for it (no DANE there)."""
    name, check = tlsa_name(service.port, target.host), f"dane {service.port} tlsa"
    declared = [r for r in target.expected if r.type == "TLSA" and r.name == name]
    records, validated = target.lookup_validated(name, "TLSA")
    pinned = {r.cert.hex() for r in records if (r.usage, r.selector, r.mtype) == DANE_EE_SPKI_SHA256}
    if not records and not declared:
        return None
    if not pinned:
        return Result(check, FAIL, f"no TLSA 3 1 1 at {name}",
                      "publish the stack's TLSA records (pulumi up), then wait their TTL before serving a new key")
    try:
        served = served_key_sha256(target, service)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as error:
        return connection_failure(check, error, f"check that {service.name} ({service.port}) answers with TLS",
                                  f"{target.host} A (and AAAA)")
    if served not in pinned:
        return Result(check, FAIL, f"the host serves key sha256 {served[:16]}…, the TLSA names "
                                   f"{', '.join(sorted(d[:16] + '…' for d in pinned))}",
                      "DANE-validating senders refuse this key: publish its TLSA and wait the TTL (pulumi up), or "
                      "serve the key the TLSA names again (rerun the tls stage)")
    if not validated:
        return Result(check, WARN, f"the served key is pinned (sha256 {served[:16]}…), but the resolver did not "
                                   "validate the TLSA (no AD bit)",
                      "senders ignore a TLSA without DNSSEC: sign the zone and publish its DS at the registrar "
                      "(or ask a validating --resolver)")
    return Result(check, OK, f"the served key is pinned (sha256 {served[:16]}…), DNSSEC-validated")
