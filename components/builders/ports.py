"""The mail host's network services: each port, the TLS it speaks, and why it is open. The one place.

Settings (which submission a client may use), the firewall (what is open), the install (what Postfix,
Dovecot and nginx listen on), DNS (the RFC 6186 SRV records), the policy pack and `mailctl verify` all
read this module, so a port cannot be open without being served, published and checked.

TLS modes: "implicit" starts TLS at connect (RFC 8314), "starttls" upgrades a plain connection and
refuses AUTH before it (RFC 6409, RFC 3207), "opportunistic" offers STARTTLS but accepts mail without it
(RFC 7435: server-to-server SMTP must stay open to senders that cannot do TLS), "plain" has no TLS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TlsMode = Literal["implicit", "starttls", "opportunistic", "plain"]


@dataclass(frozen=True)
class Service:
    """One public TCP service of the mail host."""

    port: int
    name: str  #: the IANA service name, also Postfix's master.cf service where Postfix serves it
    tls: TlsMode
    why: str  #: the firewall rule's comment and what `verify` says it checks
    srv: str = ""  #: RFC 6186 SRV label (`_submission._tcp`), "" when clients do not discover it
    srv_priority: int = 0  #: lower is preferred; RFC 8314 5.1 prefers implicit TLS over STARTTLS
    standard: str = ""  #: the RFC that puts this service on this port

    @property
    def tls_words(self) -> str:
        return {"implicit": "implicit TLS", "starttls": "STARTTLS", "opportunistic": "opportunistic STARTTLS",
                "plain": "no TLS"}[self.tls]


SMTP = Service(25, "smtp", "opportunistic", "SMTP: mail from the internet to the MX (RFC 5321)")
HTTP = Service(80, "http", "plain", "HTTP: ACME http-01 challenges of the certificate")
HTTPS = Service(443, "https", "implicit", "HTTPS: the MTA-STS policy (RFC 8461), webmail and admin UI")
SUBMISSIONS = Service(465, "submissions", "implicit", "submission over implicit TLS: mail clients, CERES, Keycloak (RFC 8314)",
                      srv="_submissions._tcp", srv_priority=0, standard="RFC 8314")
SUBMISSION = Service(587, "submission", "starttls", "submission with STARTTLS: CERES, Keycloak and mail clients (RFC 6409)",
                     srv="_submission._tcp", srv_priority=10, standard="RFC 6409")
IMAPS = Service(993, "imaps", "implicit", "IMAP over implicit TLS (RFC 8314)", srv="_imaps._tcp", srv_priority=0)

#: The directory of `ldapMode: local` (slapd on the mail host): LDAP over implicit TLS, open only to
#: `ldapClientCidrs` (the cluster, for Keycloak's federation), never to the internet; no plain 389.
LDAPS = Service(636, "ldaps", "implicit", "LDAPS: the directory Keycloak federates (ldapClientCidrs only)")
LDAP_PLAIN_PORT = 389  #: plain LDAP (StartTLS or not): never opened by the mail host; an external directory may use it

#: What the firewall opens to the whole internet and the host serves, in port order.
PUBLIC = (SMTP, HTTP, HTTPS, SUBMISSIONS, SUBMISSION, IMAPS)
#: Where CERES and Keycloak may submit mail: the two submission services.
SUBMISSION_SERVICES = (SUBMISSIONS, SUBMISSION)
#: Client services this host does not offer: published as "not here" SRV records (RFC 6186 4).
NOT_OFFERED_SRV = ("_imap._tcp", "_pop3._tcp", "_pop3s._tcp")
#: Where the mail host's key is pinned by DANE TLSA records (`dane`): SMTP to the MX (RFC 7672) and the
#: client ports (RFC 7673's SRV-based DANE covers what clients find through the SRV records above).
DANE_SERVICES = (SMTP, SUBMISSIONS, SUBMISSION, IMAPS)
#: Ports that offer only TLS 1.2+ with AEAD, forward-secret suites (Mozilla's "intermediate" profile).
#: Port 25 is left wider on purpose: see `SMTP.tls`.
STRICT_TLS_PORTS = tuple(s.port for s in PUBLIC if s.tls in ("implicit", "starttls"))
#: The TLS 1.2 suites the strict ports offer (OpenSSL names): ECDHE key exchange (forward secrecy) with an
#: AEAD cipher (GCM or ChaCha20-Poly1305), no CBC (LUCKY13) and no static RSA. TLS 1.3 suites are all AEAD.
STRICT_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)


def submission_service(port: int) -> Service | None:
    """The submission service on `port`, or None when the host serves no submission there."""
    return next((s for s in SUBMISSION_SERVICES if s.port == port), None)


def submission_problem(port: int, starttls: bool, tls: bool) -> str | None:
    """Why a client's (port, STARTTLS, implicit TLS) choice cannot work with this host, or None."""
    if starttls and tls:
        return "STARTTLS and implicit TLS are both true; a connection uses one of them"
    if not starttls and not tls:
        return "neither STARTTLS nor implicit TLS: the password would cross the network in clear"
    service = submission_service(port)
    wanted, mode = ("implicit", "implicit TLS") if tls else ("starttls", "STARTTLS")
    if service is None or service.tls != wanted:
        right = next(s for s in SUBMISSION_SERVICES if s.tls == wanted)
        return f"port {port} with {mode}: {right.standard} {mode} submission is port {right.port}"
    return None
