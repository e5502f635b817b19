"""The rules that need several keys at once, and those over what the settings build.

`cross_field_problems` sees only the keys that passed their own check, so every rule runs on what is
sound and the operator gets every problem of a stack in one error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic.alias_generators import to_camel, to_snake

from components.builders.backup import parse_backup_target
from components.builders.dns_records import build_records, dkim_records, spf_problems
from components.builders.mailcow import SAFE_VALUE
from components.builders.ports import submission_problem
from components.builders.mail_stacks import STACKS, MailcowStack
from components.settings.schema import set_secret_command
from components.settings.values import unreachable_from_the_internet
from components.settings.derived import Settings, directory_names, mail_domains_of, mail_host_of


def within(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


Problems = list[tuple[str, str]]  #: (config key, what is wrong with it)


@dataclass(frozen=True)
class CrossRule:
    """A rule over several keys: it runs only when every key it reads passed its own check."""

    reads: tuple[str, ...]  #: the settings fields (snake_case) it reads: every one, and no other
    check: Callable[[Mapping[str, Any]], Problems]


def cross_field_problems(v: Mapping[str, Any]) -> Problems:
    """Every rule of CROSS_RULES whose keys passed their own check. `v` holds only those keys."""
    return [problem for rule in CROSS_RULES if has_all(v, *rule.reads) for problem in rule.check(v)]


def _mail_host_problems(v: Mapping[str, Any]) -> Problems:
    """The mail host is a name below the domain: outside it, or at its apex, is refused."""
    if v["mail_host"] and not within(v["mail_host"], v["domain"]):
        return [("mailHost", f"{v['mail_host']} is not inside the mail domain {v['domain']}")]
    if v["mail_host"] == v["domain"]:
        # either stack: the MX's A record would join the website's, and the webmail (SOGo or Roundcube)
        # and the MTA-STS host's certificate would claim the domain's own https://
        return [("mailHost", f"{v['domain']} is the mail domain itself; the mail host needs a name below it "
                             f"(e.g. mail.{v['domain']}): at the apex its A record would join the website's and "
                             f"its webmail would claim https://{v['domain']}/")]
    return []


def _mail_from_problems(v: Mapping[str, Any]) -> Problems:
    if v["mail_from"] and not within(v["mail_from"].rsplit("@", 1)[1].lower(), v["domain"]):
        return [("mailFrom", f"{v['mail_from']} is outside {v['domain']}: DMARC alignment would fail")]
    return []


def _route_problems(family: str, address_key: str, gateway_key: str) -> Callable[[Mapping[str, Any]], Problems]:
    """The VM's gateway of one address family: set with its address, inside its network, not the VM itself."""

    def check(v: Mapping[str, Any]) -> Problems:
        address, gateway, key = v[address_key], v[gateway_key], to_camel(gateway_key)
        if not address:
            return [(key, f"is set but {to_camel(address_key)} is empty")] if gateway else []
        if not gateway:
            return [(key, f"is required when {to_camel(address_key)} is set")]
        network, router = ipaddress.ip_interface(address).network, ipaddress.ip_address(gateway)
        if router.version != network.version:
            return [(key, f"{gateway} is not an IPv{family} address")]
        # an IPv6 router is on the link by its link-local address, which many hosters give as the gateway
        if router not in network and not (family == "6" and router.is_link_local):
            return [(key, f"{gateway} is not inside {network}")]
        if router == ipaddress.ip_interface(address).ip:
            return [(key, f"{gateway} is the VM's own address")]
        return []

    return check


def _address_family(family: int, name: str) -> Callable[[Mapping[str, Any]], Problems]:
    """ipv4Address holds an IPv4 address, ipv6Address (when set) an IPv6 one."""

    def check(v: Mapping[str, Any]) -> Problems:
        if v[name] and ipaddress.ip_interface(v[name]).version != family:
            return [(to_camel(name), f"{v[name]} is not an IPv{family} address")]
        return []

    return check


def _submission_problems(v: Mapping[str, Any]) -> Problems:
    """The port and TLS CERES and Keycloak submit with are a pair this host serves."""
    if problem := submission_problem(v["smtp_port"], v["smtp_starttls"], v["smtp_tls"]):
        key = "smtpPort" if v["smtp_starttls"] != v["smtp_tls"] else ("smtpTls" if v["smtp_tls"] else "smtpStarttls")
        return [(key, problem)]
    return []


