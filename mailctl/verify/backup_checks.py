"""The backup check of `mailctl verify --stack S --ssh-key KEY`: the host's own account of its last backup
(mailctl/backup.py), judged as `mailctl backup status` judges it."""

from __future__ import annotations

from mailctl.backup import BackupCommandError, fetch_status, judge
from mailctl.verify.model import FAIL, Result, Target


def check_backup(target: Target) -> list[Result]:
    if target.backup_access is None:
        return []
    try:
        return judge(fetch_status(target.backup_access))
    except BackupCommandError as error:
        return [Result("backup", FAIL, str(error), "see docs/backups.md")]
