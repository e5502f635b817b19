"""What the components are built from: values derived from the keys, one definition each.

`Settings` is the schema plus these properties; a component gets the inputs it needs from here rather than
copying keys one by one, so a default (mail.<domain>, postmaster@<domain>, the stack's VM size) is
decided once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from components.builders.access import AccessInputs
from components.builders.backup import BackupInputs, mailcow_paths, native_paths, parse_backup_target
from components.builders.ceres_env import SmtpClient
from components.builders.dns_records import DnsInputs, Dmarc, mta_sts_policy, spki_sha256, tlsa_record_keys
from components.builders.gateway import GatewayInputs, smtp_bind_addresses
from components.builders.inputs import BruteForce, CeresInputs, DnsZoneInputs, KeycloakInputs, LdapInputs, LocalDirectory, ExternalDirectory, VmInputs, VmSize
from components.builders.mail_stacks import STACKS, MailcowStack, MailStack, NativeStack, ServerInputs
from components.builders.mailcow import MAILCOW_RELEASE_COMMITS, MailcowInputs
from components.builders.native import AcmeTls, InstallInputs, ProvidedTls, StackKeyAcmeTls
from components.builders.webmail import ROUNDCUBE_DB
from components.settings.schema import SettingsSchema
from components.settings.values import ZoneEntry


def mail_host_of(domain: str, mail_host: str = "") -> str:
    """The mail host: mail.<domain> unless one is named."""
    return mail_host or f"mail.{domain}"


def base_dn_of(domain: str) -> str:
    """The directory's default suffix: the mail domain's labels as dc= components (RFC 2247)."""
    return ",".join(f"dc={label}" for label in domain.split("."))


def directory_names(domain: str, base_dn: str, users_dn: str, bind_dn: str) -> tuple[str, str, str]:
    """(base, people, service account) with the defaults filled in: the domain's dc= parts, ou=people and
    cn=ceres-mail below it (the rules need them before `Settings` exists)."""
    base = base_dn or base_dn_of(domain)
    return base, users_dn or f"ou=people,{base}", bind_dn or f"cn=ceres-mail,{base}"


def mail_domains_of(domain: str, extra_domains: Iterable[ZoneEntry]) -> tuple[str, ...]:
    """The primary domain first, then the extra ones (the rules need it before `Settings` exists)."""
    return (domain, *(entry.domain for entry in extra_domains))


class Settings(SettingsSchema):
    """A stack's validated configuration and what its components are built from."""

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
            tls=self.certificate_choice,
            ldap=self.ldap_inputs,
            webmail=self.serves_webmail,
            brute_force=self.brute_force if self.mail_stack == NativeStack.name else None,
            smtp_bind_addresses=smtp_bind_addresses(self.gateway_inputs),
            served_after=tlsa_record_keys(inputs),
        )

    @property
    def certificate_choice(self) -> AcmeTls | StackKeyAcmeTls | ProvidedTls:
        """Where the certificate comes from, and whose key it certifies."""
        if self.tls_mode == "provided":
            return ProvidedTls(self.tls_certificate)
        return StackKeyAcmeTls() if self.dane else AcmeTls()

    @property
    def owns_tls_key(self) -> bool:
        """dane with ACME: the stack makes the host's key, so a TLSA can pin it before it is served."""
        return isinstance(self.certificate_choice, StackKeyAcmeTls)

    @property
    def tls_keys(self) -> tuple[str, ...]:
        """The keys the stack owns, each with its TLSA: the one the host serves first, then those published
        without being served (a rollover's next or previous key); none unless it owns the served one."""
        if not self.owns_tls_key:
            return ()
        return (self.tls_key_selector, *(entry.selector for entry in self.tls_published_keys))

    @property
    def pins_provided_key(self) -> bool:
        return self.dane and isinstance(self.certificate_choice, ProvidedTls)

    @property
    def gateway_inputs(self) -> GatewayInputs | None:
        """The WireGuard gateway (gatewayMode wireguard): the VPS and the tunnel; None when off."""
        if self.gateway_mode == "off":
            return None
        return GatewayInputs(
            host=self.gateway_host,
            user=self.gateway_user,
            host_key=self.gateway_host_key,
            public_ipv4=self.gateway_public_ipv4,
            public_ipv6=self.gateway_public_ipv6,
            port=self.gateway_wireguard_port,
            tunnel=self.gateway_tunnel_cidr,
            admin_cidrs=tuple(self.admin_cidrs),
            mail_host=self.mail_host_fqdn,
        )

    @property
    def public_ipv4(self) -> str:
        """The address the internet reaches the mail host at (A record, PTR): the gateway's, or the VM's own."""
        return self.gateway_public_ipv4 if self.gateway_mode != "off" else self.ipv4

    @property
    def public_ipv6(self) -> str:
        """Likewise for IPv6 (AAAA, PTR); "" for none."""
        return self.gateway_public_ipv6 if self.gateway_mode != "off" else self.ipv6

    @property
    def serves_webmail(self) -> bool:
        """Roundcube on the host: `webmail` on a native stack (mailcow serves its own SOGo)."""
        return self.webmail and self.mail_stack == NativeStack.name

    @property
    def brute_force(self) -> BruteForce:
        """fail2ban's thresholds, and the networks it never bans: the admins' and the cluster's (CERES and
        Keycloak submit from there; Keycloak's directory federation logs in nowhere fail2ban watches)."""
        never = {*self.admin_cidrs, *self.cluster_cidrs}
        return BruteForce(max_retry=self.brute_force_max_retry, ban_minutes=self.brute_force_ban_minutes,
                          never_banned=tuple(sorted(never)))

    @property
    def ldap_inputs(self) -> LdapInputs | None:
        """The directory (ldapMode local or external) with its defaults filled in; None when off."""
        if self.ldap_mode == "off":
            return None
        base, users, bind = directory_names(self.domain, self.ldap_base_dn, self.ldap_users_dn, self.ldap_bind_dn)
        kind = LocalDirectory if self.ldap_mode == "local" else ExternalDirectory
        return kind(
            url=self.ldap_url or f"ldaps://{self.mail_host_fqdn}",
            base_dn=base,
            users_dn=users,
            bind_dn=bind,
            client_cidrs=tuple(self.ldap_client_cidrs),
            edit_mode=self.keycloak_ldap_edit_mode,
        )

    @property
    def backup_inputs(self) -> BackupInputs | None:
        """Where and when the mail host backs up (backupTarget); None without backups."""
        if not self.backup_target:
            return None
        ldap = self.ldap_inputs
        local = isinstance(ldap, LocalDirectory)
        mailcow = self.mail_stack == MailcowStack.name
        return BackupInputs(
            target=parse_backup_target(self.backup_target),
            host_key=self.backup_host_key,
            schedule=self.backup_schedule,
            keep=self.backup_keep,
            mail_host=self.mail_host_fqdn,
            mail_stack=self.mail_stack,
            directory_base_dn=ldap.base_dn if local else "",
            directory_users_dn=ldap.users_dn if local else "",
            mailcow_dir=self.mailcow_inputs.directory if mailcow else "",
            webmail_db=ROUNDCUBE_DB if self.serves_webmail else "",
            paths=mailcow_paths(self.mailcow_inputs.directory) if mailcow else native_paths(local),
        )

    @property
    def mailcow_inputs(self) -> MailcowInputs:
        """The mailcow stack's inputs: the common install inputs plus what only mailcow is told."""
        return MailcowInputs(
            install=self.install_inputs,
            release=self.mailcow_version,
            commit=MAILCOW_RELEASE_COMMITS[self.mailcow_version],
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
            ipv4=self.public_ipv4,
            ipv6=self.public_ipv6,
            mx_priority=self.mx_priority,
            ttl=self.dns_ttl,
            spf_extra=tuple(self.spf_extra),
            dkim_selector=self.dkim_selector,
            dkim_published=tuple(entry.selector for entry in self.dkim_published_selectors),
            dkim_reasons=tuple((entry.selector, entry.reason) for entry in self.dkim_published_selectors if entry.reason),
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
            tlsa_spki_sha256=(spki_sha256(self.tls_certificate),) if self.pins_provided_key else (),
            tlsa_stack_keys=self.tls_keys,
            tlsa_reasons=tuple((entry.selector, entry.reason) for entry in self.tls_published_keys if entry.reason),
        )

    @property
    def acme_contact(self) -> str:
        return self.acme_email or f"postmaster@{self.domain}"

    @property
    def mail_domains(self) -> tuple[str, ...]:
        """The primary domain first, then the extra ones."""
        return mail_domains_of(self.domain, self.extra_domains)

    @property
    def zone_ids(self) -> dict[str, str]:
        """Cloudflare zone id of every mail domain."""
        return {self.domain: self.cloudflare_zone_id, **dict(self.extra_domains)}

    @property
    def import_ids(self) -> dict[str, str]:
        """Record key -> Cloudflare record id, for records adopted rather than created."""
        return dict(self.dns_import_ids)

    @property
    def ipv4(self) -> str:
        """The VM's bare IPv4 address (the SSH target; without a gateway also its A record and PTR)."""
        return str(ipaddress.ip_interface(self.ipv4_address).ip)

    @property
    def ipv6(self) -> str:
        return str(ipaddress.ip_interface(self.ipv6_address).ip) if self.ipv6_address else ""

    @property
    def mail_stack_choice(self) -> MailStack:
        """The mail stack `mailStack` names, with its inputs."""
        if self.mail_stack == MailcowStack.name:
            return MailcowStack(self.mailcow_inputs)
        return NativeStack(self.install_inputs)

    @property
    def vm_size(self) -> VmSize:
        """Sizes from config, each 0 replaced by the mail stack's default."""
        default = STACKS[self.mail_stack].default_size
        return VmSize(
            cores=self.vm_cores or default.cores,
            memory_mib=self.vm_memory_mib or default.memory_mib,
            disk_gib=self.vm_disk_gib or default.disk_gib,
        )

    @property
    def vm_inputs(self) -> VmInputs:
        """The VM's inputs but its keys."""
        return VmInputs(
            fqdn=self.mail_host_fqdn,
            node=self.proxmox_node,
            datastore=self.proxmox_datastore,
            file_datastore=self.proxmox_file_datastore,
            bridge=self.proxmox_bridge,
            vm_id=self.vm_id,
            size=self.vm_size,
            data_disk_gib=self.vm_data_disk_gib,
            image_url=self.image_url,
            image_checksum=self.image_checksum,
            ipv4_address=self.ipv4_address,
            ipv4_gateway=self.ipv4_gateway,
            ipv6_address=self.ipv6_address,
            ipv6_gateway=self.ipv6_gateway,
            dns_resolvers=tuple(self.dns_resolvers),
            admin_user=self.admin_user,
            admin_ssh_keys=tuple(self.admin_ssh_keys),
            admin_cidrs=tuple(self.admin_cidrs),
            protect=self.protect,
            directory_cidrs=tuple(self.ldap_client_cidrs) if isinstance(self.ldap_inputs, LocalDirectory) else (),
        )

    @property
    def dns_zone_inputs(self) -> DnsZoneInputs:
        """The records and the Cloudflare zones they go to, with the records adopted rather than created, and
        whether Cloudflare signs the zones."""
        return DnsZoneInputs(records=self.dns_inputs, zone_ids=self.zone_ids, import_ids=self.import_ids,
                             protect=self.protect, dnssec=self.dnssec)

    @property
    def server_inputs(self) -> ServerInputs:
        """The mail stack to install, as the admin user cloud-init creates."""
        access = AccessInputs(self.mail_host_fqdn, self.admin_user, tuple(self.admin_ssh_keys))
        features = (self.gateway_inputs, self.backup_inputs)
        return ServerInputs(mail_stack=self.mail_stack_choice, access=access, protect=self.protect,
                            features=tuple(feature for feature in features if feature is not None))

    @property
    def ceres_inputs(self) -> CeresInputs:
        return CeresInputs(namespace=self.ceres_namespace, secret_name=self.ceres_secret_name, smtp=self.smtp_client,
                           rollout_deployment=self.ceres_deployment)

    @property
    def keycloak_inputs(self) -> KeycloakInputs:
        return KeycloakInputs(realm=self.keycloak_realm, smtp=self.smtp_client, from_display_name=self.mail_from_name,
                              reply_to=self.mail_reply_to)
