"""MailPlatform: the whole graph of one environment, wired from validated settings.

    settings ─┬─► keys & passwords (tls, random)
              ├─► features (components/features): their own resources, secrets and edges ──┐
              ├─► MailVm ──► MailServer (the stages of the mail stack and the features) ◄───┘
              │                  ├─► CeresSmtp
              │                  ├─► KeycloakSmtp
              │                  └─► what features add after the server (the directory's federation)
              └─► MailDns (IP + DKIM key only: in parallel with the VM; the gateway's addresses with one)

Edges are data edges: the VM's address flows into the SSH connection, the mailbox password flows out of
MailServer into CERES and Keycloak only once the install ran. Nothing here decides anything a pure
builder or the settings could: each part gets the plain inputs the settings build for it
(`settings.vm_inputs`, `dns_zone_inputs`, `server_inputs` with the chosen mail stack, `ceres_inputs`,
`keycloak_inputs`) and the values only known here as Outputs (keys, passwords, the VM's address). The
optional features (a provided certificate, the directory, backups, the gateway) plug in through one
interface, `Feature`: the platform loops over the ones the settings chose and names none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from components.ceres import CeresSmtp, CeresSmtpArgs
from components.dns import MailDns, MailDnsArgs
from components.features import Installed, Site, chosen_features
from components.keycloak import KeycloakSmtp, KeycloakSmtpArgs
from components.providers import Providers, create_providers
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
    ds_records: pulumi.Output[dict[str, dict]] | None  #: each mail domain's DS for its registrar, with `dnssec`
    ptr: pulumi.Output[dict[str, str]]
    ceres_env: pulumi.Output[dict[str, str]]  #: every CERES_* value but the password
    smtp_password: pulumi.Output[str]
    feature_outputs: Mapping[str, Any]  #: the stack outputs the chosen features add (the gateway, backups)

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:index:Platform", name, None, opts)
        providers = create_providers(name, settings, former_parent=self)
        site = Site(name, self, settings.protect)
        keys = StackKeys.make(name, settings, site.keep)
        # The features the stack chose, each with its own resources (the gateway's VPS in parallel with the VM)
        features = chosen_features(settings)
        contributions = [feature.contribute(site) for feature in features]

        vm = MailVm(
            f"{name}-vm",
            MailVmArgs(vm=settings.vm_inputs, deploy_public_key=keys.deploy.public_key_openssh,
                       host_key_private=keys.host.private_key_openssh, host_key_public=keys.host.public_key_openssh),
            opts=pulumi.ResourceOptions(parent=self, providers=[providers.proxmox]),
        )
        # DNS, in parallel with the VM
        dns = MailDns(
            f"{name}-dns",
            MailDnsArgs(zones=settings.dns_zone_inputs, dkim_public_key_pems=keys.dkim_public_pems,
                        tls_public_key_pems=merged(*(c.tls_public_keys for c in contributions), what="TLS key")),
            opts=pulumi.ResourceOptions(parent=self, providers=[providers.cloudflare]),
        )
        # The mail stack on the VM, with what every feature brings it
        server = MailServer(
            f"{name}-server",
            MailServerArgs(
                server=settings.server_inputs, vm=vm.vm, address_records=dns.address_records(), ssh_host=vm.ssh_host,
                ssh_private_key=keys.deploy.private_key_openssh, host_public_key=keys.host.public_key_openssh,
                mailbox_password=keys.mailbox_password,
                secrets=merged(keys.stage_secrets, *(c.secrets for c in contributions), what="secret"),
                waits_on=merged(dns.waitables(), *(c.waits_on for c in contributions), what="resource waited on"),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        ceres, realm = self._switch_to_the_mailbox(name, settings, server, providers)
        for feature, own in zip(features, contributions, strict=True):
            feature.follow(site, Installed(server=server, realm=realm, providers=providers), own)

        self.mail_host = pulumi.Output.from_input(settings.mail_host_fqdn)
        self.dkim_txt = dns.dkim_txt
        # the public half, for `mailctl zone` and `mailctl verify` (the private key never leaves the state)
        self.dkim_public_key_pem = keys.dkim_signing.public_key_pem
        self.dkim_public_keys = pulumi.Output.all(**keys.dkim_public_pems)
        self.mta_sts_policy = dns.mta_sts_policy
        self.ds_records = dns.ds_records
        # PTR is set at the IP provider, not here: export what it must be so the operator can set it
        self.ptr = pulumi.Output.from_input(
            {address: settings.mail_host_fqdn for address in (settings.public_ipv4, settings.public_ipv6) if address}
        )
        self.ceres_env = ceres.ceres_env
        self.smtp_password = server.smtp_password
        self.feature_outputs = merged(*(c.outputs for c in contributions), what="output")
        self.register_outputs({"mail_host": self.mail_host, "ptr": self.ptr, "ceres_env": self.ceres_env})

    def _switch_to_the_mailbox(self, name: str, settings: Settings, server: MailServer, providers: Providers
                               ) -> tuple[CeresSmtp, KeycloakSmtp]:
        """CERES and Keycloak, switched to the mailbox once it exists."""
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
        return ceres, realm


@dataclass(frozen=True)
class StackKeys:
    """The keys and the password every stack owns, kept encrypted in its state."""

    dkim: Mapping[str, tls.PrivateKey]  #: selector -> key, every published selector
    dkim_signing: tls.PrivateKey  #: the signing selector's
    host: tls.PrivateKey  #: the VM's SSH host key, planted by cloud-init and pinned by every connection
    deploy: tls.PrivateKey  #: the key the stack logs in to the VM with
    mailbox_password: pulumi.Output[str]  #: the mailbox CERES and Keycloak send as

    @classmethod
    def make(cls, name: str, settings: Settings, keep: pulumi.ResourceOptions) -> StackKeys:
        dkim = dkim_keys_by_selector(name, settings, keep)
        return cls(
            dkim=dkim,
            dkim_signing=dkim[settings.dkim_selector],
            host=tls.PrivateKey(f"{name}-ssh-host-key", algorithm="ED25519", opts=keep),
            deploy=tls.PrivateKey(f"{name}-deploy-key", algorithm="ED25519", opts=keep),
            mailbox_password=random.RandomPassword(f"{name}-mailbox-password", length=32, special=False,
                                                   opts=keep).result,
        )

    @property
    def dkim_public_pems(self) -> dict[str, pulumi.Output[str]]:
        return {selector: key.public_key_pem for selector, key in self.dkim.items()}

    @property
    def stage_secrets(self) -> dict[str, pulumi.Input[str]]:
        """What the install stages read of these, by name: the deploy key the access stage keeps authorized
        (public, but on stdin like the rest), the mailbox password and the DKIM signing key."""
        return {"DEPLOY_PUBLIC_KEY": self.deploy.public_key_openssh, "MAILBOX_PASSWORD": self.mailbox_password,
                "DKIM_PRIVATE_KEY": self.dkim_signing.private_key_pem}


def merged(*parts: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The union of the features' mappings: two features bringing the same name is a program error, said here
    rather than one silently replacing the other."""
    union: dict[str, Any] = {}
    for part in parts:
        if clash := sorted(union.keys() & part.keys()):
            raise RuntimeError(f"two parts of the platform bring the {what} {', '.join(clash)}")
        union |= part
    return union


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
