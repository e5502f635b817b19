"""MailPlatform: the whole graph of one environment, wired from validated settings.

    settings ─┬─► keys & passwords (tls, random)
              ├─► MailGateway (gatewayMode wireguard: the VPS and both tunnel keys) ─┐
              ├─► MailVm ──► MailServer (its tunnel stage waits for the VPS's) ◄────┘
              │                  ├─► CeresSmtp
              │                  ├─► KeycloakSmtp
              │                  ├─► KeycloakDirectory (ldapMode local/external: the realm's federation)
              │                  └ ─ backup stage (backupTarget: last, and nothing waits for it)
              └─► MailDns (IP + DKIM key only: in parallel with the VM; the gateway's addresses with one)

Edges are data edges: the VM's address flows into the SSH connection, the mailbox password flows out of
MailServer into CERES and Keycloak only once the install ran. Nothing here decides anything a pure
builder or the settings could: each part gets the plain inputs the settings build for it
(`settings.vm_inputs`, `dns_zone_inputs`, `server_inputs` with the chosen mail stack, `ceres_inputs`,
`keycloak_inputs`) and the values only known here as Outputs (keys, passwords, the VM's address).
"""

from __future__ import annotations

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from components.builders.gateway import VPS_STAGE
from components.builders.inputs import LocalDirectory
from components.ceres import CeresSmtp, CeresSmtpArgs
from components.dns import MailDns, MailDnsArgs
from components.gateway import MailGateway, MailGatewayArgs
from components.keycloak import KeycloakDirectory, KeycloakDirectoryArgs, KeycloakSmtp, KeycloakSmtpArgs
from components.providers import create_providers
from components.server import MailServer, MailServerArgs
from components.settings import Settings
from components.vm import MailVm, MailVmArgs


