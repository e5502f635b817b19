"""Client-side probes of the mail host's directory over LDAPS, run inside a test network namespace like
probe.py, printing one JSON object: what Keycloak's federation (bind as the service account, search,
Password Modify), an operator (add people as the root DN) and an attacker (anonymous, another person) do.

    python ldap_probe.py <probe> --host IP [--name mail.example.com] --cafile F [--dn DN --password-file F]

Passwords come from files (`--password-file`, `--new-password-file`, an entry's JSON file), never from the
command line. With no --dn a probe does not bind at all (`bind`: binds anonymously). Exit status 0 means
"the probe ran".
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys

from ldap3 import BASE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException


def connect(args) -> Connection:
    """LDAPS to --host, the certificate checked against --cafile and --name; bound as --dn if given."""
    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=args.cafile, valid_names=[args.name],
              version=ssl.PROTOCOL_TLS_CLIENT)
    server = Server(args.host, port=args.port, use_ssl=True, tls=tls, connect_timeout=20)
    if not args.dn:
        connection = Connection(server, receive_timeout=20, return_empty_attributes=False)
        connection.open()
        return connection
    password = open(args.password_file).read()
    # (an attribute asked for but not given stays out of the answer, as on the wire)
    return Connection(server, user=args.dn, password=password, receive_timeout=20, raise_exceptions=False,
                      return_empty_attributes=False)


def outcome(connection: Connection, ok: bool) -> dict:
    return {"ok": bool(ok), "result": connection.result.get("description", ""),
            "message": connection.result.get("message", "")}


def bound(args) -> tuple[Connection, dict | None]:
    """The connection, and the failed bind's outcome if binding as --dn failed."""
    connection = connect(args)
    if args.dn and not connection.bind():
        return connection, outcome(connection, False)
    return connection, None


def probe_bind(args) -> dict:
    """A bind as --dn, or with no --dn an anonymous bind (a bind request with no name and no password)."""
    if not args.dn:
        connection = connect(args)
        return outcome(connection, connection.bind())
    connection, failed = bound(args)
    return failed or {"ok": True, "result": "success", "who": connection.extend.standard.who_am_i()}


def probe_search(args) -> dict:
    """Search --base (--scope) for --filter; every value as text (a password hash's bytes too)."""
    connection, failed = bound(args)
    if failed:
        return failed
    ok = connection.search(args.base, args.filter, search_scope=BASE if args.scope == "base" else SUBTREE,
                           attributes=args.attributes.split(",") if args.attributes else ["*"])
    entries = [{"dn": item["dn"],
                "attributes": {name: [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values]
                               for name, values in item["raw_attributes"].items()}}
               for item in connection.response or () if item.get("type") == "searchResEntry"]
    return {**outcome(connection, ok), "entries": entries}


def probe_add(args) -> dict:
    """Add the entry of --entry-file (JSON: dn, attributes)."""
    connection, failed = bound(args)
    if failed:
        return failed
    entry = json.load(open(args.entry_file))
    return outcome(connection, connection.add(entry["dn"], attributes=entry["attributes"]))


def probe_passwd(args) -> dict:
    """The LDAP Password Modify extended operation (RFC 3062) on --user, as Keycloak's WRITABLE mode sends it:
    the new password only."""
    connection, failed = bound(args)
    if failed:
        return failed
    ok = connection.extend.standard.modify_password(user=args.user, new_password=open(args.new_password_file).read())
    return outcome(connection, ok)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("probe", choices=("bind", "search", "add", "passwd"))
    parser.add_argument("--host", required=True)
    parser.add_argument("--name", default="mail.example.com")
    parser.add_argument("--port", type=int, default=636)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--dn", default="")
    parser.add_argument("--password-file")
    parser.add_argument("--base", default="")
    parser.add_argument("--scope", default="subtree", choices=("base", "subtree"))
    parser.add_argument("--filter", default="(objectClass=*)")
    parser.add_argument("--attributes", default="")
    parser.add_argument("--entry-file")
    parser.add_argument("--user", default="")
    parser.add_argument("--new-password-file")
    args = parser.parse_args()
    probes = {"bind": probe_bind, "search": probe_search, "add": probe_add, "passwd": probe_passwd}
    try:
        result = probes[args.probe](args)
    except (LDAPException, OSError) as error:
        result = {"ok": False, "exception": f"{type(error).__name__}: {error}"}
    json.dump(result, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
