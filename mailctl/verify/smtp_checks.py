"""SMTP on 25 (the MX) and submission on 587 (CERES, Keycloak, mail clients)."""

from __future__ import annotations

import smtplib
import socket
import ssl

from mailctl.verify.model import FAIL, OK, WARN, Result, Target
from mailctl.verify.tls_util import certificate_result, context, tls_failure

FOREIGN_RECIPIENT = "relay-test@example.invalid"  # never delivered: the check stops after RCPT


class _NamedSMTP(smtplib.SMTP):
    """Connect to an address, check the certificate against the host name."""

    def __init__(self, address: str, port: int, host: str, timeout: float):
        super().__init__(address, port, timeout=timeout)
        self._host = host


def check_smtp(target: Target) -> list[Result]:
    """25: the banner names the host, STARTTLS with a valid certificate, no relay for a foreign domain."""
    results = []
    try:
        with _NamedSMTP(target.connect_address(), 25, target.host, target.timeout) as smtp:
            code, greeting = smtp.ehlo("verify.ceres-mail.invalid")
            banner = greeting.decode(errors="replace").splitlines()[0]
            results.append(Result("smtp 25 banner", OK if banner.startswith(target.host) else WARN, banner,
                                  "" if banner.startswith(target.host) else f"set Postfix myhostname to {target.host}"))
            if not smtp.has_extn("starttls"):
                results.append(Result("smtp 25 starttls", FAIL, "STARTTLS not offered", "configure smtpd_tls_cert_file (rerun the mail stage)"))
                return results
            try:
                smtp.starttls(context=context(target.cafile))
                results.append(certificate_result("smtp 25 certificate", smtp.sock, target.host))
            except (ssl.SSLError, ssl.CertificateError) as error:
                results.append(tls_failure("smtp 25 certificate", error, target.host))
                return results
            smtp.ehlo("verify.ceres-mail.invalid")
            smtp.mail(f"verify@{target.domain}")
            code, reply = smtp.rcpt(FOREIGN_RECIPIENT)
            smtp.rset()
            refused = code >= 500
            results.append(Result("smtp 25 relay", OK if refused else FAIL, f"RCPT to a foreign domain: {code} {reply.decode(errors='replace')}",
                                  "" if refused else "the server relays for anyone: restore smtpd_relay_restrictions (rerun the mail stage)"))
    except (OSError, smtplib.SMTPException) as error:
        results.append(Result("smtp 25", FAIL, f"{type(error).__name__}: {error}",
                              "check that port 25 is open (VM firewall, provider) and Postfix runs"))
    return results


def check_submission(target: Target) -> list[Result]:
    """587: AUTH only after STARTTLS, then a login with the no-reply credentials."""
    results = []
    try:
        with _NamedSMTP(target.connect_address(), 587, target.host, target.timeout) as smtp:
            smtp.ehlo("verify.ceres-mail.invalid")
            early = smtp.has_extn("auth")
            results.append(Result("submission 587 auth before starttls", FAIL if early else OK,
                                  "AUTH offered in clear" if early else "AUTH not offered before STARTTLS",
                                  "set smtpd_tls_auth_only = yes" if early else ""))
            try:
                smtp.starttls(context=context(target.cafile))
            except (ssl.SSLError, ssl.CertificateError) as error:
                return results + [tls_failure("submission 587 certificate", error, target.host)]
            results.append(certificate_result("submission 587 certificate", smtp.sock, target.host))
            smtp.ehlo("verify.ceres-mail.invalid")
            if not target.password:
                results.append(Result("submission 587 login", WARN, "no credentials given", "pass --password-file to test the login"))
            else:
                smtp.login(target.mailbox, target.password)
                results.append(Result("submission 587 login", OK, f"logged in as {target.mailbox}"))
    except smtplib.SMTPAuthenticationError as error:
        results.append(Result("submission 587 login", FAIL, f"{error.smtp_code} {error.smtp_error.decode(errors='replace')}",
                              "check the mailbox password (the mail stage writes it) and Dovecot's auth log"))
    except (OSError, smtplib.SMTPException, socket.timeout) as error:
        results.append(Result("submission 587", FAIL, f"{type(error).__name__}: {error}",
                              "check that port 587 is open and Postfix's submission service runs"))
    return results
