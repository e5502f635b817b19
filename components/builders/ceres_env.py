"""The environment CERES reads to send mail through the external server.

Names and value forms are the ones CERES reads: lower-case "true"/"false", the port as digits, and
CERES_MAIL_MODE=external so CERES does not deploy its in-cluster mailcow.
"""

from __future__ import annotations

from dataclasses import dataclass

PASSWORD_KEY = "CERES_SMTP_PASS"
STACK_OUTPUT = "ceresSmtp"  #: the stack output with every CERES_* value but the password


@dataclass(frozen=True)
class SmtpClient:
    """How a client of the mail server (CERES, Keycloak) submits mail; the password travels apart."""

    host: str
    port: int
    starttls: bool
    tls: bool
    user: str
    mail_from: str


def ceres_smtp_env(smtp: SmtpClient) -> dict[str, str]:
    """Every CERES_* variable except the password, which the caller adds as a secret."""
    return {
        "CERES_MAIL_FROM": smtp.mail_from,
        "CERES_MAIL_MODE": "external",
        "CERES_SMTP_HOST": smtp.host,
        "CERES_SMTP_PORT": str(smtp.port),
        "CERES_SMTP_STARTTLS": "true" if smtp.starttls else "false",
        "CERES_SMTP_TLS": "true" if smtp.tls else "false",
        "CERES_SMTP_USER": smtp.user,
    }
