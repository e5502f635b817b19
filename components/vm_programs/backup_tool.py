#!/usr/bin/python3
"""ceres-mail-backup: the mail host's backups with restic, installed by the stack's `backup` stage.

    ceres-mail-backup init                  make the repository if it does not exist (the stage runs this)
    ceres-mail-backup run                   one backup (the systemd timer runs this), ending with a check
    ceres-mail-backup status                the last run and the last success, as JSON (mailctl backup status)
    ceres-mail-backup snapshots             the repository's snapshots, as JSON
    ceres-mail-backup restore [--snapshot ID] [--password-stdin]
                                            a snapshot back onto this host (mailctl backup restore)

It runs on the mail host as root, with the Python of Debian 12 and its standard library only. Its config is
/etc/ceres-mail/backup/config.json (rendered by the stack, components/builders/backup.py), the repository's
password and credentials are the root-only files beside it. restic gets the password from a file or its
environment, never a command line; nothing here prints a secret.

A run stages a consistent copy first and never stops mail: each mailbox through Dovecot (`doveadm backup`,
which takes Dovecot's own locks), a local directory through `slapcat`, the webmail's database through SQLite's
online backup, mailcow's volumes through mailcow's
helper script; restic then snapshots the staging directory with the configuration and keys. Its result
goes to /var/lib/ceres-mail/backup/status.json, which `status` reads.

Exit codes: 0 done, 1 failed, 2 usage, 3 the password does not open the repository, 4 the repository cannot
be reached.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG_DIR = Path("/etc/ceres-mail/backup")
STATUS = Path("/var/lib/ceres-mail/backup/status.json")
CACHE = Path("/var/cache/ceres-mail-backup")  #: restic's cache of the repository's index
TAG = "ceres-mail"
VMAIL_USER = "vmail"
EXIT_FAILED, EXIT_USAGE, EXIT_PASSWORD, EXIT_UNREACHABLE = 1, 2, 3, 4

#: what restic prints when the password opens no key of the repository
WRONG_PASSWORD = re.compile(r"wrong password or no key found", re.I)
#: when there is no repository at the location (it opened the location but found no config)
NO_REPOSITORY = re.compile(r"Is there a repository at the following location\?|repository does not exist", re.I)
#: when the location itself cannot be reached: ssh, TCP, DNS or TLS
UNREACHABLE = re.compile(r"ssh: |connection refused|no route to host|network is unreachable|i/o timeout|"
                         r"unable to start the sftp session|connection reset|host key verification failed|"
                         r"no such host|server misbehaving|dial tcp|permission denied \(publickey|"
                         r"tls: |x509: |connection timed out", re.I)


class BackupError(Exception):
    """A failure an operator can act on, with the exit code that says which kind."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def load_config() -> dict:
    return json.loads((CONFIG_DIR / "config.json").read_text())


def restic_env(config: dict, password: str | None = None) -> dict[str, str]:
    """restic's environment: the repository, its password (the file, or one given), S3 credentials."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RESTIC_", "AWS_"))}
    env.update(RESTIC_REPOSITORY=config["repository"], RESTIC_CACHE_DIR=str(CACHE))
    if password is None:
        env["RESTIC_PASSWORD_FILE"] = str(CONFIG_DIR / "password")
    else:
        env["RESTIC_PASSWORD"] = password
    if config["kind"] == "s3":
        for line in (CONFIG_DIR / "s3.env").read_text().splitlines():
            name, _, value = line.partition("=")
            if name:
                env[name] = value
    return env


def restic_options(config: dict) -> list[str]:
    """sftp: ssh with the stack's key, trusting only the pinned host key, never asking anything."""
    if config["kind"] != "sftp":
        return []
    ssh = config["ssh"]
    command = (f"ssh -F /dev/null -i {CONFIG_DIR / 'ssh_key'} -o IdentitiesOnly=yes -o BatchMode=yes "
               f"-o UserKnownHostsFile={CONFIG_DIR / 'known_hosts'} -o StrictHostKeyChecking=yes "
               f"-o ConnectTimeout=20 -o ServerAliveInterval=60 {ssh['user']}@{ssh['host']} -s sftp")
    return ["-o", f"sftp.command={command}"]