def _vm_size_problems(v: Mapping[str, Any]) -> Problems:
    """A VM size given by hand is at least the mail stack's minimum."""
    floor = STACKS[v["mail_stack"]].minimum_size
    return [(key, f"{value} {unit} is below the {v['mail_stack']} stack's minimum of {minimum} {unit}")
            for key, value, minimum, unit in (
                ("vmCores", v["vm_cores"], floor.cores, "cores"),
                ("vmMemoryMib", v["vm_memory_mib"], floor.memory_mib, "MiB"),
                ("vmDiskGib", v["vm_disk_gib"], floor.disk_gib, "GiB"))
            if value and value < minimum]


def _published_key_rule(in_use: str, published: str, role: str, only: str) -> CrossRule:
    """A rotation's published keys (`published`, a list of PublishedSelector): each once, and never the key in
    use (`in_use`, which is `role`); `only` says what the list is for."""

    def check(v: Mapping[str, Any]) -> Problems:
        names = [entry.selector for entry in v[published]]
        problems = [(to_camel(published), f"{name} is listed twice")
                    for name in sorted({n for n in names if names.count(n) > 1})]
        if v[in_use] in names:
            problems.append((to_camel(published), f"{v[in_use]} is {to_camel(in_use)}, {role}: list only {only}"))
        return problems

    return CrossRule((in_use, published), check)


def _tls_published_problems(v: Mapping[str, Any]) -> Problems:
    """Keys published ahead of (or after) being served exist only where the stack owns the served one."""
    if not v["tls_published_keys"]:
        return []
    if not v["dane"]:
        return [("tlsPublishedKeys", "is set but dane is off: the stack owns TLS keys, and publishes their TLSA, "
                                     "only with dane and tlsMode acme")]
    if v["tls_mode"] != "acme":
        return [("tlsPublishedKeys", f"is set but tlsMode is {v['tls_mode']}: the stack owns TLS keys only with "
                                     "tlsMode acme (the TLSA of a provided certificate pins that certificate's key)")]
    return []


def _extra_domain_problems(v: Mapping[str, Any]) -> Problems:
    extra = [entry.domain for entry in v["extra_domains"]]
    return [("extraDomains", f"{domain} is listed twice (or is the primary domain)")
            for domain in sorted({d for d in extra if extra.count(d) > 1 or d == v["domain"]})]


def _with_mailcow(name: str, problem: Callable[[Any], str | None]) -> CrossRule:
    """A rule over mailStack and one key: with mailcow, `problem(value)` says what mailcow cannot do with the
    key's value (the native stack can), or None."""

    def check(v: Mapping[str, Any]) -> Problems:
        if v["mail_stack"] != MailcowStack.name or not (why := problem(v[name])):
            return []
        return [(to_camel(name), why)]

    return CrossRule(("mail_stack", name), check)


def _private_acme_ca(bundle: str) -> str | None:
    """acme-mailcow asks only the public CAs, so a private ACME server's CA has nowhere to go."""
    return ("is not supported by the mailcow stack (acme-mailcow trusts only the public CAs); use tlsMode provided"
            if bundle else None)


def _mailcow_conf_value(value: str) -> str | None:
    """mailcow.conf is sourced by bash and read by compose as .env: a value goes there only as plain characters."""
    if value and not SAFE_VALUE.fullmatch(value):
        return f"{value!r} cannot be written to mailcow.conf (letters, digits and _.,:/@+*- only)"
    return None


def _ignored_by_mailcow(key: str) -> Callable[[Any], str | None]:
    """A key of the native stack set to anything but its default (an empty list is the default too)."""
    default = Settings.model_fields[to_snake(key)].default

    def problem(value: Any) -> str | None:
        if value != default and (value or default):
            return (f"is set, but the mailcow stack ignores it: {IGNORED_BY_MAILCOW[key]}; remove {key} (it applies "
                    "to the native stack)")
        return None

    return problem


