"""TLS pieces the protocol checks share: a context, and what a certificate says."""

from __future__ import annotations

import datetime
import ssl

from cryptography import x509

from mailctl.verify.model import FAIL, OK, WARN, Result

EXPIRY_WARNING_DAYS = 14


def context(cafile: str | None) -> ssl.SSLContext:
    """Verifying context (the system store, or the operator's CA), TLS 1.2 at least."""
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def certificate_result(check: str, sock: ssl.SSLSocket, host: str) -> Result:
    """The certificate verified (the handshake did that) for `host`; expiry within 14 days warns."""
    cert = x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    detail = f"{sock.version()}, valid for {host} until {cert.not_valid_after_utc:%Y-%m-%d}, issuer {cert.issuer.rfc4514_string()}"
    if left.days < EXPIRY_WARNING_DAYS:
        return Result(check, WARN, detail, "renew the certificate (certbot renew; check the certbot timer)")
    return Result(check, OK, detail)


def tls_failure(check: str, error: Exception, host: str) -> Result:
    return Result(check, FAIL, f"{type(error).__name__}: {error}",
                  f"install a certificate for {host} from a CA clients trust (tlsMode acme: rerun the tls stage)")
