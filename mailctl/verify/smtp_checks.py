"""SMTP on 25 (the MX) and submission (CERES, Keycloak, mail clients) on every submission service of
components/builders/ports.py, each with the TLS mode it speaks: implicit TLS on 465 (RFC 8314), STARTTLS
on 587 (RFC 6409)."""

from __future__ import annotations

import smtplib
import socket
import ssl

from components.builders.ports import SMTP, SUBMISSION_SERVICES, TlsMode, submission_service
from mailctl.verify.model import FAIL, OK, WARN, Result, Target
from mailctl.verify.net import connection_failure, open_connection
from mailctl.verify.tls_util import certificate_result, context, tls_failure

STARTTLS, IMPLICIT_TLS = "starttls", "implicit"  #: how a port starts TLS (components/builders/ports.py)
EHLO_NAME = "verify.ceres-mail.invalid"
FOREIGN_RECIPIENT = "relay-test@example.invalid"  # never delivered: the check stops after RCPT


class NamedSMTP(smtplib.SMTP):
    """SMTP to the host at an address the operator's resolver gives (net.open_connection), the certificate
    checked against the host name (smtplib uses the name it connects to as SNI). The EHLO name is given,
    so smtplib does not ask the system resolver for this machine's own name either."""

    def __init__(self, target: Target, port: int, tls: TlsMode = STARTTLS):
        self._target = target
        self._implicit_context = context(target.cafile) if tls == IMPLICIT_TLS else None
        super().__init__(target.host, port, local_hostname=EHLO_NAME, timeout=target.timeout)

    def _get_socket(self, host, port, timeout):
        sock = open_connection(self._target, host, port)
        if self._implicit_context is None:
            return sock
        try:
            return self._implicit_context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise


def check_smtp(target: Target) -> list[Result]:
    """25: the banner names the host, STARTTLS with a valid certificate, no relay for a foreign domain."""
    results = []
    try:
        with NamedSMTP(target, SMTP.port, SMTP.tls) as smtp:
            code, greeting = smtp.ehlo(EHLO_NAME)
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
            smtp.ehlo(EHLO_NAME)
            smtp.mail(f"verify@{target.domain}")
            code, reply = smtp.rcpt(FOREIGN_RECIPIENT)
            smtp.rset()
            refused = code >= 500
            results.append(Result("smtp 25 relay", OK if refused else FAIL, f"RCPT to a foreign domain: {code} {reply.decode(errors='replace')}",
                                  "" if refused else "the server relays for anyone: restore smtpd_relay_restrictions (rerun the mail stage)"))
    except (OSError, smtplib.SMTPException) as error:
        results.append(connection_failure("smtp 25", error, "check that port 25 is open (VM firewall, provider) and Postfix runs",
                                          f"{target.host} A (and AAAA)"))
    return results


def check_submission(target: Target) -> list[Result]:
    """Every submission service the host offers (components/builders/ports.py: 465 with implicit TLS,
    587 with STARTTLS), each with the TLS mode it speaks."""
    return [result for service in SUBMISSION_SERVICES for result in check_submission_port(target, service.port, service.tls)]