#: keys of the native stack that mailcow has its own way for (key -> what mailcow does instead)
_MAILCOW_BANS = "mailcow bans failed logins with its own netfilter container, set in its admin UI (Configuration, Fail2ban parameters)"
IGNORED_BY_MAILCOW = {
    "webmail": "mailcow always serves its own SOGo webmail at https://<mailHost>/SOGo",
    "bruteForceMaxRetry": _MAILCOW_BANS,
    "bruteForceBanMinutes": _MAILCOW_BANS,
    "clusterCidrs": "networks exempt from mailcow's bans are its netfilter whitelist, set in its admin UI",
}


#: the keys of the WireGuard gateway beside gatewayMode (camelCase -> field), each needed with wireguard
GATEWAY_KEYS = {"gatewayHost": "gateway_host", "gatewayHostKey": "gateway_host_key",
                "gatewaySshPrivateKey": "gateway_ssh_private_key", "gatewayPublicIpv4": "gateway_public_ipv4"}
GATEWAY_HINTS = {
    "gatewayHost": "the VPS the stack installs the gateway on",
    "gatewayHostKey": "its SSH host key (ssh-keyscan -t ed25519 <host>), the only one trusted",
    "gatewaySshPrivateKey": f"`{set_secret_command('gatewaySshPrivateKey')}`, the key that logs in to the VPS",
    "gatewayPublicIpv4": "the VPS's public IPv4 address, which DNS publishes for the mail host",
}


def _reachability_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Without a gateway the VM's own addresses are what the internet connects to: they must be public."""
    if v["gateway_mode"] != "off":
        return []
    problems = []
    for key, name in (("ipv4Address", "ipv4_address"), ("ipv6Address", "ipv6_address")):
        if v[name] and (problem := unreachable_from_the_internet(str(ipaddress.ip_interface(v[name]).ip))):
            problems.append((key, f"{problem} (or keep the VM at home behind a VPS: gatewayMode wireguard)"))
    return problems


def _gateway_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the gateway needs, and nothing of it left set without one."""
    if v["gateway_mode"] == "off":
        return [(key, "is set but gatewayMode is off")
                for key, name in GATEWAY_KEYS.items() if v[name] not in ("", None)]
    problems = [(key, f"is required with gatewayMode wireguard: {GATEWAY_HINTS[key]}")
                for key, name in GATEWAY_KEYS.items() if v[name] in ("", None)]
    if v["gateway_public_ipv4"] and ipaddress.ip_address(v["gateway_public_ipv4"]).version != 4:
        problems.append(("gatewayPublicIpv4", f"{v['gateway_public_ipv4']} is not an IPv4 address"))
    return problems


def _gateway_ipv6_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The VPS's IPv6 address, optional: only with a gateway, and an IPv6 one."""
    address = v["gateway_public_ipv6"]
    if address and v["gateway_mode"] == "off":
        return [("gatewayPublicIpv6", "is set but gatewayMode is off")]
    if address and ipaddress.ip_address(address).version != 6:
        return [("gatewayPublicIpv6", f"{address} is not an IPv6 address")]
    return []


def _gateway_stack_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The gateway stage binds the native stack's Postfix, not mailcow's."""
    if v["gateway_mode"] != "off" and v["mail_stack"] == MailcowStack.name:
        return [("gatewayMode", "wireguard is not supported with mailStack mailcow yet (its Postfix runs in a "
                 "container the gateway stage does not bind): use the native stack")]
    return []


def _gateway_tunnel_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The tunnel's /30 is apart from the VM's home network, or the VM could not tell the two apart."""
    if v["gateway_mode"] == "off":
        return []
    home = ipaddress.ip_interface(v["ipv4_address"]).network
    if ipaddress.ip_network(v["gateway_tunnel_cidr"]).overlaps(home):
        return [("gatewayTunnelCidr", f"{v['gateway_tunnel_cidr']} overlaps the VM's network {home}: "
                 "pick a /30 no network of yours uses")]
    return []


