"""CeresSmtp: the Kubernetes Secret that gives CERES its SMTP settings (seed 5.1 and 5.3).

CERES reads CERES_SMTP_* and CERES_MAIL_* from this Secret; CERES_MAIL_MODE=external tells its deploy
not to install mailcow inside k3s. The password comes from MailServer, so the Secret is written only
once the mailbox exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as kubernetes

from components.builders.ceres_env import PASSWORD_KEY, SmtpClient, ceres_smtp_env


@dataclass(frozen=True)
class CeresSmtpArgs:
    """The SMTP settings CERES gets."""

    namespace: str  #: CERES's namespace
    secret_name: str  #: name of the Secret CERES mounts
    smtp: SmtpClient  #: where and how CERES submits mail, as whom
    smtp_password: pulumi.Input[str]  #: secret, from MailServer: known once the mailbox exists


class CeresSmtp(pulumi.ComponentResource):
    """CERES's SMTP Secret."""

    secret_name: pulumi.Output[str]
    settings: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: CeresSmtpArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:ceres:Smtp", name, None, opts)
        # Every value but the password is plain; the password stays a secret
        plain = ceres_smtp_env(args.smtp)
        string_data = {**plain, PASSWORD_KEY: pulumi.Output.secret(args.smtp_password)}

        # The Secret CERES mounts
        secret = kubernetes.core.v1.Secret(
            f"{name}-secret",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.secret_name,
                namespace=args.namespace,
                labels={"app.kubernetes.io/managed-by": "ceres-mail", "app.kubernetes.io/part-of": "ceres"},
            ),
            type="Opaque",
            string_data=string_data,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.secret_name = secret.metadata.apply(lambda metadata: metadata.name)
        # The Secret's data is secret as a whole; the plain part is exported so operators can read what
        # CERES gets without decrypting anything
        self.settings = pulumi.Output.from_input(plain)
        self.register_outputs({"secret_name": self.secret_name, "settings": self.settings})
