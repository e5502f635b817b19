"""The keys of a stack's configuration: one field of `SettingsSchema` per key of Pulumi.yaml's `config:`
block, named in snake_case with the config key as its camelCase alias, each typed with its own rule.

Rules over several keys are in `rules.py`; what the components are built from, in `derived.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Json
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from components.builders.backup import BackupKeep
from components.builders.mail_stacks import MailcowStack, MailStackName, NativeStack, sizes_by_stack
from components.builders.mailcow import MAILCOW_RELEASE, MAILCOW_RELEASE_COMMITS
from components.settings.values import (
    AdminCidr,
    ClusterCidr,
    BackupRetention,
    CloudflareTtl,
    CloudflareZoneId,
    DkimKeyBits,
    DnsImport,
    DnsLabel,
    DomainName,
    ExtraDomain,
    HttpsUrl,
    KeycloakBaseUrl,
    IpAddress,
    LdapClientCidr,
    LinuxUser,
    LocalPart,
    MailcowRelease,
    NonEmpty,
    OptionalBackupTarget,
    OptionalDnsLabel,
    OptionalDomainName,
    OptionalEmail,
    OptionalHostAddress,
    OptionalIpAddress,
    OptionalLdapDn,
    OptionalLdapUrl,
    OptionalPemCertificates,
    OptionalHostInterface,
    OptionalPublicAddress,
    OptionalReportUrl,
    OptionalSecret,
    OptionalSha512,
    OptionalSshHostKey,
    Port,
    HostInterface,
    PublishedKey,
    Secret,
    SecretMarker,
    SpfMechanism,
    SshPublicKey,
    SystemdCalendar,
    Timezone,
    TunnelNetwork,
)

PROJECT = "ceres-mail"

# Headings of Pulumi.yaml's config block: each group starts at the key named here and runs to the next.
SECTIONS = {
    "domain": "the mail domain",
    "ipv4Address": "network of the mail VM",
    "proxmoxNode": "the VM on Proxmox VE",
    "cloudflareZoneId": "DNS on Cloudflare",
    "proxmoxEndpoint": "providers (credentials)",
    "ldapMode": "one password everywhere (LDAP)",
    "backupTarget": "backups (restic)",
    "webmail": "webmail and brute-force protection (native stack)",
    "gatewayMode": "mail at home behind a VPS (WireGuard gateway)",
}


class SettingsSchema(BaseModel):
    """Every key of a stack, its default and its description, checked on its own. `make docs` writes
    Pulumi.yaml's config block and the README's reference from this class: it is where a key is changed.
    Frozen: components read settings, nothing changes them."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        arbitrary_types_allowed=True,
        # built only with model_construct after the per-field checks: its own validator is never used
        defer_build=True,
    )

    domain: DomainName = Field(
        description="Mail domain the server receives and sends for (MX, SPF, DKIM, DMARC are published here).")
    mail_host: OptionalDomainName = Field(
        "", description=("Fully qualified name of the mail host, below `domain` (never the domain itself, whose A "
                         "record and https:// belong to the website). Empty means mail.<domain>."))
    mail_stack: MailStackName = Field(NativeStack.name, description=(
        "Mail stack installed on the VM, `native` (Debian's Postfix + Dovecot + rspamd) or `mailcow` "
        "(mailcow-dockerized, an all-in-one with webmail and admin UI; "
        f"{MailcowStack.minimum_size.memory_mib // 1024} GiB RAM and {MailcowStack.minimum_size.disk_gib} GiB "
        "disk at least)."))
    mailcow_version: MailcowRelease = Field(MAILCOW_RELEASE, description=(
        "mailcow-dockerized release tag installed with mailStack mailcow, one this project pins to its commit "
        f"({', '.join(sorted(MAILCOW_RELEASE_COMMITS))}; a moved tag is refused); raising it runs mailcow's "
        "update procedure (it never goes back)."))
    mailcow_clamav: bool = Field(
        True, description="Run mailcow's ClamAV virus scanner (about 1 GiB of RAM); false sets SKIP_CLAMD=y.")
    mailcow_timezone: Timezone = Field("UTC", description=(
        "IANA time zone of mailcow's containers (its TZ, used in logs and schedules), e.g. Europe/Berlin."))
    mail_user: LocalPart = Field(
        "no-reply", description="Local part of the mailbox CERES and Keycloak send as (CERES's convention is no-reply).")
    mail_from: OptionalEmail = Field(
        "", description="From address of CERES and Keycloak mail. Empty means <mailUser>@<domain>.")
    mail_from_name: str = Field("CERES", min_length=1, max_length=64, description=(
        "Display name of the From address in Keycloak's mail (password resets, verification)."))
    mail_reply_to: OptionalEmail = Field("", description=(
        "Reply-To of Keycloak's mail, e.g. a support mailbox. Empty means none (replies go to the From mailbox)."))
    smtp_port: Port = Field(
        587, description="Submission port CERES and Keycloak use, 587 with STARTTLS or 465 with implicit TLS.")
    smtp_starttls: bool = Field(
        True, description="Clients upgrade the submission connection with STARTTLS (CERES_SMTP_STARTTLS).")
    smtp_tls: bool = Field(False, description="Clients speak TLS from the first byte, port 465 (CERES_SMTP_TLS).")
    acme_email: OptionalEmail = Field(
        "", description="Contact address for the ACME (Let's Encrypt) account. Empty means postmaster@<domain>.")
    tls_mode: Literal["acme", "provided"] = Field("acme", description=(
        "Where the TLS certificate comes from, acme (http-01 from acmeDirectory) or provided (tlsCertificate, "
        "with the secret tlsPrivateKey)."))
    tls_certificate: OptionalPemCertificates = Field("", description=(
        "With tlsMode provided, the PEM chain (leaf first) for the mail host and every mta-sts.<domain>. Its "
        "key is the secret tlsPrivateKey, set with `pulumi config set --secret tlsPrivateKey` (not declared "
        "here, see the README)."))
    tls_private_key: OptionalSecret = Field(None, description=(
        "With `tlsMode: provided`, the private key of `tlsCertificate` (PEM). Set it with "
        "`pulumi config set --secret tlsPrivateKey < key.pem`."))
    acme_directory: HttpsUrl = Field("https://acme-v02.api.letsencrypt.org/directory", description=(
        "ACME directory the certificate comes from (http-01 through nginx on the mail host)."))
    acme_ca_bundle: OptionalPemCertificates = Field("", description=(
        "PEM of the CA of a private ACME server (e.g. step-ca), trusted by certbot only. Empty trusts the "
        "system store."))

    ipv4_address: HostInterface = Field(description=(
        "Static IPv4 address of the mail VM with its prefix length, e.g. 203.0.113.25/24: public, or with "
        "gatewayMode wireguard its address on the home network."))
    ipv4_gateway: IpAddress = Field(description="IPv4 gateway of the mail VM, inside the ipv4Address network.")
    ipv6_address: OptionalHostInterface = Field("", description=(
        "Static public IPv6 address with prefix length; empty means no IPv6 (no AAAA record unless "
        "gatewayPublicIpv6)."))
    ipv6_gateway: OptionalIpAddress = Field(
        "", description="IPv6 gateway, inside the ipv6Address network; required when ipv6Address is set.")
    dns_resolvers: Json[Annotated[list[IpAddress], Field(min_length=1)]] = Field(
        ("9.9.9.9", "149.112.112.112"),
        description="Resolvers the mail VM uses (cloud-init); rspamd and Postfix look up SPF/DKIM/DNSBL here.")
    admin_cidrs: Json[Annotated[list[AdminCidr], Field(min_length=1)]] = Field(
        description="Networks allowed to reach SSH on the mail VM; never 0.0.0.0/0 or ::/0.")
    admin_user: LinuxUser = Field("ceres", description=(
        "Admin login created on the VM by cloud-init; the install commands log in as this user."))
    admin_ssh_keys: Json[Annotated[list[SshPublicKey], Field(min_length=1)]] = Field(
        description="Operators' OpenSSH public keys for the admin user (the stack adds its own deploy key).")

    proxmox_node: NonEmpty = Field(description="Proxmox VE node the VM runs on.")
    proxmox_datastore: NonEmpty = Field("local-lvm", description="Datastore for the VM's disks.")
    proxmox_file_datastore: NonEmpty = Field("local", description=(
        "Datastore (with `import` and `snippets` content) for the cloud image and cloud-init snippet."))
    proxmox_bridge: NonEmpty = Field("vmbr0", description="Bridge the VM's virtio NIC is attached to.")
    vm_id: int = Field(0, ge=0, le=999_999_999, description="Proxmox VM id; 0 lets Proxmox choose the next free id.")
    vm_cores: int = Field(0, ge=0, le=128, description=(
        f"vCPUs of the VM; 0 means the mail stack's default ({sizes_by_stack('cores')})."))
    vm_memory_mib: int = Field(0, ge=0, description=(
        f"Memory of the VM in MiB; 0 means the mail stack's default ({sizes_by_stack('memory_mib')})."))
    vm_disk_gib: int = Field(0, ge=0, description=(
        f"System disk of the VM in GiB; 0 means the mail stack's default ({sizes_by_stack('disk_gib')})."))
    vm_data_disk_gib: int = Field(20, ge=1, description="Separate disk for mail data (/var/mail, mailboxes) in GiB.")
    image_url: HttpsUrl = Field(
        "https://cloud.debian.org/images/cloud/bookworm/20250210-2019/debian-12-genericcloud-amd64-20250210-2019.qcow2",
        description="Debian 12 (bookworm) generic cloud image the VM boots from, a dated build so it never moves.")
    image_checksum: OptionalSha512 = Field(
        "a58d86525d75fd8e139a2302531ce5d2ab75ef0273cfe78f9d53aada4b23efd4"
        "5f8433b4806fa4570cfe981c8fae26f5e5e855cbd66ba2198862f28125fd2d45",
        description=("SHA-512 of imageUrl as Debian publishes it in the build's SHA512SUMS; Proxmox refuses a "
                     "download that does not match. Empty skips the check."))
    protect: bool = Field(True, description=(
        "Protect the VM, keys and records from deletion (Pulumi protect + Proxmox protection)."))

    cloudflare_zone_id: CloudflareZoneId = Field(description="Cloudflare zone id of `domain`.")
    dns_ttl: CloudflareTtl = Field(
        3600, description="TTL of every record in seconds (1 is Cloudflare's automatic, else 60..86400).")
    dnssec: bool = Field(False, description=(
        "Have Cloudflare sign every mail domain's zone (DNSSEC, one ZoneDnssec per domain, protected with "
        "`protect`). Each zone validates once its registrar holds the DS record the stack exports (dsRecords, "
        "`mailctl zone --ds`). To turn it off, remove the DS at the registrar first (docs/dns.md, DNSSEC)."))
    mx_priority: int = Field(10, ge=0, le=65535, description="MX preference of the mail host.")
    spf_extra: Json[list[SpfMechanism]] = Field(
        (), description="Extra SPF mechanisms placed before -all, e.g. ip4:198.51.100.7.")
    dkim_selector: DnsLabel = Field("ceres", description=(
        "DKIM selector that signs, published at <selector>._domainkey.<domain> (a key of its own, made by the stack)."))
    dkim_published_selectors: Json[list[PublishedKey]] = Field((), description=(
        "More DKIM selectors whose keys exist and are published but do not sign: the next key, published ahead of "
        "a rotation, or the previous one, kept for mail in flight (docs/dns.md, DKIM key rotation). Each is a selector "
        "or {selector, reason}; the reason becomes the record's comment."))
    dkim_max_age_days: int = Field(365, ge=1, le=3650, description=(
        "Days a DKIM key may sign before `mailctl policy --state` advises a rotation (dkim-key-not-too-old); the "
        "key's age is when the state says the stack made it."))
    dkim_key_bits: DkimKeyBits = Field(2048, description=(
        "Size of the stack's RSA DKIM key, 2048 (default), 3072 or 4096 (RFC 8301 rules out less than 1024; "
        "2048 fits every DNS host)."))
    dmarc_policy: Literal["none", "quarantine", "reject"] = Field("none", description=(
        "DMARC policy, none (observe only, where a new domain starts), quarantine or reject."))
    dmarc_pct: int = Field(100, ge=0, le=100, description=(
        "Percentage of failing mail the DMARC policy applies to (pct=), 0..100."))
    dmarc_adkim: Literal["r", "s"] = Field("r", description="DKIM alignment, r (relaxed) or s (strict).")
    dmarc_aspf: Literal["r", "s"] = Field("r", description="SPF alignment, r (relaxed) or s (strict).")
    dmarc_rua: OptionalEmail = Field("", description=(
        "Mailbox for DMARC aggregate reports (rua). Empty means dmarc@<domain>; outside a mail domain it needs "
        "an authorization record there (RFC 7489 7.1)."))
    dmarc_ruf: OptionalEmail = Field(
        "", description="Mailbox for DMARC failure reports (ruf). Empty means the dmarcRua mailbox.")
    extra_domains: Json[list[ExtraDomain]] = Field((), description=(
        "More mail domains on the same host, each as <domain>=<Cloudflare zone id>; each gets MX, SPF, DKIM, "
        "DMARC, MTA-STS, TLS-RPT, SRV and CAA records."))
    mta_sts_mode: Literal["testing", "enforce", "none"] = Field("testing", description=(
        "MTA-STS mode, testing (report only), enforce, or none (to retire the policy)."))
    mta_sts_max_age: int = Field(604800, ge=86400, le=31557600, description=(
        "Seconds senders cache the MTA-STS policy (RFC 8461 max_age, at most 31557600)."))
    dane: bool = Field(False, description=(
        "Pin the mail host's key with DANE: a TLSA 3 1 1 record on ports 25, 465, 587 and 993, published "
        "before the key is served. With tlsMode acme the stack owns the key (tlsKeySelector) and renewals "
        "keep it; with provided, the TLSA pins tlsCertificate's key. Counts only in a DNSSEC-signed zone."))
    tls_key_selector: DnsLabel = Field("tls1", description=(
        "dane with tlsMode acme: the name of the key the stack owns and the host serves (a new name is a new "
        "key: publish its TLSA first with tlsPublishedKeys, `mailctl tls rotate`)."))
    tls_published_keys: Json[list[PublishedKey]] = Field((), description=(
        "dane with tlsMode acme: more keys the stack owns whose TLSA is published but which the host does not "
        "serve: the next key, published ahead of a rollover, or the previous one (docs/dns.md, TLS key "
        "rollover). Each is a name or {selector, reason}; the reason becomes the records' comment."))
    tls_rpt_address: OptionalEmail = Field(
        "", description="Mailbox for SMTP TLS reports (RFC 8460). Empty means tls-reports@<domain>.")
    caa_issuers: Json[list[DomainName]] = Field(("letsencrypt.org",), description=(
        "Certificate authorities allowed to issue for the mail domains (CAA issue); empty publishes no CAA."))
    caa_iodef: OptionalReportUrl = Field("", description=(
        "Where CAs report refused issuance (CAA iodef), a mailto: or https: URL. Empty means "
        "mailto:postmaster@<domain>."))
    autoconfig: bool = Field(
        False, description="Publish autoconfig.<domain> for mail clients' automatic configuration.")
    zone_nameservers: Json[Annotated[list[DomainName], Field(min_length=1)]] = Field(
        ("ns1.cloudflare.com", "ns2.cloudflare.com"),
        description=("The zone's Cloudflare nameservers (from the dashboard); used only for the NS and SOA of "
                     "`mailctl zone`."))
    dns_import_ids: Json[list[DnsImport]] = Field((), description=(
        "Records that already exist in Cloudflare, adopted instead of duplicated, each <record key>=<Cloudflare "
        "record id> (keys as in `mailctl plan`, e.g. mx-example.com)."))

    proxmox_endpoint: HttpsUrl = Field(description="Proxmox VE API URL, https://host:8006/.")
    proxmox_api_token: Secret = Field(description="Proxmox VE API token, USER@REALM!TOKENID=UUID.")
    proxmox_insecure: bool = Field(
        False, description="Skip TLS verification of the Proxmox API (self-signed lab clusters only).")
    proxmox_ssh_user: NonEmpty = Field("root", description=(
        "SSH user on the node, for the snippet upload the Proxmox API cannot do (uses ssh-agent)."))
    proxmox_ssh_address: OptionalHostAddress = Field("", description=(
        "Address (IP or host name) the Proxmox provider dials for that SSH upload to proxmoxNode, the one whose "
        "host key the deploy pins. Empty means the address the Proxmox API reports for the node."))
    cloudflare_api_token: Secret = Field(description="Cloudflare API token with Zone.DNS edit on the zone.")
    kubeconfig: Secret = Field(description="Kubeconfig of the CERES k3s cluster (its credentials make it a secret).")
    kube_context: str = Field("", description="Context in the kubeconfig; empty uses its current context.")
    ceres_namespace: DnsLabel = Field("ceres", description="Namespace of CERES in the cluster.")
    ceres_secret_name: DnsLabel = Field(
        "ceres-smtp", description="Name of the Secret that carries CERES_SMTP_* and CERES_MAIL_* to CERES.")
    ceres_deployment: OptionalDnsLabel = Field("", description=(
        "CERES Deployment to roll when its SMTP settings change (a checksum annotation on its pod template), so "
        "a rotated password takes effect. Empty rolls nothing."))
    keycloak_url: KeycloakBaseUrl = Field(description=(
        "Keycloak's base URL, the part before /realms/ and /admin/: e.g. https://sso.example.com."))
    keycloak_realm: NonEmpty = Field("ceres", description=(
        "Existing realm of CERES whose SMTP settings this stack owns (never created or deleted)."))
    keycloak_admin_realm: NonEmpty = Field("master", description="Realm of the admin client below.")
    keycloak_client_id: NonEmpty = Field(
        description="Confidential client (service account with realm-admin) the provider logs in with.")
    keycloak_client_secret: Secret = Field(description="Secret of keycloakClientId.")

    ldap_mode: Literal["off", "local", "external"] = Field("off", description=(
        "Where CERES users' passwords live, for Keycloak and the mail server alike: off (only the service "
        "mailbox), local (OpenLDAP on the mail VM) or external (an existing directory at ldapUrl)."))
    ldap_url: OptionalLdapUrl = Field("", description=(
        "external: the directory, ldaps://host[:port] or ldap://host[:port] (StartTLS is then required). local: "
        "empty (Keycloak connects to ldaps://<mailHost>)."))
    ldap_base_dn: OptionalLdapDn = Field("", description=(
        "The directory's base DN. Empty means the mail domain's components (dc=example,dc=com)."))
    ldap_users_dn: OptionalLdapDn = Field("", description=(
        "Where the people are (inetOrgPerson with mail and userPassword): a mailbox for each whose mail domain "
        "is one of the stack's. Empty means ou=people,<ldapBaseDn>."))
    ldap_bind_dn: OptionalLdapDn = Field("", description=(
        "The service account Dovecot, Postfix and Keycloak bind as. external: required, with the secret "
        "ldapBindPassword; local: empty means cn=ceres-mail,<ldapBaseDn> (its password made by the stack)."))
    ldap_bind_password: OptionalSecret = Field(None, description=(
        "external: the password of ldapBindDn. Set it with `pulumi config set --secret ldapBindPassword`."))
    ldap_client_cidrs: Json[list[LdapClientCidr]] = Field((), description=(
        "local: the only networks the LDAPS port (636) is open to, the cluster's egress addresses (Keycloak's "
        "federation). Required with ldapMode local; the directory is never open to the internet."))
    keycloak_ldap_edit_mode: Literal["READ_ONLY", "WRITABLE", "UNSYNCED"] = Field("WRITABLE", description=(
        "Edit mode of the realm's LDAP federation. WRITABLE: a password changed in Keycloak (reset mail, account "
        "console) is written to the directory, so it is the mail password too."))

    webmail: bool = Field(True, description=(
        "Roundcube webmail on https://<mailHost>/ (native stack: Debian's Roundcube; mailcow always serves its own "
        "SOGo, and refuses this key, the brute-force keys and clusterCidrs: its own netfilter bans, set in its UI)."))
    brute_force_max_retry: int = Field(5, ge=1, le=100, description=(
        "Failed logins (SMTP AUTH, IMAP, webmail, SSH) from one address within 10 minutes before fail2ban bans it "
        "from every port (native stack)."))
    brute_force_ban_minutes: int = Field(60, ge=1, le=10080, description="How long a fail2ban ban lasts, in minutes.")
    cluster_cidrs: Json[list[ClusterCidr]] = Field((), description=(
        "The CERES cluster's egress networks, where CERES and Keycloak submit mail from: never banned, like "
        "adminCidrs, so a wrong password in CERES cannot lock the platform out of its mail server."))

    backup_target: OptionalBackupTarget = Field("", description=(
        "Where the mail host's backups go (restic): sftp:user@host:/path (the host key pinned in backupHostKey) or "
        "s3:https://endpoint/bucket/prefix (with backupS3AccessKey and backupS3SecretKey). Empty means no backups."))
    backup_host_key: OptionalSshHostKey = Field("", description=(
        "sftp: the backup host's SSH host key, the only one trusted: the line `ssh-keyscan -t ed25519 <host>` prints, or its ssh-ed25519 AAAA... part."))
    backup_s3_access_key: OptionalSecret = Field(None, description=(
        "s3: the access key id. Set it with `pulumi config set --secret backupS3AccessKey`."))
    backup_s3_secret_key: OptionalSecret = Field(None, description=(
        "s3: the secret access key. Set it with `pulumi config set --secret backupS3SecretKey`."))
    backup_schedule: SystemdCalendar = Field("daily", description=(
        "When backups run, a systemd calendar expression (OnCalendar=, e.g. daily or *-*-* 03:30:00)."))
    backup_keep: Json[BackupRetention] = Field(BackupKeep(), description=(
        "Snapshots kept, {daily: 7, weekly: 4, monthly: 6}: the last of each day, week and month; a field left "
        "out keeps its default."))
    gateway_mode: Literal["off", "wireguard"] = Field("off", description=(
        "off: the VM holds the public address. wireguard: the VM stays at home (ipv4Address is its home "
        "address) and a VPS (gatewayHost) holds the public address, forwarding the mail ports to it through "
        "WireGuard; DNS publishes the VPS's addresses (docs/gateway.md)."))
    gateway_host: OptionalHostAddress = Field("", description=(
        "wireguard: the VPS (Debian 12) the stack installs the gateway on over SSH, by name or address."))
    gateway_user: LinuxUser = Field("root", description=(
        "wireguard: the SSH user on the VPS, root or one with passwordless sudo."))
    gateway_host_key: OptionalSshHostKey = Field("", description=(
        "wireguard: the VPS's SSH host key, the only one trusted: the line `ssh-keyscan -t ed25519 <host>` prints, or its ssh-ed25519 AAAA... part."))
    gateway_ssh_private_key: OptionalSecret = Field(None, description=(
        "wireguard: the private key that logs in to the VPS as gatewayUser. Set it with "
        "`pulumi config set --secret gatewaySshPrivateKey < key`."))
    gateway_public_ipv4: OptionalPublicAddress = Field("", description=(
        "wireguard: the VPS's public IPv4 address, on its own interface: the mail host's A record and PTR."))
    gateway_public_ipv6: OptionalPublicAddress = Field("", description=(
        "wireguard: the VPS's public IPv6 address, if any: the mail host's AAAA record and PTR."))
    gateway_wireguard_port: Port = Field(51820, description=(
        "wireguard: the UDP port the VPS listens on for the VM's tunnel."))
    gateway_tunnel_cidr: TunnelNetwork = Field("10.254.25.0/30", description=(
        "wireguard: the tunnel's private /30, the VPS at its first address and the VM at the second; pick one "
        "no network of yours uses."))