def _backup_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What each kind of backupTarget needs, and no credential of the other kind left lying around."""
    kind = parse_backup_target(v["backup_target"]).kind if v["backup_target"] else ""
    problems = []
    if kind == "sftp" and not v["backup_host_key"]:
        problems.append(("backupHostKey", "is required with an sftp: backupTarget: the backup host's SSH host key "
                         "(ssh-keyscan -t ed25519 <host>), the only one the mail host will trust"))
    if kind != "sftp" and v["backup_host_key"]:
        problems.append(("backupHostKey", "is set but backupTarget is not sftp:"))
    for key, name in (("backupS3AccessKey", "backup_s3_access_key"), ("backupS3SecretKey", "backup_s3_secret_key")):
        if kind == "s3" and v[name] is None:
            problems.append((key, f"is required with an s3: backupTarget: `{set_secret_command(key)}`"))
        if kind != "s3" and v[name] is not None:
            problems.append((key, "is set but backupTarget is not s3:"))
    return problems


def _backup_host(v: Mapping[str, Any]) -> str:
    """The host (a name or an address) backupTarget sends the backups to, "" without backups."""
    return parse_backup_target(v["backup_target"]).host.lower().rstrip(".") if v["backup_target"] else ""


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _lost_with_the_mail_host(how: str | None) -> list[tuple[str, str]]:
    """backupTarget on the mail host itself (`how` it is that host), where a backup is lost with it."""
    return [("backupTarget", f"{how}: a backup on the machine it backs up is lost with it; name another machine, "
                             "or an S3 endpoint elsewhere")] if how else []


def _backup_on_loopback(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """backupTarget at localhost or a loopback address."""
    host = _backup_host(v)
    if host == "localhost":
        return _lost_with_the_mail_host("localhost is the mail host itself")
    address = _address(host)
    loopback = address is not None and address.is_loopback
    return _lost_with_the_mail_host(f"{address} is the mail host's loopback" if loopback else None)


def _backup_on_the_mail_hosts_name(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """backupTarget at the mail host's own name (mailHost, or mail.<domain>)."""
    host = _backup_host(v)
    own = host and host == mail_host_of(v["domain"], v["mail_host"])
    return _lost_with_the_mail_host(f"{host} is the mail host's own name" if own else None)


def _backup_on_an_address_of(name: str) -> Callable[[Mapping[str, Any]], Problems]:
    """backupTarget at the VM's own address of one family (the gateway's VPS is another machine: a backup
    may go there)."""

    def check(v: Mapping[str, Any]) -> Problems:
        address = _address(_backup_host(v))
        own = v[name] and address == ipaddress.ip_interface(v[name]).ip
        return _lost_with_the_mail_host(f"{address} is the mail host's own address" if own else None)

    return check


def _ldap_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What each ldapMode needs, and nothing it would silently ignore."""
    mode = v["ldap_mode"]
    problems = []
    if mode == "off":
        return [(key, f"is set but ldapMode is off; set ldapMode to local or external, or remove {key}")
                for key, name in (("ldapUrl", "ldap_url"), ("ldapBindDn", "ldap_bind_dn"), ("ldapClientCidrs", "ldap_client_cidrs"))
                if v[name]] + ([("ldapBindPassword", "is set but ldapMode is off")] if v["ldap_bind_password"] is not None else [])
    if mode == "local":
        if v["ldap_url"]:
            problems.append(("ldapUrl", "is set but ldapMode is local: the directory is on the mail host (ldaps://<mailHost>)"))
        if v["ldap_bind_password"] is not None:
            problems.append(("ldapBindPassword", "is set but ldapMode is local: the stack makes the bind password"))
        if not v["ldap_client_cidrs"]:
            problems.append(("ldapClientCidrs", "is required with ldapMode local: the networks Keycloak's federation "
                             "connects from (the cluster's egress); the directory is never open to the internet"))
    else:
        if not v["ldap_url"]:
            problems.append(("ldapUrl", "is required with ldapMode external: ldaps://host or ldap://host (StartTLS)"))
        if not v["ldap_bind_dn"]:
            problems.append(("ldapBindDn", "is required with ldapMode external: the account the mail host and Keycloak bind as"))
        if v["ldap_bind_password"] is None:
            problems.append(("ldapBindPassword", f"is required with ldapMode external: `{set_secret_command('ldapBindPassword')}`"))
        if v["ldap_client_cidrs"]:
            problems.append(("ldapClientCidrs", "is set but ldapMode is external: the mail host opens no directory port"))
    return problems


def _ldap_stack_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A directory is for the native stack: mailcow syncs its mailboxes from an identity provider of its own."""
    if v["ldap_mode"] != "off" and v["mail_stack"] == MailcowStack.name:
        return [("ldapMode", "is not supported with mailStack mailcow: mailcow brings its own identity provider "
                 "(Keycloak, generic OIDC or LDAP, in its admin UI), which syncs its own mailbox table; use "
                 "mailStack native, or set mailcow's identity provider up by hand with ldapMode off")]
    return []


