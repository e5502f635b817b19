"""Backups without a mail host: the graph the backupTarget adds, the host's program against a real restic
repository (Debian's restic on this machine, a local repository), and the verdict of `mailctl backup status`.

The whole story on a real Debian host, with an sftp backup host, is tests/test_directory_host.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from components.builders.backup import BackupKeep, S3Target, SftpTarget, parse_backup_target, render_backup_stage
from components.settings import values
from components.vm_programs import backup_tool
from mailctl.backup import MAX_AGE_HOURS, judge, render_status
from mailctl.plan import SECRET
from mailctl.recorder import record
from mailctl.verify.model import FAIL, OK
from tests.conftest import one, refused, split_secrets, stack_config

COMMAND = "command:remote:Command"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
S3 = {"ceres-mail:backupTarget": "s3:https://s3.example.com/ceres-backups/mail", "ceres-mail:backupHostKey": None,
      "ceres-mail:backupS3AccessKey": "AKIAEXAMPLE", "ceres-mail:backupS3SecretKey": "s3-secret-example-123"}


@pytest.fixture(scope="module")
def prod_settings(project_dir):
    from mailctl.zone import stack_settings

    return stack_settings(project_dir, "prod")


def plan_of(scratch_project, **edits):
    config, secrets = split_secrets(stack_config("prod", edits))
    return record(scratch_project("prod", config), "prod", secrets=secrets)


# --- the graph -----------------------------------------------------------------------------------------


def test_the_backup_stage_runs_last_and_nothing_waits_for_it(prod_plan):
    """Backup installs last and nothing waits for it; its secrets go on stdin and its ED25519 SSH key is protected."""
    backup = one(prod_plan, COMMAND, "-install-backup")
    assert one(prod_plan, COMMAND, "-install-fail2ban").urn in backup.dependencies, "after the last stage"
    for consumer in ("kubernetes:core/v1:Secret", "keycloak:index/realm:Realm"):
        assert backup.urn not in one(prod_plan, consumer).dependencies, "CERES and Keycloak never wait for backups"
    assert backup.inputs["stdin"] == SECRET
    key = one(prod_plan, PRIVATE_KEY, "-backup-ssh-key")
    assert key.inputs["algorithm"] == "ED25519" and key.options["protect"]


def test_the_repository_password_is_exported_only_as_a_secret(prod_plan):
    """The repository password is exported only as a secret, beside the target, schedule, retention and SSH key."""
    outputs = prod_plan.outputs
    assert outputs["backupRepositoryPassword"] == SECRET
    assert outputs["backup"] == {"target": "sftp:ceres-mail@backup.example.com:restic/mail.example.com",
                                 "schedule": "daily", "keep": {"daily": 7, "weekly": 4, "monthly": 6}}
    assert "backupSshPublicKey" in outputs, "what the backup host authorizes"


def test_a_stack_without_backup_target_has_no_backup_at_all(plans):
    """A stack without a backupTarget has no backup resources and no backup outputs."""
    staging = plans["staging"]
    assert not [r for r in staging.resources if "backup" in r.name]
    assert not [name for name in staging.outputs if name.startswith("backup")]


def test_s3_reads_its_credentials_as_secrets_and_makes_no_ssh_key(scratch_project):
    """An S3 target makes no SSH key, and its access and secret keys never appear in the plan."""
    plan = plan_of(scratch_project, **S3)
    assert not [r for r in plan.of_type(PRIVATE_KEY) if r.name.endswith("-backup-ssh-key")]
    assert "backupSshPublicKey" not in plan.outputs
    text = plan.to_json()
    assert "s3-secret-example-123" not in text and "AKIAEXAMPLE" not in text


def test_a_new_schedule_re_runs_only_the_backup_stage(project_dir, scratch_project):
    """A new backup schedule changes only the backup stage's inputs, so only that stage runs again."""
    runs = []
    for schedule in ("daily", "*-*-* 03:30:00"):
        raw: dict = {}
        config = {**stack_config("prod"), "ceres-mail:backupSchedule": schedule}
        record(scratch_project("prod", config), "prod", known_outputs=True,
               raw_inputs_hook=lambda urn, t, i: raw.__setitem__(urn, i),
               mock_overrides={"ceres-mail-backup-password": {"result": "stays"},
                               "ceres-mail-mailbox-password": {"result": "stays-too"},
                               "ceres-mail-server-native-roundcube-des-key": {"result": "stays-as-well-24-chars-x"}})
        runs.append(raw)
    changed = sorted(urn.rsplit("::", 1)[1] for urn in runs[0] if runs[0][urn] != runs[1][urn])
    assert changed == ["ceres-mail-server-install-backup"]