def restic(config: dict, *args: str, password: str | None = None, json_lines: bool = False) -> str:
    """Run restic; its output, or BackupError naming what went wrong (password, reachability, other)."""
    argv = ["restic", *restic_options(config), *args]
    result = subprocess.run(argv, env=restic_env(config, password), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise classify(config, result.stderr, args[0])
    return result.stdout


def classify(config: dict, stderr: str, what: str) -> BackupError:
    """A restic failure as the operator needs it: which kind, and restic's own last words."""
    said = " / ".join(line.strip() for line in stderr.strip().splitlines()[-3:] if line.strip()) or "no output"
    repository = config["repository"]
    if WRONG_PASSWORD.search(stderr):
        return BackupError(f"the repository password does not open the repository at {repository} (restic: {said})",
                           EXIT_PASSWORD)
    if NO_REPOSITORY.search(stderr):
        return BackupError(f"there is no repository at {repository} (restic: {said})")
    if UNREACHABLE.search(stderr):
        return BackupError(f"the backup target {repository} cannot be reached (restic: {said})", EXIT_UNREACHABLE)
    return BackupError(f"restic {what} failed (restic: {said})")


def repository_exists(config: dict) -> bool:
    """Whether the repository is there (and this password opens it: BackupError otherwise)."""
    try:
        restic(config, "cat", "config")
    except BackupError as error:
        if str(error).startswith("there is no repository"):
            return False
        raise
    return True


def init(config: dict, _args) -> int:
    if repository_exists(config):
        print(f"repository at {config['repository']} opens with this stack's password")
        return 0
    restic(config, "init")
    print(f"made the repository at {config['repository']}")
    return 0


# --- run -------------------------------------------------------------------------------------------------

def read_status() -> dict:
    try:
        return json.loads(STATUS.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_status(status: dict) -> None:
    STATUS.parent.mkdir(parents=True, exist_ok=True)
    tmp = STATUS.with_suffix(".tmp")
    tmp.write_text(json.dumps(status, sort_keys=True, indent=1) + "\n")
    tmp.replace(STATUS)


def mailboxes(vmail: Path) -> list[tuple[str, Path]]:
    """(user, home) of every mailbox on disk: <vmail>/<domain>/<local part>/Maildir."""
    return sorted((f"{home.name}@{home.parent.name}", home)
                  for home in vmail.glob("*/*") if (home / "Maildir").is_dir())


def stage_mail(config: dict) -> int:
    """Each mailbox into the staging directory with Dovecot's dsync: what changed since the last run."""
    staging = Path(config["staging"]) / "mail"
    owner = pwd.getpwnam(VMAIL_USER)
    for directory in (Path(config["staging"]), staging):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    found = mailboxes(Path(config["vmail"]))
    for user, home in found:
        local, domain = user.split("@", 1)
        target = staging / domain / local
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.chown(target.parent, owner.pw_uid, owner.pw_gid)
        result = subprocess.run(["doveadm", "backup", "-u", user, f"maildir:{target}"], capture_output=True, text=True)
        if result.returncode != 0:
            # a mailbox whose user is gone (a person removed from the directory): its files as they are
            print(f"{user}: Dovecot does not know this user ({result.stderr.strip()}); copying its files")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(home / "Maildir", target, symlinks=True)
    return len(found)


def stage_directory(config: dict) -> None:
    """The local directory as LDIF (slapcat reads the database while slapd serves it)."""
    ldif = Path(config["staging"]) / "directory.ldif"
    with open(ldif, "w") as out:
        os.chmod(ldif, 0o600)
        subprocess.run(["slapcat", "-b", config["directory"]["base_dn"]], stdout=out, check=True)


def stage_webmail(config: dict) -> None:
    """Roundcube's database (people's contacts and settings), with SQLite's online backup: consistent while
    the webmail writes to it."""
    database = Path(config["webmail_db"])
    if database.exists():
        copy = Path(config["staging"]) / "roundcube.sqlite"
        subprocess.run(["sqlite3", str(database), f".backup '{copy}'"], check=True)
        os.chmod(copy, 0o600)


def stage_mailcow(config: dict) -> None:
    """mailcow's own backup of its volumes (mail, database, Redis with the DKIM keys, rspamd, postfix),
    one copy at a time in the staging directory: restic keeps the history."""
    location = Path(config["staging"]) / "mailcow"
    shutil.rmtree(location, ignore_errors=True)
    location.mkdir(parents=True, mode=0o700)
    script = Path(config["mailcow_dir"]) / "helper-scripts" / "backup_and_restore.sh"
    subprocess.run([str(script), "backup", "all"], env={**os.environ, "MAILCOW_BACKUP_LOCATION": str(location)},
                   check=True, stdin=subprocess.DEVNULL)


def run(config: dict, _args) -> int:
    status = read_status()
    started = int(time.time())
    status["last_run"] = {"started": started, "result": "running"}
    write_status(status)
    try:
        summary = backup(config)
    except (BackupError, subprocess.CalledProcessError, OSError) as error:
        status["last_run"] = {"started": started, "finished": int(time.time()), "result": "failed",
                              "error": str(error)}
        write_status(status)
        print(f"backup failed: {error}", file=sys.stderr)
        return error.code if isinstance(error, BackupError) else EXIT_FAILED
    finished = int(time.time())
    status["last_run"] = {"started": started, "finished": finished, "result": "ok"}
    status["last_success"] = {"finished": finished, **summary}
    write_status(status)
    print(f"backup done: snapshot {summary['snapshot']}, {summary['mailboxes']} mailbox(es), "
          f"{summary['bytes']} bytes, repository {summary['repository_bytes']} bytes")
    return 0


def backup(config: dict) -> dict:
    """Stage, snapshot, forget by the retention, check a subset: what the snapshot holds."""
    if not repository_exists(config):
        restic(config, "init")
    mailbox_count = 0
    if config["mail_stack"] == "native":
        mailbox_count = stage_mail(config)
        if config.get("directory"):
            stage_directory(config)
        if config.get("webmail_db"):
            stage_webmail(config)
    else:
        stage_mailcow(config)
    paths = [config["staging"], *(p for p in config["paths"] if Path(p).exists())]
    output = restic(config, "backup", "--json", "--tag", TAG, "--host", config["mail_host"],
                    "--exclude", str(CONFIG_DIR), *paths)
    summary = next(message for message in map(json.loads, output.splitlines())
                   if message.get("message_type") == "summary")
    keep = config["keep"]
    restic(config, "forget", "--tag", TAG, "--group-by", "host,tags", "--prune", "--keep-daily", str(keep["daily"]),
           "--keep-weekly", str(keep["weekly"]), "--keep-monthly", str(keep["monthly"]))
    restic(config, "check", "--read-data-subset", config["check_subset"])
    stats = json.loads(restic(config, "stats", "--json", "--mode", "raw-data"))
    return {"snapshot": summary["snapshot_id"][:8], "bytes": summary["total_bytes_processed"],
            "files": summary["total_files_processed"], "mailboxes": mailbox_count,
            "repository_bytes": stats.get("total_size", 0)}


# --- status ----------------------------------------------------------------------------------------------

def status(config: dict, _args) -> int:
    shown = read_status()
    next_run = subprocess.run(["systemctl", "show", "-p", "NextElapseUSecRealtime", "--value",
                               "ceres-mail-backup.timer"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"now": int(time.time()), "repository": config["repository"], "next_run": next_run,
                      "last_run": shown.get("last_run"), "last_success": shown.get("last_success")},
                     sort_keys=True))
    return 0


def snapshot_list(config: dict, password: str | None = None) -> list[dict]:
    return json.loads(restic(config, "snapshots", "--json", "--tag", TAG, password=password) or "[]")


def snapshots(config: dict, _args) -> int:
    print(json.dumps([{"id": s["short_id"], "time": s["time"], "host": s.get("hostname", "")}
                      for s in snapshot_list(config)], sort_keys=True))
    return 0


# --- restore ---------------------------------------------------------------------------------------------

def restore(config: dict, args) -> int:
    """A snapshot back onto this host: unpacked under restore_root, the directory's people added where
    missing, each mailbox merged into the live one with dsync (nothing on the host is deleted; a message
    already there is not duplicated). The configuration and keys stay in the unpacked copy, for comparison:
    the stack renders them."""
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    found = snapshot_list(config, password)
    if not found:
        raise BackupError(f"the repository at {config['repository']} holds no snapshot of this stack yet")
    if args.snapshot in ("", "latest"):
        snapshot = max(found, key=lambda s: s["time"])
    else:
        matching = [s for s in found if s["id"].startswith(args.snapshot) or s["short_id"] == args.snapshot]
        if not matching:
            raise BackupError(f"no snapshot {args.snapshot} in {config['repository']}; "
                              f"there are: {', '.join(s['short_id'] for s in found)}")
        snapshot = matching[0]
    root = Path(config["restore_root"])
    root.mkdir(mode=0o711, exist_ok=True)
    target = root / snapshot["short_id"]
    print(f"restoring snapshot {snapshot['short_id']} of {snapshot['time'][:19]} into {target}", flush=True)
    shutil.rmtree(target, ignore_errors=True)
    restic(config, "restore", snapshot["id"], "--target", str(target), password=password)
    target.chmod(0o711)
    staged = target / config["staging"].lstrip("/")
    if config["mail_stack"] != "native":
        print(f"mailcow's own backup is in {staged / 'mailcow'}: restore it with "
              f"MAILCOW_BACKUP_LOCATION={staged / 'mailcow'} {config['mailcow_dir']}/helper-scripts/"
              "backup_and_restore.sh restore")
        return 0
    if config.get("directory") and (staged / "directory.ldif").exists():
        restore_directory(config, staged / "directory.ldif")
    failed = restore_mail(staged / "mail")
    print(f"the snapshot's configuration and keys are in {target} (the stack renders its own; "
          f"remove the directory when done)")
    if failed:
        raise BackupError(f"not restored: {', '.join(failed)} (Dovecot does not know these users)")
    return 0


def ldif_entries(text: str) -> list[tuple[str, str]]:
    """(dn, entry text) of each entry of slapcat's LDIF (folded lines joined for the dn only)."""
    entries = []
    for block in text.strip().split("\n\n"):
        unfolded = re.sub(r"\n ", "", block)
        first = unfolded.split("\n", 1)[0]
        if first.startswith("dn:: "):
            dn = base64.b64decode(first[5:]).decode()
        else:
            dn = first[4:] if first.startswith("dn: ") else ""
        if dn:
            entries.append((dn, block + "\n"))
    return entries


def normalized(dn: str) -> str:
    return ",".join(part.strip().lower() for part in dn.split(","))


def restore_directory(config: dict, ldif: Path) -> None:
    """The people of the snapshot that the directory lacks, added with slapadd (their password hashes and
    entryUUIDs as they were); slapd stops for the few seconds slapadd takes."""
    users = normalized(config["directory"]["users_dn"])
    live = {normalized(dn) for dn, _ in ldif_entries(subprocess.run(
        ["slapcat", "-b", config["directory"]["base_dn"]], capture_output=True, text=True, check=True).stdout)}
    missing = [(dn, text) for dn, text in ldif_entries(ldif.read_text())
               if normalized(dn).endswith("," + users) and normalized(dn) not in live]
    if not missing:
        print("directory: every person of the snapshot is there")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".ldif", delete=False) as out:
        out.write("\n".join(text for _, text in missing))
    os.chmod(out.name, 0o600)
    try:
        subprocess.run(["systemctl", "stop", "slapd"], check=True)
        try:
            subprocess.run(["slapadd", "-q", "-b", config["directory"]["base_dn"], "-l", out.name], check=True,
                           capture_output=True, text=True)
        finally:
            subprocess.run(["chown", "-R", "openldap:openldap", "/var/lib/ldap"], check=True)
            subprocess.run(["systemctl", "start", "slapd"], check=True)
    except subprocess.CalledProcessError as error:
        raise BackupError(f"directory: slapadd failed: {(error.stderr or '').strip()}") from None
    finally:
        os.unlink(out.name)
    print(f"directory: added {len(missing)} person(s): {', '.join(dn for dn, _ in missing)}")