def check_submission_port(target: Target, port: int, tls: TlsMode) -> list[Result]:
    """Submission on `port`, TLS by `tls`. IMPLICIT_TLS (RFC 8314): the handshake is the first thing on the
    connection, so AUTH is only ever offered over TLS. STARTTLS (RFC 6409, RFC 3207): AUTH must not be
    offered before it (the password would cross in clear). Then, under TLS, the certificate, AUTH offered,
    and a login with the no-reply credentials when they are given."""
    if tls not in (STARTTLS, IMPLICIT_TLS):
        raise ValueError(f"submission on port {port} with TLS mode {tls!r}: only {STARTTLS} or {IMPLICIT_TLS}")
    name, service = f"submission {port}", submission_service(port)
    master = f"Postfix's {service.name if service else 'submission'} service (master.cf)"
    results = []
    try:
        with NamedSMTP(target, port, tls) as smtp:
            if tls == IMPLICIT_TLS:
                results.append(Result(f"{name} tls", OK, f"TLS at connect ({smtp.sock.version()}, RFC 8314)"))
            smtp.ehlo(EHLO_NAME)
            if tls == STARTTLS:
                early = smtp.has_extn("auth")
                results.append(Result(f"{name} auth before starttls", FAIL if early else OK,
                                      "AUTH offered in clear" if early else "AUTH not offered before STARTTLS",
                                      "set smtpd_tls_auth_only = yes" if early else ""))
                if not smtp.has_extn("starttls"):
                    return results + [Result(f"{name} tls", FAIL, "STARTTLS not offered",
                                             f"set smtpd_tls_security_level=encrypt on {master}, then rerun the mail stage")]
                try:
                    smtp.starttls(context=context(target.cafile))
                except (ssl.SSLError, ssl.CertificateError) as error:
                    return results + [_handshake_failure(name, error, target, tls, master)]
                results.append(Result(f"{name} tls", OK, f"STARTTLS ({smtp.sock.version()}, RFC 3207)"))
                smtp.ehlo(EHLO_NAME)
            results.append(certificate_result(f"{name} certificate", smtp.sock, target.host))
            auth = _auth_result(name, smtp, tls, master)
            results.append(auth)
            if auth.status != OK:
                return results
            if not target.password:
                results.append(Result(f"{name} login", WARN, "no credentials given", "pass --password-file to test the login"))
            else:
                smtp.login(target.mailbox, target.password)
                results.append(Result(f"{name} login", OK, f"logged in as {target.mailbox}"))
    except smtplib.SMTPAuthenticationError as error:
        results.append(Result(f"{name} login", FAIL, f"{error.smtp_code} {error.smtp_error.decode(errors='replace')}",
                              "check the mailbox password (the mail stage writes it) and Dovecot's auth log"))
    except (ssl.SSLError, ssl.CertificateError) as error:  # implicit TLS: the handshake is part of connecting
        results.append(_handshake_failure(name, error, target, tls, master))
    except (OSError, smtplib.SMTPException, socket.timeout) as error:
        results.append(connection_failure(name, error, f"check that port {port} is open and {master} runs",
                                          f"{target.host} A (and AAAA)"))
    return results


def _auth_result(name: str, smtp: smtplib.SMTP, tls: TlsMode, master: str) -> Result:
    """AUTH under TLS: without it no client can log in to submit."""
    how = "TLS from connect" if tls == IMPLICIT_TLS else "after STARTTLS"
    if not smtp.has_extn("auth"):
        return Result(f"{name} auth", FAIL, f"AUTH not offered ({how})",
                      f"set smtpd_sasl_auth_enable=yes on {master}, then rerun the mail stage")
    offered = " ".join(["AUTH", *smtp.esmtp_features.get("auth", "").split()])
    return Result(f"{name} auth", OK, f"{offered} offered only over TLS ({how})")


def _handshake_failure(name: str, error: Exception, target: Target, tls: TlsMode, master: str) -> Result:
    """A refused certificate is the certificate's row; any other handshake failure means the port does not
    speak the TLS it should (e.g. 465 answering in plain text: no wrapper mode)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return tls_failure(f"{name} certificate", error, target.host)
    if tls == IMPLICIT_TLS:
        return Result(f"{name} tls", FAIL, f"no TLS at connect: {type(error).__name__}: {error}",
                      f"serve implicit TLS (RFC 8314): set smtpd_tls_wrappermode=yes on {master}, then rerun the mail stage")
    return Result(f"{name} tls", FAIL, f"the STARTTLS handshake failed: {type(error).__name__}: {error}",
                  f"check smtpd_tls_cert_file and smtpd_tls_mandatory_protocols (TLS 1.2 or later) for {master}")