class MailPlatform(pulumi.ComponentResource):
    """The external mail server of CERES and everything that points at it."""

    mail_host: pulumi.Output[str]
    dkim_txt: pulumi.Output[str]
    dkim_public_key_pem: pulumi.Output[str]  #: the signing selector's key
    dkim_public_keys: pulumi.Output[dict[str, str]]  #: selector -> key, every published selector
    mta_sts_policy: pulumi.Output[str]
    ptr: pulumi.Output[dict[str, str]]
    ceres_env: pulumi.Output[dict[str, str]]  #: every CERES_* value but the password
    smtp_password: pulumi.Output[str]
    backup_password: pulumi.Output[str] | None  #: backupTarget: the restic repository's password
    backup_ssh_public_key: pulumi.Output[str] | None  #: sftp: what the backup host authorizes

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:index:Platform", name, None, opts)
        providers = create_providers(name, settings, former_parent=self)
        keep = pulumi.ResourceOptions(parent=self, protect=settings.protect)

        # Keys and passwords, owned by the stack and encrypted in its state
        dkim_keys = dkim_keys_by_selector(name, settings, keep)
        dkim_key = dkim_keys[settings.dkim_selector]
        dkim_public_pems = {selector: key.public_key_pem for selector, key in dkim_keys.items()}
        host_key = tls.PrivateKey(f"{name}-ssh-host-key", algorithm="ED25519", opts=keep)
        deploy_key = tls.PrivateKey(f"{name}-deploy-key", algorithm="ED25519", opts=keep)
        mailbox_password = random.RandomPassword(
            f"{name}-mailbox-password", length=32, special=False, opts=keep
        )
        ldap = settings.ldap_inputs
        ldap_admin_password, ldap_bind_password = directory_passwords(name, settings, keep)
        backup_password, backup_ssh_key = backup_credentials(name, settings, keep)

        # The VM
        vm = MailVm(
            f"{name}-vm",
            MailVmArgs(
                vm=settings.vm_inputs,
                deploy_public_key=deploy_key.public_key_openssh,
                host_key_private=host_key.private_key_openssh,
                host_key_public=host_key.public_key_openssh,
            ),
            opts=pulumi.ResourceOptions(parent=self, providers=[providers.proxmox]),
        )

        # DNS, in parallel with the VM
        dns = MailDns(
            f"{name}-dns",
            MailDnsArgs(zones=settings.dns_zone_inputs, dkim_public_key_pems=dkim_public_pems),
            opts=pulumi.ResourceOptions(parent=self, providers=[providers.cloudflare]),
        )

        # gatewayMode wireguard: the VPS that holds the public address, in parallel with the VM
        gateway = MailGateway(
            f"{name}-gateway",
            MailGatewayArgs(gateway=settings.gateway_inputs, ssh_private_key=settings.gateway_ssh_private_key,
                            protect=settings.protect),
            opts=pulumi.ResourceOptions(parent=self),
        ) if settings.gateway_inputs else None

        # The mail stack on the VM
        server = MailServer(
            f"{name}-server",
            MailServerArgs(
                server=settings.server_inputs,
                vm=vm.vm,
                address_records=dns.address_records(),
                ssh_host=vm.ssh_host,
                ssh_private_key=deploy_key.private_key_openssh,
                ssh_public_key=deploy_key.public_key_openssh,
                host_public_key=host_key.public_key_openssh,
                mailbox_password=mailbox_password.result,
                dkim_private_key=dkim_key.private_key_pem,
                tls_private_key=settings.tls_private_key,
                ldap_admin_password=ldap_admin_password,
                ldap_bind_password=ldap_bind_password,
                backup_password=backup_password,
                backup_ssh_private_key=backup_ssh_key.private_key_openssh if backup_ssh_key else None,
                backup_s3_access_key=settings.backup_s3_access_key,
                backup_s3_secret_key=settings.backup_s3_secret_key,
                gateway_private_key=gateway.vm_private_key if gateway else None,
                gateway_peer_key=gateway.vps_public_key if gateway else None,
                waits_on={VPS_STAGE: gateway.installed} if gateway else {},
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

        # CERES and Keycloak, switched to the mailbox once it exists
        ceres = CeresSmtp(
            f"{name}-ceres",
            CeresSmtpArgs(ceres=settings.ceres_inputs, smtp_password=server.smtp_password),
            opts=pulumi.ResourceOptions(parent=self, providers=[providers.kubernetes]),
        )
        realm = KeycloakSmtp(
            f"{name}-keycloak",
            KeycloakSmtpArgs(keycloak=settings.keycloak_inputs, smtp_password=server.smtp_password,
                             protect=settings.protect),
            opts=pulumi.ResourceOptions(parent=self, providers=[providers.keycloak]),
        )
        if ldap is not None:
            # a local directory exists once the install ran; an external one is there already
            KeycloakDirectory(
                f"{name}-keycloak-directory",
                KeycloakDirectoryArgs(realm_id=realm.realm_id, ldap=ldap, bind_password=ldap_bind_password,
                                      protect=settings.protect, after=(server.install,) if isinstance(ldap, LocalDirectory) else ()),
                opts=pulumi.ResourceOptions(parent=self, providers=[providers.keycloak]),
            )

        self.mail_host = pulumi.Output.from_input(settings.mail_host_fqdn)
        self.dkim_txt = dns.dkim_txt
        # the public half, for `mailctl zone` and `mailctl verify` (the private key never leaves the state)
        self.dkim_public_key_pem = dkim_key.public_key_pem
        self.dkim_public_keys = pulumi.Output.all(**dkim_public_pems)
        self.mta_sts_policy = dns.mta_sts_policy
        # PTR is set at the IP provider, not here: export what it must be so the operator can set it
        self.ptr = pulumi.Output.from_input(
            {address: settings.mail_host_fqdn for address in (settings.public_ipv4, settings.public_ipv6) if address}
        )
        self.ceres_env = ceres.ceres_env
        self.smtp_password = server.smtp_password
        # the repository's password (a secret: shown only with --show-secrets) and the key the backup host
        # authorizes (public); None without backups
        self.backup_password = pulumi.Output.secret(backup_password) if backup_password else None
        self.backup_ssh_public_key = backup_ssh_key.public_key_openssh if backup_ssh_key else None
        self.register_outputs({"mail_host": self.mail_host, "ptr": self.ptr, "ceres_env": self.ceres_env})


def dkim_keys_by_selector(name: str, settings: Settings, keep: pulumi.ResourceOptions) -> dict[str, tls.PrivateKey]:
    """One RSA key per DKIM selector, the signing one and every published one, so a rotation only ever
    adds or removes a selector's key and never changes another's.

    A key's size is `dkimKeyBits` when it is made; a changed size applies to selectors made after
    (ignore_changes), never replacing a key that is published. The signing selector's key is also known by
    the name the stack's single key had before keys were per selector, so an existing stack keeps its key."""
    return {
        selector: tls.PrivateKey(
            f"{name}-dkim-key-{selector}",
            algorithm="RSA",
            rsa_bits=settings.dkim_key_bits,
            opts=pulumi.ResourceOptions.merge(keep, pulumi.ResourceOptions(
                ignore_changes=["rsaBits"],
                aliases=[pulumi.Alias(name=f"{name}-dkim-key")] if selector == settings.dkim_selector else None,
            )),
        )
        for selector in settings.dns_inputs.dkim_selectors
    }


def directory_passwords(name: str, settings: Settings, keep: pulumi.ResourceOptions
                        ) -> tuple[pulumi.Output[str] | None, pulumi.Input[str] | None]:
    """(slapd's root DN password, the service account's password). ldapMode local: both made by the stack
    and kept in its encrypted state; external: the operator's ldapBindPassword; off: neither."""
    if isinstance(settings.ldap_inputs, LocalDirectory):
        admin, bind = (random.RandomPassword(f"{name}-ldap-{who}-password", length=32, special=False, opts=keep)
                       for who in ("admin", "bind"))
        return admin.result, bind.result
    return None, settings.ldap_bind_password


def backup_credentials(name: str, settings: Settings, keep: pulumi.ResourceOptions
                       ) -> tuple[pulumi.Output[str] | None, tls.PrivateKey | None]:
    """(the restic repository's password, the SSH key the mail host logs in to an sftp backup host with).
    Both made by the stack and kept in its encrypted state; the password is also what opens the backups when
    the stack itself is lost, so the README asks the operator to keep a copy outside it."""
    backup = settings.backup_inputs
    if backup is None:
        return None, None
    password = random.RandomPassword(f"{name}-backup-password", length=40, special=False, opts=keep)
    ssh_key = tls.PrivateKey(f"{name}-backup-ssh-key", algorithm="ED25519", opts=keep) \
        if backup.target.kind == "sftp" else None
    return password.result, ssh_key
