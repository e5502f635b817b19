"""Stack settings: the one place that reads `pulumi.Config`.

Every key of Pulumi.yaml's `config:` block is a field of `Settings`, named in snake_case with the config
key as its camelCase alias. Values are checked field by field (pydantic) and then across fields (the
rules below), and every problem is gathered into ONE `SettingsError` before any resource is registered,
so an operator fixes a stack file in one pass instead of one key per `pulumi up`.

`SettingsError` is a `pulumi.RunError`: the Pulumi language host prints its message without a traceback,
and `mailctl` prints it the same way.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pulumi
from pulumi.runtime import config as pulumi_config
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    Json,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from components.builders.ceres_env import SmtpClient
from components.builders.dns_records import (
    DnsInputs,
    Dmarc,
    build_records,
    dkim_record_name,
    mta_sts_policy,
    spf_problems,
)
from components.builders.install_script import InstallInputs
from components.builders.ports import submission_problem
from components.builders.mailcow import MAILCOW_RELEASE, SAFE_VALUE, MailcowInputs

PROJECT = "ceres-mail"


class SettingsError(pulumi.RunError):
    """Every bad config value of a stack, one line each, naming the key."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = sorted(set(problems))
        # a key of this project is named as the stack file names it; a full key (another namespace) as is
        lines = [f"  {key if ':' in key else f'{PROJECT}:{key}'}: {why}" for key, why in self.problems]
        super().__init__(
            f"the stack configuration has {len(self.problems)} problem(s):\n" + "\n".join(lines)
        )


# --- value types: each carries its own rule, so a field's annotation says what it accepts -------------

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _domain_name(value: str) -> str:
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


