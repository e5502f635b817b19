"""Backups of the mail host with restic: where they go (`backupTarget`), and the `backup` stage that sets them up.

The stage is the last one of either mail stack and nothing waits for it, so it never holds up the mail server,
CERES or Keycloak. A repository the stack's password does not open fails it; a target not reachable yet (the
first `pulumi up`, before the backup host authorized the stack's key) only warns. It installs Debian's restic and
the host's backup program, `ceres-mail-backup` (components/vm_programs/backup_tool.py, stdlib Python: the Debian
cloud image has python3 for cloud-init), writes the repository's password and credentials as root-only files,
makes the repository when it does not exist yet, and schedules `ceres-mail-backup run` with a systemd timer.

A run never stops mail. Dovecot copies each mailbox to a staging directory on the data disk (`doveadm
backup`, dsync: Dovecot's own locking, so the copy is consistent while mail keeps arriving and clients keep
changing flags; a plain copy of a live Maildir can miss a message that a flag change renames mid-copy), the
local directory is exported with `slapcat`, the webmail's database copied with SQLite's online backup, mailcow backs up its volumes with its own helper script, and
restic snapshots the staging directory with the configuration and keys. The staging copy is incremental
(dsync copies what changed) and costs the disk space of the mail once more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from components.builders.cloud_init import DATA_MOUNT_POINT
from components.builders.mail_stacks import PlacedStage
from components.builders.shell_script import PRELUDE, READ_SECRETS, Stage, render_script
from components.vm_programs import program_text

BACKUP_TOOL = "/usr/local/sbin/ceres-mail-backup"  #: the program on the host (mailctl runs it over SSH)
CONFIG_DIR = "/etc/ceres-mail/backup"  #: its config.json and the repository's credentials, root only
STAGING = f"{DATA_MOUNT_POINT}/ceres-backup"  #: the consistent copy restic reads, on the data disk
RESTORE_ROOT = f"{DATA_MOUNT_POINT}/ceres-restore"  #: where `ceres-mail-backup restore` unpacks a snapshot
#: the part of the repository each run reads back and checks (`restic check --read-data-subset`)
CHECK_SUBSET = "10%"
PACKAGES = ("restic",)  #: Debian's
TOOL_PROGRAM = "BACKUP_TOOL_PROGRAM"  #: the variable backup_tool.py's text arrives in, on the stage's stdin
SFTP_SECRETS = ("BACKUP_PASSWORD", "BACKUP_SSH_KEY")
S3_SECRETS = ("BACKUP_PASSWORD", "BACKUP_S3_ACCESS_KEY", "BACKUP_S3_SECRET_KEY")

#: What a native host's backup holds besides the mail: the configuration the stack rendered, the DKIM keys
#: rspamd signs with, the TLS material (certbot's account and certificates, or the provided one under
#: /etc/ceres-mail), the MTA-STS policy, and with a local directory slapd's configuration and certificate.
NATIVE_PATHS = ("/etc/ceres-mail", "/etc/dovecot", "/etc/letsencrypt", "/etc/nginx/sites-available", "/etc/postfix",
                "/etc/rspamd", "/var/lib/rspamd/dkim", "/var/www/mta-sts")
LDAP_PATHS = ("/etc/ldap",)
#: mailcow: its configuration and certificates; its volumes (mail, database, Redis with the DKIM keys) come
#: from its own helper script, into the staging directory
MAILCOW_FILES = ("mailcow.conf", "data/assets/ssl", "data/conf")

_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
_SFTP = re.compile(rf"sftp:(?P<user>[a-z_][a-z0-9_.-]{{0,31}})@(?P<host>{_HOST}):(?P<path>[^\s:]+)")
_S3 = re.compile(rf"s3:https://(?P<host>{_HOST})(?::(?P<port>\d{{1,5}}))?/(?P<bucket>[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9])"
                 r"(?P<prefix>(?:/[^\s/]+)*)/?")


@dataclass(frozen=True)
class BackupTarget:
    """A restic repository, one of its two kinds: SftpTarget or S3Target. The code asks the kind what it
    needs (its secrets, its login, its known host) or matches it; it never compares a kind's name."""

    kind: ClassVar[str]  #: the kind's name in the stage's header and the host program's config (its contract)
    secrets: ClassVar[tuple[str, ...]]  #: what the backup stage reads from its standard input for this kind
    repository: str  #: what restic is given as -r: the value itself
    host: str  #: sftp: the backup host (what its pinned key is for); s3: the endpoint's host

    def login(self) -> dict[str, str] | None:
        """How the host program logs in to the target over SSH, or None when it does not."""
        return None

    def known_hosts(self, host_key: str) -> str:
        """The known_hosts line that pins the target's SSH host key, or "" when there is no SSH."""
        return ""


