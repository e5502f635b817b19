"""The keys of a stack's configuration: one field of `SettingsSchema` per key of Pulumi.yaml's `config:`
block, named in snake_case with the config key as its camelCase alias, each typed with its own rule.

Rules over several keys are in `rules.py`; what the components are built from, in `derived.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Json
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from components.builders.mailcow import MAILCOW_RELEASE
from components.settings.values import (
    AdminCidr,
    DnsLabel,
    DomainName,
    HttpsUrl,
    IpAddress,
    NonEmpty,
    OptionalDomainName,
    OptionalEmail,
    OptionalIpAddress,
    OptionalPublicInterface,
    OptionalSecret,
    Port,
    PublicInterface,
    Secret,
    SecretMarker,
    SshPublicKey,
    cloudflare_ttl,
    dkim_key_size,
    dns_label,
    domain_and_zone,
    matching,
    optional,
    pem_certificates,
    timezone,
)

PROJECT = "ceres-mail"


class SettingsSchema(BaseModel):
    """Every key of a stack, checked on its own. Frozen: components read settings, nothing changes them."""

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
    mailcow_version: Annotated[str, matching(r"\d{4}-\d{2}[a-z]?", "a mailcow-dockerized release tag (e.g. 2026-07a)")] = MAILCOW_RELEASE
    mailcow_clamav: bool = True
    mailcow_timezone: Annotated[str, AfterValidator(timezone)] = "UTC"
    mail_user: Annotated[str, matching(r"[a-z0-9][a-z0-9._-]{0,63}", "a mailbox local part (a-z 0-9 . _ -)")] = "no-reply"
    mail_from: OptionalEmail = ""
    mail_from_name: Annotated[str, Field(min_length=1, max_length=64)] = "CERES"
    mail_reply_to: OptionalEmail = ""
    smtp_port: Port = 587
    smtp_starttls: bool = True
    smtp_tls: bool = False
    acme_email: OptionalEmail = ""
    tls_mode: Literal["acme", "provided"] = "acme"
    tls_certificate: Annotated[str, AfterValidator(optional(pem_certificates))] = ""
    tls_private_key: OptionalSecret = None
    acme_directory: HttpsUrl = "https://acme-v02.api.letsencrypt.org/directory"
    acme_ca_bundle: Annotated[str, AfterValidator(optional(pem_certificates))] = ""
    # network
    ipv4_address: PublicInterface
    ipv4_gateway: IpAddress
    ipv6_address: OptionalPublicInterface = ""
    ipv6_gateway: OptionalIpAddress = ""
    dns_resolvers: Json[Annotated[list[IpAddress], Field(min_length=1)]] = ("9.9.9.9", "149.112.112.112")
    admin_cidrs: Json[Annotated[list[AdminCidr], Field(min_length=1)]]
    admin_user: Annotated[str, matching(r"[a-z_][a-z0-9_-]{0,31}", "a Linux user name")] = "ceres"
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
    image_checksum: Annotated[str, matching(r"([0-9a-f]{128})?", "a SHA-512 in hex (128 characters)")] = (
        "a58d86525d75fd8e139a2302531ce5d2ab75ef0273cfe78f9d53aada4b23efd4"
        "5f8433b4806fa4570cfe981c8fae26f5e5e855cbd66ba2198862f28125fd2d45"
    )
    protect: bool = True
    # DNS
    cloudflare_zone_id: Annotated[str, matching(r"[0-9a-f]{32}", "a Cloudflare zone id (32 hex digits)")]
    dns_ttl: Annotated[int, AfterValidator(cloudflare_ttl)] = 3600
    mx_priority: Annotated[int, Field(ge=0, le=65535)] = 10
    spf_extra: Json[list[Annotated[str, matching(r"[+?~-]?(ip4:|ip6:|a|mx|include:|exists:)\S*", "an SPF mechanism (ip4:, ip6:, a, mx, include:, exists:)")]]] = ()
    dkim_selector: DnsLabel = "ceres"
    dkim_key_bits: Annotated[int, AfterValidator(dkim_key_size)] = 2048
    dmarc_policy: Literal["none", "quarantine", "reject"] = "none"
    dmarc_pct: Annotated[int, Field(ge=0, le=100)] = 100
    dmarc_adkim: Literal["r", "s"] = "r"
    dmarc_aspf: Literal["r", "s"] = "r"
    dmarc_rua: OptionalEmail = ""
    dmarc_ruf: OptionalEmail = ""
    extra_domains: Json[list[Annotated[str, AfterValidator(domain_and_zone)]]] = ()
    mta_sts_mode: Literal["testing", "enforce", "none"] = "testing"
    mta_sts_max_age: Annotated[int, Field(ge=86400, le=31557600)] = 604800
    tls_rpt_address: OptionalEmail = ""
    caa_issuers: Json[list[DomainName]] = ("letsencrypt.org",)
    caa_iodef: Annotated[str, matching(r"((mailto:\S+@\S+)|(https://\S+))?", "a mailto: or https: URL")] = ""
    autoconfig: bool = False
    zone_nameservers: Json[Annotated[list[DomainName], Field(min_length=1)]] = ("ns1.cloudflare.com", "ns2.cloudflare.com")
    dns_import_ids: Json[list[Annotated[str, matching(r"[a-z0-9-]+-[a-z0-9._-]+=[0-9a-f]{32}", "<record key>=<32-hex Cloudflare record id>")]]] = ()
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
    ceres_deployment: Annotated[str, AfterValidator(optional(dns_label))] = ""
    keycloak_url: HttpsUrl
    keycloak_realm: NonEmpty = "ceres"
    keycloak_admin_realm: NonEmpty = "master"
    keycloak_client_id: NonEmpty
    keycloak_client_secret: Secret


def is_secret(info: FieldInfo) -> bool:
    return any(isinstance(m, SecretMarker) for m in info.metadata)


# Optional secrets cannot be declared in Pulumi.yaml: the CLI requires a value for every declared key
# without a default, and a secret key with a (plaintext) default fails its "must be encrypted" check.
UNDECLARED_KEYS = frozenset({"tlsPrivateKey"})
SECRET_KEYS = frozenset(to_camel(name) for name, info in SettingsSchema.model_fields.items() if is_secret(info))
CONFIG_KEYS = frozenset(to_camel(name) for name in SettingsSchema.model_fields)
