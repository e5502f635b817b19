"""KeycloakSmtp: the SMTP settings of CERES's existing Keycloak realm; KeycloakDirectory: its LDAP federation.

The realm belongs to CERES, not to this stack. It is imported (adopted, never created), never deleted
(retain_on_delete: `pulumi destroy` or a resource leaving the program releases it from the state and
leaves it in Keycloak), protected where the stack protects its resources (prod), and every realm field
except `smtp_server` is in ignore_changes, so this stack owns exactly the SMTP block and nothing else.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pulumi
import pulumi_keycloak as keycloak

from components.builders.inputs import KeycloakInputs, LdapInputs

# The one realm field this stack owns.
OWNED_FIELDS = ("realm", "smtp_server")


def unowned_realm_fields() -> list[str]:
    """Every input of keycloak.Realm but the owned ones, read from the SDK itself so that a field a
    newer provider adds is ignored too instead of being reset."""
    parameters = inspect.signature(keycloak.RealmArgs.__init__).parameters
    return sorted(name for name in parameters if name not in ("self", *OWNED_FIELDS))


@dataclass(frozen=True)
class KeycloakSmtpArgs:
    """The realm and the SMTP server it sends through."""

    keycloak: KeycloakInputs  #: the existing CERES realm, the submission settings, From name, Reply-To
    smtp_password: pulumi.Input[str]  #: secret, from MailServer: known once the mailbox exists
    protect: bool = True  #: refuse `pulumi destroy` while the realm is in the stack (the stack's `protect`)


class KeycloakSmtp(pulumi.ComponentResource):
    """SMTP settings of the CERES realm."""

    realm_id: pulumi.Output[str]

    def __init__(self, name: str, args: KeycloakSmtpArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:keycloak:Smtp", name, None, opts)

        # The existing realm, adopted; only its SMTP block is ours
        realm = keycloak.Realm(
            f"{name}-realm",
            realm=args.keycloak.realm,
            smtp_server=keycloak.RealmSmtpServerArgs(
                host=args.keycloak.smtp.host,
                port=str(args.keycloak.smtp.port),
                from_=args.keycloak.smtp.mail_from,
                from_display_name=args.keycloak.from_display_name,
                reply_to=args.keycloak.reply_to or None,
                # bounces of Keycloak's mail come back to the mailbox it sends as
                envelope_from=args.keycloak.smtp.mail_from,
                starttls=args.keycloak.smtp.starttls,
                ssl=args.keycloak.smtp.tls,
                auth=keycloak.RealmSmtpServerAuthArgs(
                    username=args.keycloak.smtp.user, password=pulumi.Output.secret(args.smtp_password)
                ),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                import_=args.keycloak.realm,
                protect=args.protect,
                # whatever the protection, destroying the stack never deletes CERES's realm
                retain_on_delete=True,
                ignore_changes=unowned_realm_fields(),
            ),
        )

        self.realm_id = realm.id
        self.register_outputs({"realm_id": self.realm_id})


#: inetOrgPerson and what it derives from: the entries Keycloak creates (WRITABLE registrations) and looks for
USER_OBJECT_CLASSES = ("inetOrgPerson", "organizationalPerson", "person", "top")


@dataclass(frozen=True)
class KeycloakDirectoryArgs:
    """The directory (ldapMode local or external) the realm federates, and how it binds."""

    realm_id: pulumi.Input[str]  #: the adopted CERES realm
    ldap: LdapInputs
    bind_password: pulumi.Input[str]  #: secret: the password of ldap.bind_dn
    protect: bool = True
    #: what must have run before the federation is made (ldapMode local: the install that sets slapd up)
    after: tuple[pulumi.Resource, ...] = ()


class KeycloakDirectory(pulumi.ComponentResource):
    """The CERES realm's LDAP user federation: users log in to Keycloak with their directory password, and
    in WRITABLE mode a password set in Keycloak (reset mail, account console) is written to the directory
    with the Password Modify extended operation, so the directory hashes it and it is the mail password too.

    Owned by this stack (created by it, and deleted with it: in a protected stack only once unprotected,
    docs/ldap.md), unlike the realm it sits in."""

    def __init__(self, name: str, args: KeycloakDirectoryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:keycloak:Directory", name, None, opts)
        ldap = args.ldap
        federation = keycloak.ldap.UserFederation(
            f"{name}-federation",
            realm_id=args.realm_id,
            name="ceres-mail-directory",
            connection_url=ldap.url,
            start_tls=ldap.start_tls,  # ldap:// only ever with StartTLS (the settings refuse plain LDAP)
            use_truststore_spi="ALWAYS",  # Keycloak's own truststore: see the README on trusting the directory's CA
            users_dn=ldap.users_dn,
            bind_dn=ldap.bind_dn,
            bind_credential=pulumi.Output.secret(args.bind_password),
            vendor="OTHER",
            username_ldap_attribute="uid",
            rdn_ldap_attribute="uid",
            uuid_ldap_attribute="entryUUID",
            user_object_classes=list(USER_OBJECT_CLASSES),
            search_scope="ONE_LEVEL",
            edit_mode=ldap.edit_mode,
            use_password_modify_extended_op=True,  # the directory hashes; Keycloak never writes a clear password
            import_enabled=True,
            sync_registrations=False,  # CERES's users come from the directory; registrations stay in Keycloak
            trust_email=True,  # the directory's mail is the operator's word, and it is the mailbox address
            enabled=True,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, depends_on=list(args.after)),
        )
        self.federation_id = federation.id
        self.register_outputs({"federation_id": self.federation_id})
