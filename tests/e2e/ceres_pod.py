"""Stands in for CERES sending mail (tests only): a process whose environment is the Secret, as a pod's is.

CERES gets the Secret with `envFrom` and sends its notifications through the external server. This
program does the same and nothing more: it reads CERES_MAIL_MODE, CERES_SMTP_HOST, CERES_SMTP_PORT,
CERES_SMTP_USER, CERES_SMTP_PASS, CERES_SMTP_STARTTLS, CERES_SMTP_TLS and CERES_MAIL_FROM from its
environment and submits one message with exactly those values (implicit TLS when CERES_SMTP_TLS is
"true", STARTTLS when CERES_SMTP_STARTTLS is "true"; the certificate must chain to --cafile and name the
host). It prints one JSON line: what it did, never the password.

    python tests/e2e/ceres_pod.py --to someone@example.net --subject S --cafile ca.pem
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import ssl
import sys
from email.message import EmailMessage

REQUIRED = ("CERES_MAIL_MODE", "CERES_SMTP_HOST", "CERES_SMTP_PORT", "CERES_SMTP_USER", "CERES_SMTP_PASS",
            "CERES_SMTP_STARTTLS", "CERES_SMTP_TLS", "CERES_MAIL_FROM")


def send(env: dict[str, str], to: str, subject: str, cafile: str) -> dict:
    missing = [name for name in REQUIRED if name not in env]
    if missing:
        return {"sent": False, "error": f"missing from the environment: {missing}"}
    if env["CERES_MAIL_MODE"] != "external":
        return {"sent": False, "error": f"CERES_MAIL_MODE is {env['CERES_MAIL_MODE']!r}: CERES would use its own mail"}
    context = ssl.create_default_context(cafile=cafile)
    host, port = env["CERES_SMTP_HOST"], int(env["CERES_SMTP_PORT"])
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = env["CERES_MAIL_FROM"], to, subject
    message.set_content("A notification from CERES.\n")
    implicit, starttls = env["CERES_SMTP_TLS"] == "true", env["CERES_SMTP_STARTTLS"] == "true"
    try:
        client = smtplib.SMTP_SSL(host, port, context=context, timeout=30) if implicit else smtplib.SMTP(host, port, timeout=30)
        with client:
            client.ehlo("ceres.example.com")
            if starttls and not implicit:
                client.starttls(context=context)
                client.ehlo("ceres.example.com")
            client.login(env["CERES_SMTP_USER"], env["CERES_SMTP_PASS"])
            client.send_message(message, from_addr=env["CERES_MAIL_FROM"], to_addrs=[to])
    except (OSError, smtplib.SMTPException) as error:
        return {"sent": False, "error": f"{type(error).__name__}: {error}"}
    return {"sent": True, "host": host, "port": port, "implicit_tls": implicit, "starttls": starttls and not implicit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--to", required=True)
    parser.add_argument("--subject", required=True)
    parser.add_argument("--cafile", required=True)
    args = parser.parse_args()
    print(json.dumps(send(dict(os.environ), args.to, args.subject, args.cafile)))
    sys.exit(0)


if __name__ == "__main__":
    main()