def is_secret(info: FieldInfo) -> bool:
    return any(isinstance(m, SecretMarker) for m in info.metadata)


# Optional secrets cannot be declared in Pulumi.yaml: the CLI requires a value for every declared key
# without a default, and a secret key with a (plaintext) default fails its "must be encrypted" check.
UNDECLARED_KEYS = frozenset({"tlsPrivateKey", "ldapBindPassword", "backupS3AccessKey", "backupS3SecretKey",
                             "gatewaySshPrivateKey"})
# Objects, and lists whose items are a string or an object: Pulumi's config types (string, integer, boolean,
# array of one of those) cannot say that, so Pulumi.yaml declares them without a type and the settings check them.
UNTYPED_KEYS = frozenset({"dkimPublishedSelectors", "tlsPublishedKeys", "backupKeep"})
OBJECT_KEYS = frozenset({"backupKeep"})  #: the untyped keys that hold an object, not a list
SECRET_KEYS = frozenset(to_camel(name) for name, info in SettingsSchema.model_fields.items() if is_secret(info))
#: secrets that are files: the CLI reads them from standard input
_SECRET_FILES = {"tlsPrivateKey": "key.pem", "gatewaySshPrivateKey": "key"}


def set_secret_command(key: str) -> str:
    """The command that stores secret `key` encrypted in the stack file (the CLI prompts for a value)."""
    file = _SECRET_FILES.get(key)
    return f"pulumi config set --secret {key}" + (f" < {file}" if file else "")
CONFIG_KEYS = frozenset(to_camel(name) for name in SettingsSchema.model_fields)