def _dns_label(value: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(f"{value!r} is not a DNS label (letters, digits, inner hyphens, 1-63)")
    return value


def _public_interface(value: str) -> str:
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an address with prefix length (e.g. 203.0.113.25/24)")
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length (e.g. 203.0.113.25/24)")
    address = interface.ip
    private_v4 = address.version == 4 and any(
        address in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    )
    if private_v4 or address.is_loopback or address.is_link_local or address.is_multicast:
        raise ValueError(
            f"{address} cannot be reached from the internet; a mail server needs a public static "
            "address"
        )
    if address.is_unspecified or interface.network.network_address == address and interface.network.num_addresses > 1:
        raise ValueError(f"{value!r} is a network address, not a host address")
    return str(interface)


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address")


def _admin_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        raise ValueError(f"{value!r} is not a network in CIDR form ({error})")
    if network.prefixlen == 0:
        raise ValueError(f"{value!r} would open SSH to the whole internet; list your admin networks")
    return str(network)


def _ssh_public_key(value: str) -> str:
    try:
        load_ssh_public_key(value.strip().encode())
    except (ValueError, TypeError) as error:
        raise ValueError(f"not an OpenSSH public key ({error})")
    return value.strip()


def _pem_certificates(value: str) -> str:
    try:
        certificates = x509.load_pem_x509_certificates(value.encode())
    except ValueError as error:
        raise ValueError(f"not PEM certificates ({error})")
    if not certificates:
        raise ValueError("holds no PEM certificate")
    return value


def _https_url(value: str) -> str:
    if not re.match(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/.*)?$", value):
        raise ValueError(f"{value!r} is not an https:// URL")
    return value


def _matching(pattern: str, what: str) -> AfterValidator:
    """A string rule whose error says in words what was expected (pydantic's would print the regex)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _domain_and_zone(value: str) -> str:
    domain, separator, zone_id = value.partition("=")
    if not separator or not re.fullmatch(r"[0-9a-f]{32}", zone_id):
        raise ValueError(f"{value!r} is not <domain>=<32-hex Cloudflare zone id>")
    return f"{_domain_name(domain)}={zone_id}"


def _dkim_key_bits(value: int) -> int:
    if value not in (2048, 3072, 4096):
        raise ValueError(f"{value} is not allowed: 2048, 3072 or 4096 (RFC 8301; 2048 fits every DNS host)")
    return value


def _cloudflare_ttl(value: int) -> int:
    if not (value == 1 or 60 <= value <= 86400):
        raise ValueError(f"{value}: Cloudflare accepts 1 (automatic) or 60..86400")
    return value


@functools.cache
def _timezones() -> frozenset[str]:
    """Read once, and only when a stack sets a time zone: listing them takes ~20 ms."""
    return frozenset(zoneinfo.available_timezones())


def _timezone(value: str) -> str:
    if value not in _timezones():
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)")
    return value


def _optional(rule: Callable[[str], str]) -> Callable[[str], str]:
    """Empty string means "not set" for optional keys (Pulumi.yaml gives them "" as default)."""
    return lambda value: rule(value) if value else ""


DomainName = Annotated[str, AfterValidator(_domain_name)]
OptionalDomainName = Annotated[str, AfterValidator(_optional(_domain_name))]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
PublicInterface = Annotated[str, AfterValidator(_public_interface)]
OptionalPublicInterface = Annotated[str, AfterValidator(_optional(_public_interface))]
IpAddress = Annotated[str, AfterValidator(_ip_address)]
OptionalIpAddress = Annotated[str, AfterValidator(_optional(_ip_address))]
AdminCidr = Annotated[str, AfterValidator(_admin_cidr)]
SshPublicKey = Annotated[str, AfterValidator(_ssh_public_key)]
HttpsUrl = Annotated[str, AfterValidator(_https_url)]
OptionalEmail = Annotated[str, AfterValidator(_optional(lambda v: TypeAdapter(EmailStr).validate_python(v)))]
Port = Annotated[int, Field(ge=1, le=65535)]
NonEmpty = Annotated[str, Field(min_length=1)]


class SecretMarker:
    """Marks a field read with `get_secret`: its value is a secret `pulumi.Output`, never plain text."""


Secret = Annotated[pulumi.Output, SecretMarker()]

def mail_host_of(domain: str, mail_host: str = "") -> str:
    """The mail host: mail.<domain> unless one is named."""
    return mail_host or f"mail.{domain}"


# --- mail stacks: what each needs from its VM -----------------------------------------------------


@dataclass(frozen=True)
class VmSize:
    """Cores, memory and system disk of the mail VM."""

    cores: int
    memory_mib: int
    disk_gib: int


# Defaults and floors per mail stack. mailcow documents 6 GiB RAM as its minimum (ClamAV, SOGo,
# Solr are in the bundle); the native stack runs comfortably in 2 GiB.
STACK_DEFAULT_SIZE = {
    "native": VmSize(cores=2, memory_mib=2048, disk_gib=20),
    "mailcow": VmSize(cores=2, memory_mib=6144, disk_gib=40),
}
STACK_MINIMUM_SIZE = {
    "native": VmSize(cores=1, memory_mib=1024, disk_gib=10),
    "mailcow": VmSize(cores=2, memory_mib=6144, disk_gib=20),
}


class Settings(BaseModel):
    """A stack's validated configuration. Frozen: components read it, nothing changes it."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        arbitrary_types_allowed=True,
    )

    # the mail domain
    domain: DomainName
    mail_host: OptionalDomainName = ""
    mail_stack: Literal["native", "mailcow"] = "native"
    mailcow_version: Annotated[str, _matching(r"\d{4}-\d{2}[a-z]?", "a mailcow-dockerized release tag (e.g. 2026-07a)")] = MAILCOW_RELEASE
    mailcow_clamav: bool = True
    mailcow_timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    mail_user: Annotated[str, _matching(r"[a-z0-9][a-z0-9._-]{0,63}", "a mailbox local part (a-z 0-9 . _ -)")] = "no-reply"
    mail_from: OptionalEmail = ""
    mail_from_name: Annotated[str, Field(min_length=1, max_length=64)] = "CERES"
    mail_reply_to: OptionalEmail = ""
    smtp_port: Port = 587
    smtp_starttls: bool = True
    smtp_tls: bool = False
    acme_email: OptionalEmail = ""
    tls_mode: Literal["acme", "provided"] = "acme"
    tls_certificate: Annotated[str, AfterValidator(_optional(_pem_certificates))] = ""
    tls_private_key: Annotated[pulumi.Output | None, SecretMarker()] = None
    acme_directory: HttpsUrl = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_bundle: Annotated[str, AfterValidator(_optional(_pem_certificates))] = ""
    # network
    ipv4_address: PublicInterface
    ipv4_gateway: IpAddress
    ipv6_address: OptionalPublicInterface = ""
    ipv6_gateway: OptionalIpAddress = ""
    dns_resolvers: Json[Annotated[list[IpAddress], Field(min_length=1)]] = ("9.9.9.9", "149.112.112.112")
    admin_cidrs: Json[Annotated[list[AdminCidr], Field(min_length=1)]]
    admin_user: Annotated[str, _matching(r"[a-z_][a-z0-9_-]{0,31}", "a Linux user name")] = "ceres"
    admin_ssh_keys: Json[Annotated[list[SshPublicKey], Field(min_length=1)]]
    # Proxmox VE
    proxmox_node: NonEmpty
    proxmox_datastore: NonEmpty = "local-lvm"
    proxmox_file_datastore: NonEmpty = "local"
    proxmox_bridge: NonEmpty = "vmbr0"
    vm_id: Annotated[int, Field(ge=0, le=999_999_999)] = 0
    vm_cores: Annotated[int, Field(ge=0, le=128)] = 0
    vm_memory_mib: Annotated[int, Field(ge=0)] = 0
    vm_disk_gib: Annotated[int, Field(ge=0)] = 0
    vm_data_disk_gib: Annotated[int, Field(ge=1)] = 20
    image_url: HttpsUrl = (
        "https://cloud.debian.org/images/cloud/bookworm/20250210-2019/"
        "debian-12-genericcloud-amd64-20250210-2019.qcow2"
    )
    image_checksum: Annotated[str, _matching(r"([0-9a-f]{128})?", "a SHA-512 in hex (128 characters)")] = (
        "a58d86525d75fd8e139a2302531ce5d2ab75ef0273cfe78f9d53aada4b23efd4"
        "5f8433b4806fa4570cfe981c8fae26f5e5e855cbd66ba2198862f28125fd2d45"
    )
    protect: bool = True
    # DNS
    cloudflare_zone_id: Annotated[str, _matching(r"[0-9a-f]{32}", "a Cloudflare zone id (32 hex digits)")]
    dns_ttl: Annotated[int, AfterValidator(_cloudflare_ttl)] = 3600
    mx_priority: Annotated[int, Field(ge=0, le=65535)] = 10
    spf_extra: Json[list[Annotated[str, _matching(r"[+?~-]?(ip4:|ip6:|a|mx|include:|exists:)\S*", "an SPF mechanism (ip4:, ip6:, a, mx, include:, exists:)")]]] = ()
    dkim_selector: DnsLabel = "ceres"
    dkim_key_bits: Annotated[int, AfterValidator(_dkim_key_bits)] = 2048
    dmarc_policy: Literal["none", "quarantine", "reject"] = "none"
    dmarc_pct: Annotated[int, Field(ge=0, le=100)] = 100
    dmarc_adkim: Literal["r", "s"] = "r"
    dmarc_aspf: Literal["r", "s"] = "r"
    dmarc_rua: OptionalEmail = ""
    dmarc_ruf: OptionalEmail = ""
    extra_domains: Json[list[Annotated[str, AfterValidator(_domain_and_zone)]]] = ()
    mta_sts_mode: Literal["testing", "enforce", "none"] = "testing"
    mta_sts_max_age: Annotated[int, Field(ge=86400, le=31557600)] = 604800
    tls_rpt_address: OptionalEmail = ""
    caa_issuers: Json[list[DomainName]] = ("letsencrypt.org",)
    caa_iodef: Annotated[str, _matching(r"((mailto:\S+@\S+)|(https://\S+))?", "a mailto: or https: URL")] = ""
    autoconfig: bool = False
    zone_nameservers: Json[Annotated[list[DomainName], Field(min_length=1)]] = ("ns1.cloudflare.com", "ns2.cloudflare.com")
    dns_import_ids: Json[list[Annotated[str, _matching(r"[a-z0-9-]+-[a-z0-9._-]+=[0-9a-f]{32}", "<record key>=<32-hex Cloudflare record id>")]]] = ()
    # providers
    proxmox_endpoint: HttpsUrl
    proxmox_api_token: Secret
    proxmox_insecure: bool = False
    proxmox_ssh_user: NonEmpty = "root"
    cloudflare_api_token: Secret
    kubeconfig: Secret
    kube_context: str = ""
    ceres_namespace: DnsLabel = "ceres"
    ceres_secret_name: DnsLabel = "ceres-smtp"
    ceres_deployment: Annotated[str, AfterValidator(_optional(_dns_label))] = ""
    keycloak_url: HttpsUrl
    keycloak_realm: NonEmpty = "ceres"
    keycloak_admin_realm: NonEmpty = "master"
    keycloak_client_id: NonEmpty
    keycloak_client_secret: Secret

    # --- values derived from the keys: one definition each, used by every component --------------

    @property
    def mail_host_fqdn(self) -> str:
        """The mail host, mail.<domain> unless mailHost says otherwise."""
        return mail_host_of(self.domain, self.mail_host)

    @property
    def mailbox_address(self) -> str:
        """The mailbox CERES and Keycloak log in as (no-reply@<domain> unless mailUser says otherwise)."""
        return f"{self.mail_user}@{self.domain}"

    @property
    def mail_from_address(self) -> str:
        return self.mail_from or self.mailbox_address

    @property
    def smtp_client(self) -> SmtpClient:
        """Submission settings of CERES and Keycloak, one definition for both."""
        return SmtpClient(
            host=self.mail_host_fqdn,
            port=self.smtp_port,
            starttls=self.smtp_starttls,
            tls=self.smtp_tls,
            user=self.mailbox_address,
            mail_from=self.mail_from_address,
        )

    @property
    def install_inputs(self) -> InstallInputs:
        """The install scripts' inputs: the mailbox, its aliases, the certificate and MTA-STS."""
        inputs = self.dns_inputs
        # postmaster@ and abuse@ every domain (RFC 2142), and the report mailboxes this host receives
        wanted = [f"{local}@{domain}" for domain in self.mail_domains for local in ("postmaster", "abuse")]
        wanted += [inputs.dmarc.rua, inputs.dmarc.ruf, inputs.tls_rpt_address]
        aliases = sorted({a for a in wanted if a.rsplit("@", 1)[1] in self.mail_domains} - {self.mailbox_address})
        return InstallInputs(
            domain=self.domain,
            mail_host=self.mail_host_fqdn,
            mailbox=self.mailbox_address,
            dkim_selector=self.dkim_selector,
            acme_email=self.acme_contact,
            mail_domains=self.mail_domains,
            aliases=tuple(aliases),
            mta_sts_policy=mta_sts_policy(inputs),
            acme_directory=self.acme_directory,
            acme_ca_bundle=self.acme_ca_bundle,
            tls_mode=self.tls_mode,
            tls_certificate=self.tls_certificate,
        )

    @property
    def mailcow_inputs(self) -> MailcowInputs:
        """The mailcow stack's inputs: the common install inputs plus what only mailcow is told."""
        return MailcowInputs(
            install=self.install_inputs,
            release=self.mailcow_version,
            clamav=self.mailcow_clamav,
            timezone=self.mailcow_timezone,
            ipv6=bool(self.ipv6),
            autodiscover=self.autoconfig,
            mailbox_name=self.mail_from_name,
            mta_sts_mode=self.mta_sts_mode,
            mta_sts_max_age=self.mta_sts_max_age,
        )

    @property
    def dns_inputs(self) -> DnsInputs:
        """The record builder's inputs (shared by MailDns, `mailctl zone` and the tests)."""
        return DnsInputs(
            domain=self.domain,
            mail_host=self.mail_host_fqdn,
            ipv4=self.ipv4,
            ipv6=self.ipv6,
            mx_priority=self.mx_priority,
            ttl=self.dns_ttl,
            spf_extra=tuple(self.spf_extra),
            dkim_selector=self.dkim_selector,
            dmarc=Dmarc(
                rua=self.dmarc_rua or f"dmarc@{self.domain}",
                ruf=self.dmarc_ruf or self.dmarc_rua or f"dmarc@{self.domain}",
                policy=self.dmarc_policy,
                pct=self.dmarc_pct,
                adkim=self.dmarc_adkim,
                aspf=self.dmarc_aspf,
            ),
            tls_rpt_address=self.tls_rpt_address or f"tls-reports@{self.domain}",
            caa_iodef=self.caa_iodef or f"mailto:postmaster@{self.domain}",
            extra_domains=self.mail_domains[1:],
            mta_sts_mode=self.mta_sts_mode,
            mta_sts_max_age=self.mta_sts_max_age,
            caa_issuers=tuple(self.caa_issuers),
            autoconfig=self.autoconfig,
        )

    @property
    def acme_contact(self) -> str:
        return self.acme_email or f"postmaster@{self.domain}"

    @property
    def mail_domains(self) -> tuple[str, ...]:
        """The primary domain first, then the extra ones."""
        return (self.domain, *(entry.split("=", 1)[0] for entry in self.extra_domains))

    @property
    def zone_ids(self) -> dict[str, str]:
        """Cloudflare zone id of every mail domain."""
        return {self.domain: self.cloudflare_zone_id, **dict(entry.split("=", 1) for entry in self.extra_domains)}

    @property
    def import_ids(self) -> dict[str, str]:
        """Record key -> Cloudflare record id, for records adopted rather than created."""
        return dict(entry.split("=", 1) for entry in self.dns_import_ids)

    @property
    def ipv4(self) -> str:
        """The bare public IPv4 address (A record, SSH target, PTR)."""
        return str(ipaddress.ip_interface(self.ipv4_address).ip)

    @property
    def ipv6(self) -> str:
        return str(ipaddress.ip_interface(self.ipv6_address).ip) if self.ipv6_address else ""

    @property
    def vm_size(self) -> VmSize:
        """Sizes from config, each 0 replaced by the mail stack's default."""
        default = STACK_DEFAULT_SIZE[self.mail_stack]
        return VmSize(
            cores=self.vm_cores or default.cores,
            memory_mib=self.vm_memory_mib or default.memory_mib,
            disk_gib=self.vm_disk_gib or default.disk_gib,
        )