# --- the schedule, judged as systemd judges it --------------------------------------------------------


def systemd_accepts(expression: str) -> bool:
    """systemd's own verdict on an OnCalendar= value: it parses, and it elapses again."""
    shown = subprocess.run(["systemd-analyze", "calendar", "--", expression.strip()], capture_output=True, text=True)
    return shown.returncode == 0 and "Next elapse: never" not in shown.stdout


def schedule_accepted(expression: str) -> bool:
    try:
        values.systemd_calendar(expression)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("expression", [
    # what operators write: systemd.time(7)'s forms ...
    "daily", "weekly", "hourly", "*-*-* 03:30:00", "03:30", "Mon..Fri 22:30", "Sat,Sun 20:00", "*:0/15",
    "*-*-* 03:30:00 UTC", "Sun *-*-* 04:00 Europe/Berlin", "*-*~01 03:00", "*-*-* 03:30:00.5", " daily ",
    # ... and what they paste by mistake: cron lines, words, a date gone by, an hour that does not exist
    "0 3 * * *", "@daily", "every day", "at 3am", "nightly", "2020-01-01", "*-02-30", "*-*-* 25:00:00",
    "Mon..Xyz", "Mon,,", "Fri..Mon", "3:30 am",
])
def test_the_schedule_is_judged_as_systemd_judges_it(expression):
    """Refused at plan time exactly where systemd would refuse the timer at the last stage of `pulumi up`
    (or accept one that never runs again), and accepted wherever systemd accepts it."""
    assert schedule_accepted(expression) == systemd_accepts(expression), expression


calendar_pieces = st.sampled_from(["*", "-", ":", "/", "..", ",", "~", " ", ".", "0", "1", "3", "5", "7", "12", "30",
                                   "59", "60", "Mon", "Fri", "Sun", "daily", "weekly", "2027", "2020", "UTC", "02", "31",
                                   "00", "*-*-*", "Mon..Fri", "Europe/Berlin"])


@hypothesis_settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(calendar_pieces, min_size=1, max_size=8).map("".join))
def test_any_expression_gets_systemds_verdict(expression):
    """Random expressions from calendar syntax's pieces (derandomized, so CI sees the same ones each run)."""
    assert schedule_accepted(expression) == systemd_accepts(expression), expression


def test_a_cron_line_is_refused_naming_the_key_and_a_form_that_works(scratch_project):
    """A cron line as backupSchedule is refused, naming the key and a systemd form that works (*-*-* 03:30:00)."""
    lines = str(refused(scratch_project, stack_config("prod", {"ceres-mail:backupSchedule": "0 3 * * *"})))
    assert "ceres-mail:backupSchedule: '0 3 * * *' is not a systemd calendar expression" in lines
    assert "*-*-* 03:30:00" in lines


# --- the stage's inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize("target, kind, host, user", [
    ("sftp:backup@backup.example.com:/srv/restic/mail", SftpTarget, "backup.example.com", "backup"),
    ("sftp:u123@u123.your-storagebox.de:restic", SftpTarget, "u123.your-storagebox.de", "u123"),
    ("sftp:backup@[2001:db8::5]:/restic", SftpTarget, "2001:db8::5", "backup"),
    ("s3:https://s3.eu-central-1.amazonaws.com/ceres-backups/mail", S3Target, "s3.eu-central-1.amazonaws.com", None),
    ("s3:https://minio.example.com:9000/backups", S3Target, "minio.example.com", None),
])
def test_targets_parse_into_what_the_stage_needs(target, kind, host, user):
    """sftp (name or IPv6 host) and s3 targets give the stage kind, host and login; the target stays as written."""
    parsed = parse_backup_target(target)
    assert (type(parsed), parsed.host, parsed.repository) == (kind, host, target)
    assert parsed.login() == ({"user": user, "host": host} if user else None)
    assert parsed.known_hosts("ssh-ed25519 AAAA") == (f"{host} ssh-ed25519 AAAA" if user else ""), \
        "only an sftp target pins a host key"


