"""The directory of `ldapMode` local or external: TLS (LDAPS, or StartTLS on ldap://), its certificate, and
that an anonymous client reads nothing. Run from a network the directory is open to (ldapClientCidrs).

The LDAP protocol is ldap3's; the connection goes to an address the operator's resolver gives for the
directory's host (as every check here), and the certificate is checked against the host name.
"""

from __future__ import annotations

import math
import ssl
import urllib.parse

import ldap3
from ldap3.core.exceptions import LDAPException

from components.builders.ports import LDAP_PLAIN_PORT, LDAPS
from mailctl.verify.model import FAIL, OK, Result, Target
from mailctl.verify.net import NoAddress, connection_failure
from mailctl.verify.tls_util import certificate_result, tls_failure



def check_directory(target: Target) -> list[Result]:
    """Nothing without a directory; else its TLS, then what an anonymous search sees under the base DN."""
    if not target.ldap_url:
        return []
    url = urllib.parse.urlsplit(target.ldap_url)
    host, implicit = url.hostname or "", url.scheme == "ldaps"
    port = url.port or (LDAPS.port if implicit else LDAP_PLAIN_PORT)
    name = f"ldap {host}:{port}"
    addresses = target.addresses(host)
    if not addresses:
        return [connection_failure(name, NoAddress(f"the resolver gives no A/AAAA for {host}"), "",
                                   f"{host} A (and AAAA)")]
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=None, ca_certs_file=target.cafile, valid_names=[host], sni=host)
    failures = []
    for address in addresses:
        server = ldap3.Server(address, port=port, use_ssl=implicit, tls=tls, connect_timeout=target.timeout)
        # ldap3 packs the receive timeout into SO_RCVTIMEO as whole seconds: a float (the CLI's --timeout) crashes it
        connection = ldap3.Connection(server, receive_timeout=max(1, math.ceil(target.timeout)), raise_exceptions=True)
        try:
            connection.open()
            if not implicit:
                connection.start_tls()
            results = [certificate_result(f"{name} {'ldaps' if implicit else 'starttls'}", connection.socket, host)]
            return results + [_anonymous_result(name, connection, target.ldap_base_dn)]
        except (ssl.SSLError, ssl.CertificateError) as error:
            return [tls_failure(f"{name} {'ldaps' if implicit else 'starttls'}", error, host)]
        except LDAPException as error:
            if isinstance(error.__context__, (ssl.SSLError, ssl.CertificateError)):
                return [tls_failure(f"{name} {'ldaps' if implicit else 'starttls'}", error.__context__, host)]
            failures.append(f"{address}: {type(error).__name__} {error}")
        finally:
            if not connection.closed:
                connection.unbind()
    return [Result(name, FAIL, "; ".join(failures),
                   "run verify from a network in ldapClientCidrs (the directory is closed to all others); "
                   "check slapd runs (systemctl status slapd)")]


def _anonymous_result(name: str, connection: ldap3.Connection, base_dn: str) -> Result:
    """An anonymous client may bind (or be refused), and must see no entry: names and mail addresses
    are the users' own, and a hash in reach is a password in reach."""
    check = f"{name} anonymous"
    try:
        connection.search(base_dn, "(objectClass=*)", search_scope=ldap3.SUBTREE, attributes=["*"], size_limit=5)
    except LDAPException as error:
        return Result(check, OK, f"an anonymous search under {base_dn} is refused ({type(error).__name__})")
    if connection.entries:
        return Result(check, FAIL, f"an anonymous search under {base_dn} reads {len(connection.entries)}+ entries",
                      "restrict the directory's ACL: anonymous may only authenticate (olcAccess ... by anonymous auth)")
    return Result(check, OK, f"an anonymous search under {base_dn} reads nothing")
