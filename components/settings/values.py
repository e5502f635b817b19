"""Value types of the settings: each carries its own rule, so a field's annotation says what it accepts.

A rule raises ValueError with a message that quotes the value; `reading.py` puts the config key in front.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import urllib.parse
import zoneinfo
from collections.abc import Callable
from typing import Annotated, NamedTuple

import pulumi
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn
from pydantic import AfterValidator, EmailStr, Field, PlainValidator, TypeAdapter

from components.builders.backup import BackupKeep, parse_backup_target
from components.builders.mailcow import MAILCOW_RELEASE_COMMITS

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def domain_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2:
        raise ValueError(f"{value!r} is not a fully qualified domain name (e.g. example.com)")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a valid domain name: labels are letters, digits and inner hyphens, "
            "1-63 characters"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} is not a domain name: its last label is numeric")
    return name


def dns_label(value: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(f"{value!r} is not a DNS label (letters, digits, inner hyphens, 1-63)")
    return value


def host_interface(value: str) -> str:
    """A host address with its prefix length (203.0.113.25/24), any range: the VM's own address. Whether the
    internet must reach it depends on gatewayMode, a rule over both keys (rules.py)."""
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address with prefix length (e.g. 203.0.113.25/24)")
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length (e.g. 203.0.113.25/24)")
    address = interface.ip
    if address.is_unspecified or interface.network.network_address == address and interface.network.num_addresses > 1:
        raise ValueError(f"{value!r} is a network address, not a host address")
    return str(interface)


RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


#: RFC 5737 and RFC 3849: documentation ranges, not routed either, but what the examples and the test
#: internet are written with, so they pass as public
DOCUMENTATION = tuple(ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                        "2001:db8::/32"))
#: what a non-global address is, in the words an operator looks up (the first that holds)
_NOT_ROUTED = (
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_unspecified", "the unspecified address"),
)
_NAMED_NETWORKS = (
    (ipaddress.ip_network("100.64.0.0/10"), "in carrier-grade NAT space (RFC 6598), shared behind the provider's NAT"),
    *((network, "private (RFC 1918)") for network in RFC1918),
    (ipaddress.ip_network("fc00::/7"), "a unique local address (RFC 4193)"),
)


def unreachable_from_the_internet(address: str) -> str | None:
    """Why the internet cannot reach `address`, or None: the one "publicly routable" rule of every key that
    must be public (the standard library's is_global, documentation ranges allowed for examples)."""
    ip = ipaddress.ip_address(address)
    if ip.is_global or any(ip in network for network in DOCUMENTATION if network.version == ip.version):
        return None
    kind = next((words for attribute, words in _NOT_ROUTED if getattr(ip, attribute)), None) or next(
        (words for network, words in _NAMED_NETWORKS if network.version == ip.version and ip in network),
        "reserved, never routed")
    return f"{ip} cannot be reached from the internet: it is {kind}; a mail server needs a public static address"


def public_address(value: str) -> str:
    """An address the internet reaches (the gateway's): its A/AAAA record and PTR."""
    address = ip_address(value)
    if problem := unreachable_from_the_internet(address):
        raise ValueError(problem)
    return address


def tunnel_network(value: str) -> str:
    """The gateway tunnel's IPv4 network: a private /30 (its two addresses, VPS then VM)."""
    try:
        network = ipaddress.ip_network(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 network with its prefix length (e.g. 10.254.25.0/30)")
    if network.version != 4 or network.prefixlen != 30 or not any(network.subnet_of(n) for n in RFC1918):
        raise ValueError(f"{value!r} is not a private IPv4 /30 (e.g. 10.254.25.0/30)")
    return str(network)


def ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address")


def host_address(value: str) -> str:
    """An IP address, or a host name of one label or more (a Proxmox node often has a short name)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{value!r} is neither an IP address nor a host name")
    return name


def closed_to_the_internet(service: str, who: str) -> Callable[[str], str]:
    """A network in CIDR form that a private service (SSH, the directory) is opened to: never all of it."""

    def check(value: str) -> str:
        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as error:
            raise ValueError(f"{value!r} is not a network in CIDR form ({error})")
        if network.prefixlen == 0:
            raise ValueError(f"{value!r} would open {service} to the whole internet; list {who}")
        return str(network)

    return check


admin_cidr = closed_to_the_internet("SSH", "your admin networks")


def _ssh_key_problem(line: str) -> str | None:
    """Why `line` is not an OpenSSH public key (`keytype base64 [comment]`), or None. The parser raises
    more than ValueError for some input (an unknown curve is UnsupportedAlgorithm): every failure is the
    key's problem, never a traceback."""
    try:
        load_ssh_public_key(line.encode())
    except Exception as error:  # noqa: BLE001 - see the docstring
        return str(error) or type(error).__name__
    return None


def _one_line(value: str, example: str) -> str:
    lines = [line for line in value.strip().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise ValueError(f"holds {len(lines)} key lines; give exactly one ({example})")
    return lines[0].strip()


def ssh_public_key(value: str) -> str:
    """A user's key as authorized_keys takes it: `ssh-ed25519 AAAA... [comment]`."""
    line = _one_line(value, "ssh-ed25519 AAAA... you@laptop")
    if problem := _ssh_key_problem(line):
        raise ValueError(f"not an OpenSSH public key ({problem})")
    return line


def ssh_host_key(value: str) -> str:
    """A host's key, as its public key or as the line `ssh-keyscan -t ed25519 <host>` prints
    (`<host> ssh-ed25519 AAAA...`): the host name in front is dropped, only the key is pinned."""
    line = _one_line(value, "the line of ssh-keyscan -t ed25519 <host>, or ssh-ed25519 AAAA...")
    if (problem := _ssh_key_problem(line)) is None:
        return line
    _host, _, key = line.partition(" ")
    if key and _ssh_key_problem(key.strip()) is None:
        return key.strip()
    raise ValueError(f"not an SSH host key ({problem}): give the line of "
                     "`ssh-keyscan -t ed25519 <host>` or its `ssh-ed25519 AAAA...` part")


def pem_certificates(value: str) -> str:
    from cryptography import x509  # here: only a stack that brings its certificate pays for loading X.509

    try:
        certificates = x509.load_pem_x509_certificates(value.encode())
    except ValueError as error:
        raise ValueError(f"not PEM certificates ({error})")
    if not certificates:
        raise ValueError("holds no PEM certificate")
    return value


def https_url(value: str) -> str:
    if not re.match(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/.*)?$", value):
        raise ValueError(f"{value!r} is not an https:// URL")
    return value


#: path segments that only pages inside Keycloak have: where a URL copied from the browser goes on
_KEYCLOAK_PAGES = ("realms", "admin", "resources", "js", "protocol", "account")


def keycloak_base_url(value: str) -> str:
    """Keycloak's base URL, the part before /realms/ and /admin/: https://sso.example.com, or with a path
    where Keycloak is served below one (https://example.com/auth). A URL copied from the browser's address
    bar (…/realms/ceres/account, …/admin/master/console/) is refused here, not by the provider at `up`."""
    https_url(value)
    parts = urllib.parse.urlsplit(value)
    segments = [segment for segment in parts.path.split("/") if segment]
    page = next((index for index, segment in enumerate(segments) if segment in _KEYCLOAK_PAGES), None)
    if page is not None or parts.query or parts.fragment:
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/".join(["", *segments[:page]]), "", ""))
        raise ValueError(f"{value!r} is a page inside Keycloak, not its base URL: write {base!r} (the part before "
                         "/realms/ and /admin/)")
    return value.rstrip("/")


def matching(pattern: str, what: str) -> AfterValidator:
    """A string rule whose error says in words what was expected (pydantic's would print the regex)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def dkim_key_size(value: int) -> int:
    if value not in (2048, 3072, 4096):
        raise ValueError(f"{value} is not allowed: 2048, 3072 or 4096 (RFC 8301; 2048 fits every DNS host)")
    return value


def cloudflare_ttl(value: int) -> int:
    if not (value == 1 or 60 <= value <= 86400):
        raise ValueError(f"{value}: Cloudflare accepts 1 (automatic) or 60..86400")
    return value


# files of the time zone database that are not zones
_NOT_ZONES = frozenset({"Factory", "localtime", "posixrules", "posix", "right"})


def timezone(value: str) -> str:
    """An IANA zone name, checked by loading it (listing every zone would cost ~15 ms on each plan)."""
    try:
        known = value.split("/", 1)[0] not in _NOT_ZONES and zoneinfo.ZoneInfo(value) is not None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        known = False
    if not known:
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)")
    return value


_WHOLE_SECONDS = re.compile(r"(:\d{1,2})\.\d+")


def systemd_calendar(value: str) -> str:
    """A calendar expression as systemd's OnCalendar= takes it (systemd.time(7)): `daily`, `Mon..Fri 22:30`,
    `*-*-* 03:30:00`. Judged here, not at the last stage of `pulumi up` when systemd reads the timer; cron
    syntax and words are refused, and so is a time that never comes again (no backup would ever run)."""
    from oncalendar import OnCalendar, OnCalendarError  # here: only a stack with backups pays for it

    value = value.strip()  # a stack file's stray blank (systemd trims a unit file's values too)
    # where the parser is more lenient than systemd (an empty list item), or stricter (fractions of a
    # second, which a daily backup never needs: dropped for the check alone)
    if ",," in value:
        raise ValueError(f"{value!r} is not a systemd calendar expression (an empty item between commas)")
    try:
        next(OnCalendar(_WHOLE_SECONDS.sub(r"\1", value), datetime.datetime.now(datetime.timezone.utc)))
    except OnCalendarError as error:
        raise ValueError(f"{value!r} is not a systemd calendar expression ({error}): write e.g. daily, "
                         "Mon..Fri 22:30 or *-*-* 03:30:00 (`systemd-analyze calendar '<expression>'` checks one)")
    except StopIteration:
        raise ValueError(f"{value!r} never comes again, so the backup would never run: write a recurring "
                         "time, e.g. daily or *-*-* 03:30:00")
    return value


def pinned_mailcow_release(value: str) -> str:
    """A release the project pins by commit (a tag alone can be moved)."""
    if value not in MAILCOW_RELEASE_COMMITS:
        raise ValueError(
            f"{value!r} is not a release this project pins ({', '.join(sorted(MAILCOW_RELEASE_COMMITS))}): a new "
            "one is added to MAILCOW_RELEASE_COMMITS in components/builders/mailcow.py with the commit its tag names")
    return value


def optional(rule: Callable[[str], str]) -> Callable[[str], str]:
    """Empty string means "not set" for optional keys (Pulumi.yaml gives them "" as default)."""
    return lambda value: rule(value) if value else ""


class ZoneEntry(NamedTuple):
    """An `extraDomains` entry: a mail domain and the Cloudflare zone it lives in."""

    domain: str
    zone_id: str


class ImportEntry(NamedTuple):
    """A `dnsImportIds` entry: a record key (as in `mailctl plan`) and the Cloudflare record it adopts."""

    key: str
    record_id: str


def ldap_dn(value: str) -> str:
    """A distinguished name as RFC 4514 writes it (ldap3 parses it): `ou=people,dc=example,dc=com`."""
    try:
        parse_dn(value)
    except LDAPInvalidDnError as error:
        raise ValueError(f"{value!r} is not an LDAP distinguished name ({error}), e.g. ou=people,dc=example,dc=com")
    return value


def ldap_url(value: str) -> str:
    """ldaps://host[:port], or ldap://host[:port] (used with StartTLS required); no path, query or user."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("ldaps", "ldap") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username or parts.fragment:
        raise ValueError(f"{value!r} is not ldaps://host[:port] or ldap://host[:port] (StartTLS)")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{value!r} has a port that is not a number 1-65535")
    return value.rstrip("/")


class PublishedSelector(NamedTuple):
    """A key published without being in use, and why (may be empty): a `dkimPublishedSelectors` entry (a
    selector that does not sign) or a `tlsPublishedKeys` one (a key whose TLSA is published, not served)."""

    selector: str
    reason: str = ""


REASON_MAX = 200  #: a reason is one short line: it becomes the record's comment in Cloudflare and the zone file


def published_selector(value: object) -> PublishedSelector:
    """`ceres2026`, or `{selector: ceres2026, reason: "next key, published 2026-11-26"}`: the reason says
    which key of a rotation it is and until when, so a published key nobody uses is never a mystery."""
    if isinstance(value, str):
        return PublishedSelector(dns_label(value))
    if not isinstance(value, dict) or set(value) - {"selector", "reason"} or not isinstance(value.get("selector"), str):
        raise ValueError(f"{value!r} is neither a selector nor {{selector: <label>, reason: <text>}}")
    reason = value.get("reason", "")
    if not isinstance(reason, str) or not reason.strip() or "\n" in reason or len(reason) > REASON_MAX:
        raise ValueError(f"the reason of {value['selector']!r} must be one line of 1-{REASON_MAX} characters")
    return PublishedSelector(dns_label(value["selector"]), reason.strip())


def backup_target(value: str) -> str:
    parse_backup_target(value)
    return value


KEEP_MAX = 1000  #: snapshots of one kind restic keeps; more is a typo, not a retention


def backup_keep(value: object) -> BackupKeep:
    """`{daily: 7, weekly: 4, monthly: 6}`, any of them left out keeping its default; at least one above 0
    (a retention of nothing would let `restic forget` remove every snapshot)."""
    if isinstance(value, BackupKeep):
        return value
    fields = ("daily", "weekly", "monthly")
    if not isinstance(value, dict) or set(value) - set(fields):
        raise ValueError(f"{value!r} is not {{daily: <n>, weekly: <n>, monthly: <n>}}")
    for name in fields:
        count = value.get(name, 0)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= KEEP_MAX:
            raise ValueError(f"{name}: {count!r} is not a number of snapshots 0-{KEEP_MAX}")
    keep = BackupKeep(**value)
    if not any((keep.daily, keep.weekly, keep.monthly)):
        raise ValueError("keeps no snapshot at all: at least one of daily, weekly, monthly must be above 0")
    return keep


def keyed_entry(entry: type[ZoneEntry] | type[ImportEntry], form: str, name_rule: Callable[[str], str] = str,
                id_pattern: str = r"[0-9a-f]{32}") -> PlainValidator:
    """`<name>=<id>` list entries, parsed here and only here into (name, id): every reader takes the pair."""
    ids = re.compile(id_pattern)

    def parse(value: object) -> ZoneEntry | ImportEntry:
        name, separator, ident = value.partition("=") if isinstance(value, str) else ("", "", "")
        if not separator or not ids.fullmatch(ident):
            raise ValueError(f"{value!r} is not {form}")
        return entry(name_rule(name), ident)

    return PlainValidator(parse)


DomainName = Annotated[str, AfterValidator(domain_name)]
OptionalDomainName = Annotated[str, AfterValidator(optional(domain_name))]
DnsLabel = Annotated[str, AfterValidator(dns_label)]
HostInterface = Annotated[str, AfterValidator(host_interface)]
OptionalHostInterface = Annotated[str, AfterValidator(optional(host_interface))]
OptionalPublicAddress = Annotated[str, AfterValidator(optional(public_address))]
TunnelNetwork = Annotated[str, AfterValidator(tunnel_network)]
IpAddress = Annotated[str, AfterValidator(ip_address)]
OptionalIpAddress = Annotated[str, AfterValidator(optional(ip_address))]
OptionalHostAddress = Annotated[str, AfterValidator(optional(host_address))]
AdminCidr = Annotated[str, AfterValidator(admin_cidr)]
LdapClientCidr = Annotated[str, AfterValidator(closed_to_the_internet("the directory", "the cluster's egress networks"))]
ClusterCidr = Annotated[str, AfterValidator(closed_to_the_internet("an exemption from fail2ban's bans",
                                                                   "the cluster's egress networks"))]
SshPublicKey = Annotated[str, AfterValidator(ssh_public_key)]
HttpsUrl = Annotated[str, AfterValidator(https_url)]
KeycloakBaseUrl = Annotated[str, AfterValidator(keycloak_base_url)]
OptionalEmail = Annotated[str, AfterValidator(optional(lambda v: TypeAdapter(EmailStr).validate_python(v)))]
OptionalPemCertificates = Annotated[str, AfterValidator(optional(pem_certificates))]
OptionalDnsLabel = Annotated[str, AfterValidator(optional(dns_label))]
Timezone = Annotated[str, AfterValidator(timezone)]
MailcowRelease = Annotated[str, matching(r"\d{4}-\d{2}[a-z]?", "a mailcow-dockerized release tag (e.g. 2026-07a)"),
                           AfterValidator(pinned_mailcow_release)]
LocalPart = Annotated[str, matching(r"[a-z0-9][a-z0-9._-]{0,63}", "a mailbox local part (a-z 0-9 . _ -)")]
LinuxUser = Annotated[str, matching(r"[a-z_][a-z0-9_-]{0,31}", "a Linux user name")]
OptionalSha512 = Annotated[str, matching(r"([0-9a-f]{128})?", "a SHA-512 in hex (128 characters)")]
CloudflareZoneId = Annotated[str, matching(r"[0-9a-f]{32}", "a Cloudflare zone id (32 hex digits)")]
CloudflareTtl = Annotated[int, AfterValidator(cloudflare_ttl)]
DkimKeyBits = Annotated[int, AfterValidator(dkim_key_size)]
SpfMechanism = Annotated[
    str, matching(r"[+?~-]?(ip4:|ip6:|a|mx|include:|exists:)\S*", "an SPF mechanism (ip4:, ip6:, a, mx, include:, exists:)")
]
OptionalReportUrl = Annotated[str, matching(r"((mailto:\S+@\S+)|(https://\S+))?", "a mailto: or https: URL")]
ExtraDomain = Annotated[ZoneEntry, keyed_entry(ZoneEntry, "<domain>=<32-hex Cloudflare zone id>", domain_name)]
OptionalLdapDn = Annotated[str, AfterValidator(optional(ldap_dn))]
OptionalLdapUrl = Annotated[str, AfterValidator(optional(ldap_url))]
PublishedKey = Annotated[PublishedSelector, PlainValidator(published_selector)]
DnsImport = Annotated[ImportEntry, keyed_entry(ImportEntry, "<record key>=<32-hex Cloudflare record id>")]
OptionalBackupTarget = Annotated[str, AfterValidator(optional(backup_target))]
OptionalSshHostKey = Annotated[str, AfterValidator(optional(ssh_host_key))]
# the characters first: the expression is written into the VM's timer unit by the install script
SystemdCalendar = Annotated[str, matching(r"[A-Za-z0-9*,.:/~ _+-]{1,100}",
                                          "a systemd calendar expression (e.g. daily, or *-*-* 03:30:00)"),
                            AfterValidator(systemd_calendar)]
BackupRetention = Annotated[BackupKeep, PlainValidator(backup_keep)]
Port = Annotated[int, Field(ge=1, le=65535)]
NonEmpty = Annotated[str, Field(min_length=1)]


class SecretMarker:
    """Marks a field read with `get_secret`: its value is a secret `pulumi.Output`, never plain text."""


Secret = Annotated[pulumi.Output, SecretMarker()]
OptionalSecret = Annotated[pulumi.Output | None, SecretMarker()]
