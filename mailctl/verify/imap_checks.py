"""IMAPS on 993: TLS, the certificate, and a login with the no-reply credentials."""

from __future__ import annotations

import imaplib
import ssl

from components.builders.ports import IMAPS
from mailctl.verify.model import FAIL, OK, WARN, Result, Target
from mailctl.verify.net import connection_failure, open_connection
from mailctl.verify.tls_util import certificate_result, context, tls_failure


class _NamedIMAP(imaplib.IMAP4_SSL):
    """IMAPS to the host at an address the operator's resolver gives (net.open_connection), the certificate
    checked against the host name."""

    def __init__(self, target: Target):
        self._target = target
        super().__init__(target.host, IMAPS.port, ssl_context=context(target.cafile), timeout=target.timeout)

    def _create_socket(self, timeout):
        sock = open_connection(self._target, self.host, self.port)
        try:
            return self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def check_imaps(target: Target) -> list[Result]:
    """993, TLS from the first byte (RFC 8314): the certificate, then a login with the no-reply credentials."""
    try:
        with _NamedIMAP(target) as imap:
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
        return [connection_failure("imaps 993", error, "check that port 993 is open and Dovecot runs (systemctl status dovecot)",
                                   f"{target.host} A (and AAAA)")]
