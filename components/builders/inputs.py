"""The plain inputs of the components, as the settings build them (components/settings/derived.py).

A component's args are one of these plus the values only known as Outputs (keys, passwords, the VM's
address); MailPlatform copies no key into them one by one. No Pulumi import: the settings and `mailctl`
build them without loading a provider SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from components.builders.ceres_env import SmtpClient
from components.builders.dns_records import DnsInputs


@dataclass(frozen=True)
class VmSize:
    """Cores, memory and system disk of the mail VM."""

    cores: int
    memory_mib: int
    disk_gib: int


@dataclass(frozen=True)
class VmInputs:
    """What the VM is built from, but its keys."""

    fqdn: str  #: mail host name; its first label is the VM name and hostname
    node: str  #: Proxmox node that runs the VM
    datastore: str  #: datastore for the system and data disks
    file_datastore: str  #: datastore for the cloud image and the cloud-init snippets
    bridge: str  #: bridge of the virtio NIC
    vm_id: int  #: fixed VM id, 0 for the next free one
    size: VmSize  #: cores, memory, system disk (mail stack defaults applied)
    data_disk_gib: int  #: separate mail data disk
    image_url: str  #: Debian cloud image, a dated build
    image_checksum: str  #: SHA-512 of the image, "" to skip
    ipv4_address: str  #: static IPv4 with prefix
    ipv4_gateway: str
    ipv6_address: str  #: "" for none
    ipv6_gateway: str
    dns_resolvers: tuple[str, ...]
    admin_user: str
    admin_ssh_keys: tuple[str, ...]
    admin_cidrs: tuple[str, ...]  #: the only networks SSH is open to
    protect: bool  #: Pulumi protect + Proxmox protection flag
    directory_cidrs: tuple[str, ...] = ()  #: ldapMode local: the only networks the LDAPS port is open to


@dataclass(frozen=True)
class DnsZoneInputs:
    """The records of every mail domain and where they go in Cloudflare."""

    records: DnsInputs  #: plain inputs of the pure record builder
    zone_ids: Mapping[str, str]  #: Cloudflare zone id of each mail domain
    import_ids: Mapping[str, str]  #: record key -> existing Cloudflare id
    protect: bool  #: keep records (and the zones' DNSSEC) from being deleted by accident
    dnssec: bool = False  #: Cloudflare signs every mail domain's zone (one ZoneDnssec each)


@dataclass(frozen=True)
class CeresInputs:
    """Where CERES reads its SMTP settings, and the settings."""

    namespace: str  #: CERES's namespace
    secret_name: str  #: name of the Secret CERES mounts
    smtp: SmtpClient  #: where and how CERES submits mail, as whom
    rollout_deployment: str = ""  #: CERES Deployment to roll on a change, "" for none


@dataclass(frozen=True)
class LdapInputs:
    """The directory of CERES users' passwords (`ldapMode` local or external): Keycloak federates it, and
    Dovecot (and Postfix through Dovecot's SASL) checks mail logins against it. One of its two kinds,
    LocalDirectory or ExternalDirectory, is what the settings build: the code matches the kind, it never
    compares a mode's name."""

    url: str  #: where Keycloak (and, external, the mail host) connects: ldaps://, or ldap:// with StartTLS
    base_dn: str  #: the directory's suffix
    users_dn: str  #: the people: `mail` and `userPassword`; a mailbox for each whose mail domain is ours
    bind_dn: str  #: the service account Dovecot, Postfix and Keycloak's federation bind as
    client_cidrs: tuple[str, ...] = ()  #: local: the only networks the LDAPS port is open to
    edit_mode: str = "WRITABLE"  #: Keycloak's federation: READ_ONLY, WRITABLE or UNSYNCED

    @property
    def start_tls(self) -> bool:
        """ldap:// is only ever used with StartTLS required (the settings refuse anything else)."""
        return self.url.startswith("ldap://")

    @property
    def admin_dn(self) -> str:
        """local: slapd's root DN, the one account that may change the directory's configuration."""
        return f"cn=admin,{self.base_dn}"


@dataclass(frozen=True)
class LocalDirectory(LdapInputs):
    """`ldapMode: local`: slapd on the mail host, set up by the `ldap` stage; Keycloak reaches it over LDAPS
    from `client_cidrs`, the mail host over its own socket."""


@dataclass(frozen=True)
class ExternalDirectory(LdapInputs):
    """`ldapMode: external`: the operator's directory, at `url`, for Keycloak and the mail host alike."""


@dataclass(frozen=True)
class BruteForce:
    """fail2ban on the native stack: its thresholds, and the networks it never bans."""

    max_retry: int = 5  #: failed logins within the window before a ban
    ban_minutes: int = 60
    never_banned: tuple[str, ...] = ()  #: networks in CIDR form: the admins', the cluster's


@dataclass(frozen=True)
class KeycloakInputs:
    """The realm and the SMTP server it sends through."""

    realm: str  #: the existing CERES realm (its name is also its import id)
    smtp: SmtpClient  #: the same submission settings CERES gets
    from_display_name: str
    reply_to: str  #: "" for none
