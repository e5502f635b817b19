"""Record-set inputs and keys shared by the DNS tests."""

from __future__ import annotations

from dataclasses import replace

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components.builders.dns_records import DnsInputs, Dmarc

NAMESERVERS = ("ns1.cloudflare.com", "ns2.cloudflare.com")

SINGLE = DnsInputs(
    domain="example.com",
    mail_host="mail.example.com",
    ipv4="203.0.113.25",
    ipv6="2001:db8:25::25",
    mx_priority=10,
    ttl=3600,
    spf_extra=(),
    dkim_selector="ceres",
    dmarc=Dmarc(rua="dmarc@example.com", ruf="dmarc@example.com"),
    tls_rpt_address="tls-reports@example.com",
    caa_iodef="mailto:postmaster@example.com",
)
MULTI = replace(SINGLE, extra_domains=("example.org", "example.net"), autoconfig=True)


def dkim_key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) of an RSA 2048 key, made the way pulumi-tls makes the stack's key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public