@pytest.mark.parametrize("target", ["sftp:backup.example.com:/x", "sftp:b@h", "s3:https://s3.example.com",
                                    "s3:http://s3.example.com/b", "rest:https://backup.example.com/", "/srv/backup"])
def test_targets_of_no_known_form_are_refused(target):
    """A target neither sftp:user@host:/path nor an https s3: URL with a bucket is refused, naming both forms."""
    with pytest.raises(ValueError, match="neither sftp:user@host:/path nor s3:"):
        parse_backup_target(target)


def test_the_stage_pins_the_host_key_and_holds_no_secret(prod_settings):
    """The stage pins the host key, holds no secret, keeps 7/4/6 snapshots, and backs up DKIM keys and certificates."""
    inputs = prod_settings.backup_inputs
    script = render_backup_stage(inputs)
    assert "KNOWN_HOSTS='backup.example.com ssh-ed25519 AAAAC3" in script
    assert "PRIVATE KEY" not in script and "BACKUP_PASSWORD=" not in script
    assert inputs.keep == BackupKeep(7, 4, 6)
    config = inputs.config()
    assert "/var/lib/rspamd/dkim" in config["paths"] and "/etc/letsencrypt" in config["paths"]
    assert config["staging"] == "/var/mail/ceres-backup"


# --- the host's program, against a real restic repository -----------------------------------------------


