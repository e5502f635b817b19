"""The environment CERES reads to send mail through the external server (seed section 5).

Names and value forms are the seed's exactly: lower-case "true"/"false", the port as digits, and
CERES_MAIL_MODE=external so CERES does not deploy its in-cluster mailcow (seed 5.3).
"""

from __future__ import annotations

PASSWORD_KEY = "CERES_SMTP_PASS"


def ceres_smtp_env(host: str, port: int, user: str, starttls: bool, tls: bool, mail_from: str) -> dict[str, str]:
    """Every CERES_* variable except the password, which the caller adds as a secret."""
    return {
        "CERES_MAIL_FROM": mail_from,
        "CERES_MAIL_MODE": "external",
        "CERES_SMTP_HOST": host,
        "CERES_SMTP_PORT": str(port),
        "CERES_SMTP_STARTTLS": "true" if starttls else "false",
        "CERES_SMTP_TLS": "true" if tls else "false",
        "CERES_SMTP_USER": user,
    }