def _directory_name_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The people are under the base DN; with ldapMode local, every name is one its stage can make."""
    if v["ldap_mode"] == "off":
        return []
    if v["ldap_users_dn"]:
        base = directory_names(v["domain"], v["ldap_base_dn"], "", "")[0]
        if not _dn_within(v["ldap_users_dn"], base):
            return [("ldapUsersDn", f"{v['ldap_users_dn']} is not under the base DN {base} (ldapBaseDn)")]
    return _local_directory_problems(v) if v["ldap_mode"] == "local" else []


def has_all(v: Mapping[str, Any], *names: str) -> bool:
    """Whether every key passed its own check (`v` holds only those)."""
    return all(name in v for name in names)


def _local_directory_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ldap stage makes the suffix, the containers and the service account itself: each must be named
    by an attribute it knows how to make an entry of, and the account must live inside the directory."""
    from components.builders.ldif import ACCOUNT_CLASSES, CONTAINER_CLASSES, naming

    base, users, bind = directory_names(v["domain"], v["ldap_base_dn"], v["ldap_users_dn"], v["ldap_bind_dn"] or "")
    problems = []
    for key, dn, below in (("ldapBaseDn", base, base), ("ldapUsersDn", users, base), ("ldapBindDn", bind, base)):
        try:
            rdns = naming(dn)
        except ValueError as error:
            problems.append((key, f"{error} (ldapMode local)"))
            continue
        leaf = rdns[0][0] if key == "ldapBindDn" else None
        containers = rdns[1:] if leaf else rdns
        if leaf and leaf not in ACCOUNT_CLASSES:
            problems.append((key, f"{dn}: the service account must be named by {' or '.join(f'{a}=' for a in ACCOUNT_CLASSES)} "
                                  "(ldapMode local makes it)"))
        unknown = sorted({attribute for attribute, _ in containers if attribute not in CONTAINER_CLASSES})
        if unknown:
            problems.append((key, f"{dn}: ldapMode local makes containers named by "
                                  f"{', '.join(f'{a}=' for a in CONTAINER_CLASSES)}, not {', '.join(f'{a}=' for a in unknown)}"))
        if key == "ldapBindDn" and not _dn_within(dn, below):
            problems.append((key, f"{dn} is not under the base DN {base}: ldapMode local keeps the account in its directory"))
    return problems


def _dn_within(dn: str, base: str) -> bool:
    """Whether `dn` is `base` or below it, compared as RFC 4514 names (case and spacing aside)."""
    from ldap3.utils.dn import parse_dn

    def rdns(name: str) -> list[tuple[str, str]]:
        return [(attribute.lower(), value.lower()) for attribute, value, _ in parse_dn(name)]

    inner, outer = rdns(dn), rdns(base)
    return len(inner) >= len(outer) and inner[len(inner) - len(outer):] == outer


def _dane_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A TLSA pins a key known before it is served: the native stack's, which the stack owns or is given."""
    if not v["dane"]:
        return []
    if v["mail_stack"] != "native":
        return [("dane", f"is not available with mailStack {v['mail_stack']}, which gets and renews its own "
                         "certificate: use the native stack")]
    return []


