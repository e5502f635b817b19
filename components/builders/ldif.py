"""LDIF and distinguished names: the entries the `ldap` stage makes, and how the settings read a DN.

A DN is read as RFC 4514 writes it (ldap3's parser, escapes undone per value); an entry is written as
RFC 2849 wants it, base64 where a value is not a SAFE-STRING. Only entries named by one attribute are
made, each with the structural object class that attribute calls for (`CONTAINER_CLASSES`,
`ACCOUNT_CLASSES`); with ldapMode local the settings refuse, before any stage is rendered, a DN the
ldap stage could not make.
"""

from __future__ import annotations

import base64
import re

from ldap3.utils.dn import parse_dn

from components.builders.inputs import LdapInputs

#: The structural object class of a container the ldap stage makes, by the attribute that names it
CONTAINER_CLASSES = {"dc": ("domain",), "o": ("organization",), "ou": ("organizationalUnit",), "c": ("country",),
                     "l": ("locality",)}
#: The object classes of the service account, by the attribute that names it (simpleSecurityObject: a password)
ACCOUNT_CLASSES = {"cn": ("organizationalRole", "simpleSecurityObject"), "uid": ("account", "simpleSecurityObject")}


def ldif_line(attribute: str, value: str) -> str:
    """`attribute: value`, or `attribute:: base64` where RFC 2849 wants it (not a SAFE-STRING)."""
    safe = value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<")) and not value.endswith(" ")
    return f"{attribute}: {value}" if safe else f"{attribute}:: {base64.b64encode(value.encode()).decode()}"


def rdn_value(escaped: str) -> str:
    r"""The attribute value an RDN names, its DN escapes (RFC 4514: `\,`, and `\C3\9C` for the UTF-8 of Ü) undone."""
    return re.sub(r"((?:\\[0-9A-Fa-f]{2})+)|\\(.)",
                  lambda m: bytes.fromhex(m[1].replace("\\", "")).decode("utf-8", "replace") if m[1] else m[2], escaped)


def naming(dn: str) -> list[tuple[str, str]]:
    """(attribute, escaped value) of each RDN of `dn`, the leaf first; one attribute per RDN."""
    rdns = parse_dn(dn)
    if any(separator == "+" for _, _, separator in rdns):
        raise ValueError(f"{dn}: a multi-valued RDN; the ldap stage makes entries named by one attribute")
    return [(attribute.lower(), value) for attribute, value, _ in rdns]


def entry_ldif(dn: str, classes: dict[str, tuple[str, ...]], what: str) -> str:
    """The LDIF of the entry `dn`: the object classes its naming attribute calls for, and that attribute."""
    attribute, value = naming(dn)[0]
    if attribute not in classes:
        raise ValueError(f"{dn}: {what} named by {attribute}=; the ldap stage makes those named by "
                         + ", ".join(f"{name}=" for name in classes))
    lines = [ldif_line("dn", dn), *(f"objectClass: {c}" for c in ("top", *classes[attribute])), ldif_line(attribute, rdn_value(value))]
    return "\n".join(lines)


def directory_containers(ldap: LdapInputs) -> tuple[str, ...]:
    """The entries above the people and the service account, from the base down, as LDIF each (made when
    missing): the suffix, every container down to users_dn, and the service account's parents."""
    depth = len(naming(ldap.base_dn))
    wanted: list[str] = []
    for dn, lowest in ((ldap.users_dn, 0), (ldap.bind_dn, 1)):
        rdns = [f"{attribute}={value}" for attribute, value in naming(dn)]
        for level in range(len(rdns) - depth, lowest - 1, -1):
            container = ",".join(rdns[level:])
            if container.lower() not in (w.lower() for w in wanted):
                wanted.append(container)
    return tuple(entry_ldif(dn, CONTAINER_CLASSES, "a container") for dn in wanted)
