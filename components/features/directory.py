"""The directory of CERES users' passwords (`ldapMode` local or external), as the platform makes it.

Local: slapd on the mail host, whose two passwords (its root DN's, the service account's) the stack makes
and keeps in its encrypted state; Keycloak's federation waits for the install that set slapd up. External:
the operator's directory, whose service account password is `ldapBindPassword`; Keycloak federates it at
once. Either way the mail host's stages read the service account's password, and the realm federates the
directory (components/keycloak.py, KeycloakDirectory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_random as random

from components.builders.inputs import ExternalDirectory, LdapInputs, LocalDirectory
from components.builders.native import LDAP_SECRETS, MAIL_LDAP_SECRETS
from components.features.base import Contribution, Feature, Installed, Site
from components.keycloak import KeycloakDirectory, KeycloakDirectoryArgs

if TYPE_CHECKING:
    from components.settings import Settings

(BIND_PASSWORD,) = MAIL_LDAP_SECRETS


@dataclass(frozen=True)
class Directory(Feature):
    """The directory the settings chose, and the operator's bind password when it is theirs."""

    ldap: LdapInputs
    bind_password: pulumi.Input[str] | None = None  #: external: ldapBindPassword

    @classmethod
    def chosen(cls, settings: Settings) -> Directory | None:
        ldap = settings.ldap_inputs
        return cls(ldap, settings.ldap_bind_password) if ldap is not None else None

    def contribute(self, site: Site) -> Contribution:
        """Local: both passwords made by the stack; external: the operator's."""
        match self.ldap:
            case LocalDirectory():
                # slapd's root DN (LdapInputs.admin_dn), then the service account (LdapInputs.bind_dn)
                return Contribution(secrets={
                    secret: random.RandomPassword(f"{site.name}-ldap-{who}-password", length=32, special=False,
                                                  opts=site.keep).result
                    for secret, who in zip(LDAP_SECRETS, ("admin", "bind"), strict=True)
                })
            case ExternalDirectory():
                return Contribution(secrets={BIND_PASSWORD: self.bind_password})
        raise TypeError(f"no directory of kind {type(self.ldap).__name__}")

    def follow(self, site: Site, installed: Installed, own: Contribution) -> None:
        """The realm's federation: a local directory exists once the install ran, an external one already."""
        KeycloakDirectory(
            f"{site.name}-keycloak-directory",
            KeycloakDirectoryArgs(realm_id=installed.realm.realm_id, ldap=self.ldap,
                                  bind_password=own.secrets[BIND_PASSWORD], protect=site.protect,
                                  after=(installed.server.install,) if isinstance(self.ldap, LocalDirectory) else ()),
            opts=pulumi.ResourceOptions(parent=site.parent, providers=[installed.providers.keycloak]),
        )
