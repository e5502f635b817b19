"""Pebble, Let's Encrypt's ACME test server (Debian's `pebble`), as the test internet's ACME CA.

It validates http-01 challenges for real: it resolves the names through the test's DNS server and fetches
http://<name>/.well-known/acme-challenge/ from the mail host. Its own HTTPS listener gets a certificate
made here; the mail host trusts that one certificate for certbot only (the stack's `acmeCaBundle`).
Issued certificates chain to a root pebble makes at start, fetched from its management port.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DIRECTORY_PORT, MANAGEMENT_PORT = 14000, 15000


@dataclass(frozen=True)
class PebbleFiles:
    config: Path
    listener_cert_pem: str  #: what certbot must trust to talk to pebble


def listener_certificate(address: str) -> tuple[str, str]:
    """(cert PEM, key PEM) for pebble's HTTPS listener at `address` (an IP SAN), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener (ceres-mail tests)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def write_config(directory: Path, address: str) -> PebbleFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = listener_certificate(address)
    (directory / "cert.pem").write_text(cert_pem)
    (directory / "key.pem").write_text(key_pem)
    config = {
        "pebble": {
            "listenAddress": f"{address}:{DIRECTORY_PORT}",
            "managementListenAddress": f"{address}:{MANAGEMENT_PORT}",
            "certificate": str(directory / "cert.pem"),
            "privateKey": str(directory / "key.pem"),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (directory / "pebble.json").write_text(json.dumps(config, indent=2))
    return PebbleFiles(directory / "pebble.json", cert_pem)


def pebble_argv(files: PebbleFiles, dns_server: str) -> list[str]:
    return ["/usr/bin/pebble", "-config", str(files.config), "-dnsserver", f"{dns_server}:53"]


PEBBLE_ENV = {
    "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of after a random pause
    "PEBBLE_WFE_NONCEREJECT": "0",  # no deliberately rejected nonces: certbot is not under test here
    "PEBBLE_AUTHZREUSE": "100",
}


def directory_url(address: str) -> str:
    return f"https://{address}:{DIRECTORY_PORT}/dir"
