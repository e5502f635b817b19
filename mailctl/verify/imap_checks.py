"""IMAPS on 993: TLS, the certificate, and a login with the no-reply credentials."""

from __future__ import annotations

import imaplib
import socket
import ssl

from mailctl.verify.model import FAIL, OK, WARN, Result, Target
from mailctl.verify.tls_util import certificate_result, context, tls_failure


class _NamedIMAP(imaplib.IMAP4_SSL):
    def __init__(self, address: str, host: str, ctx: ssl.SSLContext, timeout: float):
        self._name = host
        super().__init__(address, 993, ssl_context=ctx, timeout=timeout)

    def _create_socket(self, timeout):
        return self.ssl_context.wrap_socket(socket.create_connection((self.host, self.port), timeout),
                                            server_hostname=self._name)


def check_imaps(target: Target) -> list[Result]:
    try:
        with _NamedIMAP(target.connect_address(), target.host, context(target.cafile), target.timeout) as imap:
            results = [certificate_result("imaps 993 certificate", imap.sock, target.host)]
            if not target.password:
                return results + [Result("imaps 993 login", WARN, "no credentials given", "pass --password-file to test the login")]
            imap.login(target.mailbox, target.password)
            return results + [Result("imaps 993 login", OK, f"logged in as {target.mailbox}")]
    except imaplib.IMAP4.error as error:
        return [Result("imaps 993 login", FAIL, str(error), "check the mailbox password and Dovecot's passdb")]
    except (ssl.SSLError, ssl.CertificateError) as error:
        return [tls_failure("imaps 993 certificate", error, target.host)]
    except OSError as error:
        return [Result("imaps 993", FAIL, f"{type(error).__name__}: {error}",
                       "check that port 993 is open and Dovecot runs (systemctl status dovecot)")]