@pytest.fixture
def tool(tmp_path, monkeypatch):
    """backup_tool with its files under tmp_path and a local repository (restic's own backend for a path):
    the same restic calls as on the host, without the network."""
    if shutil.which("restic") is None:
        pytest.fail("restic is not installed (tests/system-packages.txt; make test installs it as root)")
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "password").write_text("the-stack-password\n")
    config = {"repository": str(tmp_path / "repository"), "kind": "local", "ssh": None, "mail_host": "mail.example.com",
              "mail_stack": "native", "paths": [], "staging": str(tmp_path / "staging"),
              "restore_root": str(tmp_path / "restore"), "vmail": str(tmp_path / "vhosts"),
              "keep": {"daily": 7, "weekly": 4, "monthly": 6}, "check_subset": "10%", "directory": None,
              "mailcow_dir": None}
    (config_dir / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(backup_tool, "CONFIG_DIR", config_dir)
    monkeypatch.setattr(backup_tool, "STATUS", tmp_path / "status.json")
    monkeypatch.setattr(backup_tool, "CACHE", tmp_path / "cache")
    return config_dir


def test_init_makes_the_repository_once_and_then_only_opens_it(tool, capsys):
    """`init` makes the restic repository the first time; after that it only checks the stack's password opens it."""
    assert backup_tool.main(["init"]) == 0
    assert "made the repository" in capsys.readouterr().out
    assert backup_tool.main(["init"]) == 0
    assert "opens with this stack's password" in capsys.readouterr().out


def test_a_password_that_does_not_open_the_repository_is_named_and_never_replaced(tool, capsys):
    """A password that does not open the repository is reported, never printed, and the repository is never remade."""
    assert backup_tool.main(["init"]) == 0
    (tool / "password").write_text("another-password\n")
    assert backup_tool.main(["init"]) == backup_tool.EXIT_PASSWORD
    said = capsys.readouterr()
    assert "the repository password does not open the repository at" in said.err
    assert "another-password" not in said.out + said.err
    (tool / "password").write_text("the-stack-password\n")
    assert backup_tool.main(["init"]) == 0, "the repository is still the first one"


def test_restore_with_a_wrong_password_on_stdin_fails_with_exit_3(tool, capsys, monkeypatch):
    """A restore given a wrong password on stdin stops with exit 3, saying the password does not open the repository."""
    import io

    assert backup_tool.main(["init"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("not-it\n"))
    assert backup_tool.main(["restore", "--password-stdin"]) == backup_tool.EXIT_PASSWORD
    assert "does not open" in capsys.readouterr().err


def test_an_unreachable_sftp_host_is_reported_as_unreachable(tool, capsys):
    """An unreachable sftp backup host is reported as such, naming the target, with its own exit code."""
    config = json.loads((tool / "config.json").read_text())
    config.update(kind="sftp", repository="sftp:backup@127.0.0.1:/restic", ssh={"user": "backup", "host": "127.0.0.1"})
    (tool / "config.json").write_text(json.dumps(config))
    (tool / "known_hosts").write_text("")
    (tool / "ssh_key").write_text("")
    assert backup_tool.main(["init"]) == backup_tool.EXIT_UNREACHABLE
    assert "the backup target sftp:backup@127.0.0.1:/restic cannot be reached" in capsys.readouterr().err


def test_status_before_any_run_says_nothing_happened_yet(tool, capsys):
    """Before the first backup, status shows no run and no success, and the verdict is red."""
    assert backup_tool.main(["status"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["last_run"] is None and shown["last_success"] is None
    assert [r.status for r in judge(shown)] == [FAIL]


def test_ldif_entries_read_folded_and_base64_names():
    """Directory entries are read with their folded and base64-encoded DNs restored in full (RFC 2849)."""
    ldif = ("dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\n\n"
            "dn:: dWlkPWrDvHJnZW4sb3U9cGVvcGxlLGRjPWV4YW1wbGUsZGM9Y29t\nuid: j\n\n"
            "dn: uid=a-very-long-name,ou=peo\n ple,dc=example,dc=com\nuid: a\n")
    assert [dn for dn, _ in backup_tool.ldif_entries(ldif)] == [
        "ou=people,dc=example,dc=com", "uid=jürgen,ou=people,dc=example,dc=com",
        "uid=a-very-long-name,ou=people,dc=example,dc=com"]


# --- the verdict ---------------------------------------------------------------------------------------


NOW = 1_800_000_000
SUCCESS = {"finished": NOW - 3 * 3600, "snapshot": "1a2b3c4d", "bytes": 5 * 1024 * 1024, "files": 42, "mailboxes": 2,
           "repository_bytes": 3 * 1024 * 1024}


def status(**fields):
    return {"now": NOW, "repository": "sftp:b@h:/r", "next_run": "", "last_run": None, "last_success": None, **fields}


def test_a_recent_successful_backup_is_ok_and_shows_its_age_and_size():
    """A recent successful backup is green, showing its age, size, file count and mailboxes."""
    results = judge(status(last_success=SUCCESS, last_run={"started": SUCCESS["finished"] - 60,
                                                           "finished": SUCCESS["finished"], "result": "ok"}))
    assert [r.status for r in results] == [OK, OK]
    assert "3 h 0 min ago" in results[0].detail and "5.0 MiB in 42 files, 2 mailbox(es)" in results[0].detail


def test_a_backup_older_than_26_hours_fails():
    """A last successful backup older than 26 hours is red, and the fix says it is too old."""
    old = {**SUCCESS, "finished": NOW - (MAX_AGE_HOURS * 3600 + 60)}
    [result] = judge(status(last_success=old))
    assert result.status == FAIL and "older than 26 h" in result.fix


def test_a_failed_last_run_fails_even_after_a_recent_success():
    """A failed last run is red even after a recent success, and the status shows its error."""
    failed = {"started": NOW - 120, "finished": NOW - 60, "result": "failed", "error": "the backup target x cannot be reached"}
    results = judge(status(last_success=SUCCESS, last_run=failed))
    assert [r.status for r in results] == [OK, FAIL]
    assert "cannot be reached" in render_status(status(last_success=SUCCESS, last_run=failed), results)


def test_the_backup_stage_script_is_valid_bash(prod_settings):
    """The rendered backup stage script parses as bash."""
    script = render_backup_stage(prod_settings.backup_inputs)
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