@dataclass(frozen=True)
class SftpTarget(BackupTarget):
    """`sftp:user@host:/path`: over SSH, the backup host's key pinned, the stack's own key logging in."""

    kind = "sftp"
    secrets = SFTP_SECRETS
    user: str = ""  #: the account on the backup host

    def login(self) -> dict[str, str]:
        return {"user": self.user, "host": self.host}

    def known_hosts(self, host_key: str) -> str:
        return f"{self.host} {host_key.strip()}"


@dataclass(frozen=True)
class S3Target(BackupTarget):
    """`s3:https://endpoint/bucket/prefix`: an S3 bucket, with the operator's access key."""

    kind = "s3"
    secrets = S3_SECRETS


def parse_backup_target(value: str) -> BackupTarget:
    """The target `backupTarget` names, or ValueError saying which forms there are."""
    if match := _SFTP.fullmatch(value):
        return SftpTarget(value, match["host"].strip("[]"), match["user"])
    if match := _S3.fullmatch(value):
        return S3Target(value.rstrip("/"), match["host"].strip("[]"))
    raise ValueError(f"{value!r} is neither sftp:user@host:/path nor s3:https://endpoint/bucket[/prefix]")


@dataclass(frozen=True)
class BackupKeep:
    """How many snapshots `restic forget` keeps: the last of each day, week and month."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 6


def native_paths(local_directory: bool) -> tuple[str, ...]:
    """The native stack's configuration and certificates, and slapd's with a directory on the host."""
    return tuple(sorted(NATIVE_PATHS + (LDAP_PATHS if local_directory else ())))


def mailcow_paths(mailcow_dir: str) -> tuple[str, ...]:
    """mailcow's configuration and certificates, inside its checkout."""
    return tuple(f"{mailcow_dir}/{path}" for path in MAILCOW_FILES)


@dataclass(frozen=True)
class BackupInputs:
    """Where the backups of one stack go, when, for how long, and what the host holds."""

    target: BackupTarget
    host_key: str  #: sftp: the backup host's public key (`ssh-ed25519 AAAA...`), the only one trusted
    schedule: str  #: a systemd calendar expression (OnCalendar=)
    keep: BackupKeep
    mail_host: str
    mail_stack: Literal["native", "mailcow"]
    directory_base_dn: str = ""  #: ldapMode local: the directory slapcat exports (its people come back on restore)
    directory_users_dn: str = ""
    mailcow_dir: str = ""  #: mailcow: where mailcow-dockerized is
    webmail_db: str = ""  #: native with webmail: Roundcube's SQLite database (contacts, settings)
    #: what restic snapshots besides the staging directory (each only if it exists on the host): what the
    #: mail stack holds, native_paths() or mailcow_paths()
    paths: tuple[str, ...] = ()

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the stage reads from its standard input: the repository password and the target's credentials."""
        return self.target.secrets

    def placed_stages(self) -> tuple[PlacedStage, ...]:
        """The `backup` stage, after the install: nothing waits for it."""
        return (PlacedStage(backup_stage(self)),)

    def config(self) -> dict:
        """The host program's config.json: everything it needs but the secrets (files beside it)."""
        target = self.target
        return {
            "repository": target.repository,
            "kind": target.kind,
            "ssh": target.login(),
            "mail_host": self.mail_host,
            "mail_stack": self.mail_stack,
            "paths": list(self.paths),
            "staging": STAGING,
            "restore_root": RESTORE_ROOT,
            "vmail": f"{DATA_MOUNT_POINT}/vhosts",
            "keep": dataclasses.asdict(self.keep),
            "check_subset": CHECK_SUBSET,
            "directory": {"base_dn": self.directory_base_dn, "users_dn": self.directory_users_dn}
            if self.directory_base_dn else None,
            "mailcow_dir": self.mailcow_dir or None,
            "webmail_db": self.webmail_db or None,
        }


def tool_program() -> str:
    """The text of backup_tool.py as the host writes it (one final newline; its sha256 is in the header)."""
    return program_text("backup_tool.py")


def render_backup_stage(inputs: BackupInputs) -> str:
    return render_script(
        "backup",
        inputs.mail_host,
        (*PRELUDE, *READ_SECRETS, "common/backup.sh"),
        PACKAGES=PACKAGES,
        BACKUP_KIND=inputs.target.kind,
        REPOSITORY=inputs.target.repository,
        KNOWN_HOSTS=inputs.target.known_hosts(inputs.host_key),
        SCHEDULE=inputs.schedule,
        CONFIG_DIR=CONFIG_DIR,
        CONFIG_JSON=json.dumps(inputs.config(), sort_keys=True, indent=1),
        BACKUP_TOOL=BACKUP_TOOL,
        TOOL_SHA256=hashlib.sha256(tool_program().encode()).hexdigest(),
        SECRETS=(*inputs.secrets, TOOL_PROGRAM),
    )


def backup_stage(inputs: BackupInputs) -> Stage:
    """The `backup` stage, after every stage of the mail stack."""
    return Stage("backup", render_backup_stage(inputs), inputs.secrets, ((TOOL_PROGRAM, tool_program()),))