def _tls_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A provided certificate needs its key and must name the mail host and every mta-sts host."""
    if v["tls_mode"] == "acme":
        return [("tlsCertificate", "is set but tlsMode is acme; set tlsMode to provided")] if v["tls_certificate"] else []
    problems = []
    if v["tls_private_key"] is None:
        problems.append(("tlsPrivateKey", f"is required with tlsMode provided: `{set_secret_command('tlsPrivateKey')}`"))
    if not v["tls_certificate"]:
        return problems + [("tlsCertificate", "is required with tlsMode provided")]
    from cryptography import x509  # here: only a stack that brings its certificate pays for loading X.509

    leaf = x509.load_pem_x509_certificates(v["tls_certificate"].encode())[0]
    try:
        names = set(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = set()
    domains = mail_domains_of(v["domain"], v["extra_domains"])
    wanted = [mail_host_of(v["domain"], v["mail_host"]), *(f"mta-sts.{d}" for d in domains)]
    missing = [n for n in wanted if n not in names and f"*.{n.split('.', 1)[1]}" not in names]
    if missing:
        problems.append(("tlsCertificate", f"does not name {', '.join(missing)} (it names {', '.join(sorted(names)) or 'nothing'})"))
    return problems


def import_problems(settings: Settings) -> list[tuple[str, str]]:
    """dnsImportIds may only name records this stack declares (else the import would adopt nothing)."""
    inputs = settings.dns_inputs
    keys = {r.key for r in (*build_records(inputs), *dkim_records(inputs))}
    return [
        ("dnsImportIds", f"{key!r} is not a record of this stack (see the record keys in `mailctl plan`)")
        for key in settings.import_ids
        if key not in keys
    ]


#: every rule over several keys, each naming the fields it reads
CROSS_RULES: tuple[CrossRule, ...] = (
    CrossRule(("domain", "mail_host"), _mail_host_problems),
    CrossRule(("domain", "mail_from"), _mail_from_problems),
    CrossRule(("ipv4_address", "ipv4_gateway"), _route_problems("4", "ipv4_address", "ipv4_gateway")),
    CrossRule(("ipv6_address", "ipv6_gateway"), _route_problems("6", "ipv6_address", "ipv6_gateway")),
    CrossRule(("gateway_mode", "ipv4_address", "ipv6_address"), _reachability_problems),
    CrossRule(("gateway_mode", *GATEWAY_KEYS.values()), _gateway_problems),
    CrossRule(("gateway_mode", "gateway_public_ipv6"), _gateway_ipv6_problems),
    CrossRule(("gateway_mode", "mail_stack"), _gateway_stack_problems),
    CrossRule(("gateway_mode", "gateway_tunnel_cidr", "ipv4_address"), _gateway_tunnel_problems),
    CrossRule(("ipv4_address",), _address_family(4, "ipv4_address")),
    CrossRule(("ipv6_address",), _address_family(6, "ipv6_address")),
    CrossRule(("smtp_port", "smtp_starttls", "smtp_tls"), _submission_problems),
    _with_mailcow("acme_ca_bundle", _private_acme_ca),
    _with_mailcow("acme_email", _mailcow_conf_value),
    _with_mailcow("acme_directory", _mailcow_conf_value),
    *(_with_mailcow(to_snake(key), _ignored_by_mailcow(key)) for key in IGNORED_BY_MAILCOW),
    CrossRule(("mail_stack", "vm_cores", "vm_memory_mib", "vm_disk_gib"), _vm_size_problems),
    CrossRule(("tls_mode", "tls_certificate", "tls_private_key", "domain", "mail_host", "extra_domains"), _tls_problems),
    CrossRule(("dane", "mail_stack"), _dane_problems),
    _published_key_rule("dkim_selector", "dkim_published_selectors", "the selector that signs",
                        "selectors that are published without signing"),
    _published_key_rule("tls_key_selector", "tls_published_keys", "the key the host serves",
                        "keys whose TLSA is published while the host does not serve them"),
    CrossRule(("tls_published_keys", "dane", "tls_mode"), _tls_published_problems),
    CrossRule(("ldap_mode", "ldap_url", "ldap_bind_dn", "ldap_bind_password", "ldap_client_cidrs"), _ldap_problems),
    CrossRule(("ldap_mode", "mail_stack"), _ldap_stack_problems),
    CrossRule(("ldap_mode", "domain", "ldap_base_dn", "ldap_users_dn", "ldap_bind_dn"), _directory_name_problems),
    CrossRule(("backup_target", "backup_host_key", "backup_s3_access_key", "backup_s3_secret_key"), _backup_problems),
    CrossRule(("backup_target",), _backup_on_loopback),
    CrossRule(("backup_target", "domain", "mail_host"), _backup_on_the_mail_hosts_name),
    CrossRule(("backup_target", "ipv4_address"), _backup_on_an_address_of("ipv4_address")),
    CrossRule(("backup_target", "ipv6_address"), _backup_on_an_address_of("ipv6_address")),
    CrossRule(("spf_extra",), lambda v: [("spfExtra", problem) for problem in spf_problems(tuple(v["spf_extra"]))]),
    CrossRule(("domain", "extra_domains"), _extra_domain_problems),
)
