"""CeresSmtp: the Kubernetes Secret that gives CERES its SMTP settings.

CERES reads CERES_SMTP_* and CERES_MAIL_* from this Secret; CERES_MAIL_MODE=external tells its deploy
not to install mailcow inside k3s. The password comes from MailServer, so the Secret is written only
once the mailbox exists. A Secret's new content reaches running pods only on restart: with
`ceresDeployment` set, a checksum annotation on that Deployment's pod template rolls it when it changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import hashlib
import json

import pulumi
import pulumi_kubernetes as kubernetes

from components.builders.ceres_env import PASSWORD_KEY, ceres_smtp_env
from components.builders.inputs import CeresInputs


@dataclass(frozen=True)
class CeresSmtpArgs:
    """The SMTP settings CERES gets."""

    ceres: CeresInputs  #: CERES's namespace and Secret, the submission settings, the Deployment to roll
    smtp_password: pulumi.Input[str]  #: secret, from MailServer: known once the mailbox exists


class CeresSmtp(pulumi.ComponentResource):
    """CERES's SMTP Secret."""

    secret_name: pulumi.Output[str]
    ceres_env: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: CeresSmtpArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:ceres:Smtp", name, None, opts)
        # Every value but the password is plain; the password stays a secret
        plain = ceres_smtp_env(args.ceres.smtp)
        string_data = {**plain, PASSWORD_KEY: pulumi.Output.secret(args.smtp_password)}

        # The Secret CERES mounts
        secret = kubernetes.core.v1.Secret(
            f"{name}-secret",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.ceres.secret_name,
                namespace=args.ceres.namespace,
                labels={"app.kubernetes.io/managed-by": "ceres-mail", "app.kubernetes.io/part-of": "ceres"},
            ),
            type="Opaque",
            string_data=string_data,
            opts=pulumi.ResourceOptions(parent=self),
        )

        # Roll CERES when the settings change: a checksum of the Secret's content on its pod template
        if args.ceres.rollout_deployment:
            checksum = pulumi.Output.from_input(args.smtp_password).apply(
                lambda password: hashlib.sha256(json.dumps({**plain, PASSWORD_KEY: password}, sort_keys=True).encode()).hexdigest()
            )
            kubernetes.apps.v1.DeploymentPatch(
                f"{name}-rollout",
                metadata=kubernetes.meta.v1.ObjectMetaPatchArgs(
                    name=args.ceres.rollout_deployment,
                    namespace=args.ceres.namespace,
                    # take over only this annotation from CERES's own field manager
                    annotations={"pulumi.com/patchForce": "true"},
                ),
                spec=kubernetes.apps.v1.DeploymentSpecPatchArgs(
                    template=kubernetes.core.v1.PodTemplateSpecPatchArgs(
                        metadata=kubernetes.meta.v1.ObjectMetaPatchArgs(
                            annotations={"ceres-mail/smtp-checksum": checksum}
                        )
                    )
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[secret]),
            )

        self.secret_name = secret.metadata.apply(lambda metadata: metadata.name)
        # The Secret's data is secret as a whole; the plain part is exported so operators can read what
        # CERES gets without decrypting anything
        self.ceres_env = pulumi.Output.from_input(plain)
        self.register_outputs({"secret_name": self.secret_name, "ceres_env": self.ceres_env})
