"""Backups of the mail host (`backupTarget`), as the platform makes them.

The stack makes the restic repository's password, and for an sftp target the SSH key the mail host logs in
to the backup host with; both stay in its encrypted state. An S3 target's access keys are the operator's
(`backupS3AccessKey`, `backupS3SecretKey`). The outputs say where the backups go, give the password (a
secret: keep a copy outside the stack, it is what opens the backups when the stack itself is lost) and the
public key the backup host must authorize.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from components.builders.backup import BackupInputs, S3Target, SftpTarget
from components.features.base import Contribution, Feature, Site

if TYPE_CHECKING:
    from components.settings import Settings


@dataclass(frozen=True)
class Backups(Feature):
    """Where, when and for how long the mail host backs up, and the operator's S3 keys."""

    backup: BackupInputs
    s3_access_key: pulumi.Input[str] | None = None
    s3_secret_key: pulumi.Input[str] | None = None

    @classmethod
    def chosen(cls, settings: Settings) -> Backups | None:
        backup = settings.backup_inputs
        return cls(backup, settings.backup_s3_access_key, settings.backup_s3_secret_key) if backup else None

    def contribute(self, site: Site) -> Contribution:
        """The repository's password, and the target's credentials in the order its stage reads them."""
        password = random.RandomPassword(f"{site.name}-backup-password", length=40, special=False, opts=site.keep)
        backup = self.backup
        outputs = {
            "backup": {"target": backup.target.repository, "schedule": backup.schedule,
                       "keep": dataclasses.asdict(backup.keep)},
            "backupRepositoryPassword": pulumi.Output.secret(password.result),
        }
        match backup.target:
            case SftpTarget():
                ssh_key = tls.PrivateKey(f"{site.name}-backup-ssh-key", algorithm="ED25519", opts=site.keep)
                credentials: tuple[pulumi.Input[str] | None, ...] = (ssh_key.private_key_openssh,)
                outputs["backupSshPublicKey"] = ssh_key.public_key_openssh
            case S3Target():
                credentials = (self.s3_access_key, self.s3_secret_key)
            case target:
                raise TypeError(f"no backup target of kind {type(target).__name__}")
        return Contribution(secrets=dict(zip(backup.secrets, (password.result, *credentials), strict=True)),
                            outputs=outputs)