def restore_mail(staged: Path) -> list[str]:
    """Each mailbox of the snapshot merged into the live one (`doveadm sync -1 -R`: from the copy into the
    mailbox, flags and folders included, deleting nothing); the users Dovecot does not know."""
    failed = []
    for domain in sorted(p for p in staged.glob("*") if p.is_dir()):
        for copy in sorted(p for p in domain.glob("*") if p.is_dir()):
            user = f"{copy.name}@{domain.name}"
            messages = sum(1 for _ in copy.glob("**/cur/*")) + sum(1 for _ in copy.glob("**/new/*"))
            result = subprocess.run(["doveadm", "sync", "-1", "-R", "-u", user, f"maildir:{copy}"],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                print(f"{user}: not restored: {result.stderr.strip()}", file=sys.stderr)
                failed.append(user)
            else:
                print(f"{user}: {messages} message(s) restored", flush=True)
    return failed


COMMANDS = {"init": init, "run": run, "status": status, "snapshots": snapshots, "restore": restore}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ceres-mail-backup", description="The mail host's backups (restic).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("init", "run", "status", "snapshots"):
        sub.add_parser(name)
    restoring = sub.add_parser("restore")
    restoring.add_argument("--snapshot", default="latest", help="a snapshot id (default: the latest)")
    restoring.add_argument("--password-stdin", action="store_true",
                           help="read the repository password from the first line of stdin, not the stack's file")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](load_config(), args)
    except BackupError as error:
        print(f"ceres-mail-backup {args.command}: {error}", file=sys.stderr)
        return error.code


if __name__ == "__main__":
    sys.exit(main())
