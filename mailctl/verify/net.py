"""Where the TCP checks connect: the name resolved through the operator's resolver (`--resolver`), each
address it gives tried in turn. The system resolver is never asked: on the operator's machine it may
know another address (a hosts entry, split DNS, a stale cache) and the check would pass against a
server no receiving MTA will ever reach. TLS is still checked against the name (SNI, verification)."""

from __future__ import annotations

import socket

from mailctl.verify.model import FAIL, Result, Target


class NoAddress(OSError):
    """The resolver gives no A or AAAA for the name: there is nothing to connect to."""


class Unreachable(OSError):
    """No address of the name accepted a connection; says what each one answered."""


def open_connection(target: Target, name: str, port: int) -> socket.socket:
    """A TCP connection to `name`:`port` at the first of its resolver-given addresses (A, then AAAA)
    that accepts one, each attempt bounded by the target's timeout."""
    addresses = target.addresses(name)
    if not addresses:
        raise NoAddress(f"the resolver gives no A/AAAA for {name}")
    failures = []
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=target.timeout)
        except OSError as error:
            failures.append(f"{address}: {type(error).__name__} {error}")
    raise Unreachable(f"{name} port {port}: " + "; ".join(failures))


def connection_failure(check: str, error: Exception, fix: str, publish: str) -> Result:
    """The red row of a connection that did not happen: a missing address needs the record `publish`
    says (DNS, not the server); anything else needs `fix`."""
    if isinstance(error, NoAddress):
        return Result(check, FAIL, str(error), f"publish {publish}, then run verify again")
    return Result(check, FAIL, f"{type(error).__name__}: {error}", fix)