# --- the rules that need several keys at once -----------------------------------------------------


def _within(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def _cross_field_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rules over several keys. `v` holds only the keys that passed their own check."""
    problems: list[tuple[str, str]] = []

    def has(*names: str) -> bool:
        return all(name in v for name in names)

    if has("domain", "mail_host") and v["mail_host"] and not _within(v["mail_host"], v["domain"]):
        problems.append(("mailHost", f"{v['mail_host']} is not inside the mail domain {v['domain']}"))
    if has("domain", "mail_from") and v["mail_from"]:
        sender_domain = v["mail_from"].rsplit("@", 1)[1].lower()
        if not _within(sender_domain, v["domain"]):
            problems.append(
                ("mailFrom", f"{v['mail_from']} is outside {v['domain']}: DMARC alignment would fail")
            )
    for family, address_key, gateway_key in (("4", "ipv4_address", "ipv4_gateway"), ("6", "ipv6_address", "ipv6_gateway")):
        if not has(address_key, gateway_key):
            continue
        address, gateway = v[address_key], v[gateway_key]
        if not address:
            if gateway:
                problems.append((to_camel(gateway_key), f"is set but {to_camel(address_key)} is empty"))
            continue
        if not gateway:
            problems.append((to_camel(gateway_key), f"is required when {to_camel(address_key)} is set"))
            continue
        network = ipaddress.ip_interface(address).network
        if ipaddress.ip_address(gateway).version != network.version:
            problems.append((to_camel(gateway_key), f"{gateway} is not an IPv{family} address"))
        elif ipaddress.ip_address(gateway) not in network:
            problems.append((to_camel(gateway_key), f"{gateway} is not inside {network}"))
        elif ipaddress.ip_address(gateway) == ipaddress.ip_interface(address).ip:
            problems.append((to_camel(gateway_key), f"{gateway} is the VM's own address"))
    if has("ipv4_address") and ipaddress.ip_interface(v["ipv4_address"]).version != 4:
        problems.append(("ipv4Address", f"{v['ipv4_address']} is not an IPv4 address"))
    if has("ipv6_address") and v["ipv6_address"] and ipaddress.ip_interface(v["ipv6_address"]).version != 6:
        problems.append(("ipv6Address", f"{v['ipv6_address']} is not an IPv6 address"))

    if has("smtp_port", "smtp_starttls", "smtp_tls"):
        if problem := submission_problem(v["smtp_port"], v["smtp_starttls"], v["smtp_tls"]):
            key = "smtpPort" if v["smtp_starttls"] != v["smtp_tls"] else ("smtpTls" if v["smtp_tls"] else "smtpStarttls")
            problems.append((key, problem))

    if has("mail_stack") and v["mail_stack"] == "mailcow":
        problems += _mailcow_problems(v)
    if has("mail_stack", "vm_cores", "vm_memory_mib", "vm_disk_gib"):
        floor = STACK_MINIMUM_SIZE[v["mail_stack"]]
        for key, value, minimum, unit in (
            ("vmCores", v["vm_cores"], floor.cores, "cores"),
            ("vmMemoryMib", v["vm_memory_mib"], floor.memory_mib, "MiB"),
            ("vmDiskGib", v["vm_disk_gib"], floor.disk_gib, "GiB"),
        ):
            if value and value < minimum:
                problems.append((key, f"{value} {unit} is below the {v['mail_stack']} stack's minimum of {minimum} {unit}"))

    if has("tls_mode", "tls_certificate", "tls_private_key", "domain", "mail_host", "extra_domains"):
        problems += _tls_problems(v)
    if has("spf_extra"):
        problems += [("spfExtra", problem) for problem in spf_problems(tuple(v["spf_extra"]))]
    if has("domain", "extra_domains"):
        extra = [entry.split("=", 1)[0] for entry in v["extra_domains"]]
        for domain in sorted({d for d in extra if extra.count(d) > 1 or d == v["domain"]}):
            problems.append(("extraDomains", f"{domain} is listed twice (or is the primary domain)"))
    return problems


def _mailcow_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What mailcow cannot do that the native stack can."""
    problems = []
    if v.get("acme_ca_bundle"):
        problems.append(("acmeCaBundle", "is not supported by the mailcow stack (acme-mailcow trusts only the public CAs); use tlsMode provided"))
    for name in ("acme_email", "acme_directory"):
        if v.get(name) and not SAFE_VALUE.fullmatch(v[name]):
            problems.append((to_camel(name), f"{v[name]!r} cannot be written to mailcow.conf (letters, digits and _.,:/@+*- only)"))
    if "domain" in v and v.get("mail_host") == v["domain"]:
        problems.append(("mailHost", f"{v['domain']} is the mail domain itself; mailcow needs a host name below it (e.g. mail.{v['domain']})"))
    return problems


def _tls_problems(v: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A provided certificate needs its key and must name the mail host and every mta-sts host."""
    if v["tls_mode"] == "acme":
        return [("tlsCertificate", "is set but tlsMode is acme; set tlsMode to provided")] if v["tls_certificate"] else []
    problems = []
    if v["tls_private_key"] is None:
        problems.append(("tlsPrivateKey", "is required with tlsMode provided: `pulumi config set --secret tlsPrivateKey`"))
    if not v["tls_certificate"]:
        return problems + [("tlsCertificate", "is required with tlsMode provided")]
    leaf = x509.load_pem_x509_certificates(v["tls_certificate"].encode())[0]
    try:
        names = set(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = set()
    domains = [v["domain"], *(entry.split("=", 1)[0] for entry in v["extra_domains"])]
    wanted = [mail_host_of(v["domain"], v["mail_host"]), *(f"mta-sts.{d}" for d in domains)]
    missing = [n for n in wanted if n not in names and f"*.{n.split('.', 1)[1]}" not in names]
    if missing:
        problems.append(("tlsCertificate", f"does not name {', '.join(missing)} (it names {', '.join(sorted(names)) or 'nothing'})"))
    return problems


def _import_problems(settings: "Settings") -> list[tuple[str, str]]:
    """dnsImportIds may only name records this stack declares (else the import would adopt nothing)."""
    inputs = settings.dns_inputs
    keys = {r.key for r in build_records(inputs)}
    keys |= {f"txt-{dkim_record_name(inputs.dkim_selector, d)}" for d in inputs.mail_domains}
    return [
        ("dnsImportIds", f"{key!r} is not a record of this stack (see the record keys in `mailctl plan`)")
        for key in settings.import_ids
        if key not in keys
    ]


# --- reading and checking --------------------------------------------------------------------------


def _is_secret(info: FieldInfo) -> bool:
    return any(isinstance(m, SecretMarker) for m in info.metadata)


def _field_checker(info: FieldInfo) -> TypeAdapter:
    annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    return TypeAdapter(annotation)


# One checker per plain field, built once: a stack is validated many times in the tests and plans.
_FIELD_CHECKERS = {
    name: _field_checker(info) for name, info in Settings.model_fields.items() if not _is_secret(info)
}
# Optional secrets cannot be declared in Pulumi.yaml: the CLI requires a value for every declared key
# without a default, and a secret key with a (plaintext) default fails its "must be encrypted" check.
UNDECLARED_KEYS = frozenset({"tlsPrivateKey"})
SECRET_KEYS = frozenset(to_camel(name) for name, info in Settings.model_fields.items() if _is_secret(info))
CONFIG_KEYS = frozenset(to_camel(name) for name in Settings.model_fields)


def _describe(error: dict) -> str:
    if error["type"] == "missing":
        return "is required: set it with `pulumi config set` (see the README's config reference)"
    if error["type"] == "value_error":
        # our own rules, whose messages already quote the value
        return error["msg"].removeprefix("Value error, ")
    if error["type"] in ("json_invalid", "list_type"):
        # every JSON-typed key holds a list: a single value given where a list belongs
        return f"{error['input']!r} must be a list: a YAML list in the stack file, or JSON such as [\"a\", \"b\"]"
    if error["type"] == "literal_error":
        return f"{error['input']!r} is not allowed: {error['msg'].lower()}"
    return f"{error['input']!r}: {error['msg'].lower()}"


def misplaced_keys(full_keys: Iterable[str]) -> list[tuple[str, str]]:
    """Keys meant for this project that the Pulumi CLI hands to no one, so their defaults would stay in
    force unnoticed: one written without a namespace (`dmarcPolicy`; the CLI ignores it) or under another
    namespace that holds one of this project's key names (`ceres-mial:dnsTtl`)."""
    problems = []
    for full_key in sorted(full_keys):
        namespace, separator, name = full_key.rpartition(":")
        if not separator and name in CONFIG_KEYS:
            problems.append((name, f"is written `{name}` without its namespace; the Pulumi CLI ignores such a key, "
                                   f"so the default would stay: write `{PROJECT}:{name}`"))
        elif separator and namespace != PROJECT and name in CONFIG_KEYS:
            problems.append((full_key, f"is in namespace {namespace!r}, which nothing reads, so {PROJECT}:{name} "
                                       f"would keep its default: write `{PROJECT}:{name}`"))
    return problems


def validate(raw: Mapping[str, Any], misplaced: Iterable[str] = ()) -> Settings:
    """Check raw config values (keyed by config key) and return frozen Settings, or raise SettingsError.

    Each field is checked on its own first, so that the cross-field rules still run on every key that
    is fine by itself and the operator sees all problems at once.
    """
    problems: list[tuple[str, str]] = []
    good: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        key = to_camel(name)
        if key not in raw or raw[key] is None:
            if info.is_required():
                problems.append((key, _describe({"type": "missing"})))
            else:
                good[name] = info.get_default(call_default_factory=True)
            continue
        if _is_secret(info):
            good[name] = raw[key]
            continue
        try:
            good[name] = _FIELD_CHECKERS[name].validate_python(raw[key])
        except ValidationError as error:
            for detail in error.errors():
                where = "".join(f"[{part}]" for part in detail["loc"])
                problems.append((key + where, _describe(detail)))
    unknown = set(raw) - CONFIG_KEYS
    # (an undeclared key is reported below; the loop above only visits declared ones)
    problems += [(key, "is not a key of this project (see Pulumi.yaml)") for key in sorted(unknown)]
    problems += misplaced_keys(misplaced)
    problems += _cross_field_problems(good)
    if problems:
        raise SettingsError(problems)
    # Every value passed its check above; constructing without a second validation also keeps the
    # already-parsed JSON lists from being parsed again.
    settings = Settings.model_construct(**good)
    # Rules over what the settings build (the record set) run once the settings themselves are sound.
    if problems := _import_problems(settings):
        raise SettingsError(problems)
    return settings


def load(config: pulumi.Config | None = None, stack_keys: Iterable[str] = ()) -> Settings:
    """Read every declared key of the current stack and validate it.

    `stack_keys` are the keys the stack file sets (the offline recorder knows them); any that this
    project does not declare is reported, since a typo would otherwise silently fall back to a default.
    """
    config = config or pulumi.Config(PROJECT)
    raw: dict[str, Any] = {key: None for key in stack_keys}
    for name, info in Settings.model_fields.items():
        key = to_camel(name)
        raw[key] = config.get_secret(key) if _is_secret(info) else config.get(key)
    # every key the engine passed, whatever its namespace (the SDK offers no public list of them)
    return validate(raw, misplaced=pulumi_config.CONFIG.get().keys())
