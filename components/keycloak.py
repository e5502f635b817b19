"""KeycloakSmtp: the SMTP settings of CERES's existing Keycloak realm.

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

from components.builders.inputs import KeycloakInputs

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
