# shellcheck shell=bash
# common/backup.sh: the `backup` stage of both mail stacks, after all the others (components/builders/backup.py).
# Debian's restic, the host's backup program ceres-mail-backup (backup_tool.py, which arrives on stdin as
# BACKUP_TOOL_PROGRAM with its sha256 in the header), its config.json, the repository's credentials as root-only
# files, the repository itself (made when it does not exist; a repository this stack's password does not open
# fails the stage), and a systemd timer that runs a backup on SCHEDULE. Rendered after the header,
# lib/strict.sh, lib/prelude.sh (put_file) and lib/secrets.sh (BACKUP_PASSWORD, and BACKUP_SSH_KEY for sftp or
# BACKUP_S3_ACCESS_KEY and BACKUP_S3_SECRET_KEY for s3).
# From the header: STAGE, BACKUP_KIND, REPOSITORY, KNOWN_HOSTS, SCHEDULE, CONFIG_DIR, CONFIG_JSON, BACKUP_TOOL,
# TOOL_SHA256, PACKAGES (array: restic), SECRETS (array).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE: restic to $REPOSITORY"
if ! systemd-analyze calendar "$SCHEDULE" >/dev/null 2>&1; then
  echo "backupSchedule: systemd does not take '$SCHEDULE' as a calendar expression (see systemd.time(7))" >&2
  exit 2
fi
preseed() { :; }
# ---- include lib/apt_install_missing.sh ----

# the program, and only the text this stage was rendered with
# shellcheck disable=SC2154  # set by the secrets reader
printf '%s\n' "$BACKUP_TOOL_PROGRAM" | put_file "$BACKUP_TOOL" 0755 root:root
if [ "$(sha256sum <"$BACKUP_TOOL" | cut -d' ' -f1)" != "$TOOL_SHA256" ]; then
  echo "the backup program on stdin is not the one this stage was rendered with (sha256 $TOOL_SHA256)" >&2
  exit 2
fi

install -d -m 0700 -o root -g root "$CONFIG_DIR"
printf '%s\n' "$CONFIG_JSON" | put_file "$CONFIG_DIR/config.json" 0600 root:root
# shellcheck disable=SC2154  # set by the secrets reader
printf '%s\n' "$BACKUP_PASSWORD" | put_file "$CONFIG_DIR/password" 0600 root:root
if [ "$BACKUP_KIND" = sftp ]; then
  # shellcheck disable=SC2154  # set by the secrets reader
  printf '%s\n' "$BACKUP_SSH_KEY" | put_file "$CONFIG_DIR/ssh_key" 0600 root:root
  printf '%s\n' "$KNOWN_HOSTS" | put_file "$CONFIG_DIR/known_hosts" 0644 root:root
  rm -f "$CONFIG_DIR/s3.env"
else
  # shellcheck disable=SC2154  # set by the secrets reader
  printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$BACKUP_S3_ACCESS_KEY" "$BACKUP_S3_SECRET_KEY" \
    | put_file "$CONFIG_DIR/s3.env" 0600 root:root
  rm -f "$CONFIG_DIR/ssh_key" "$CONFIG_DIR/known_hosts"
fi

put_file /etc/systemd/system/ceres-mail-backup.service 0644 root:root <<UNIT
[Unit]
Description=ceres-mail backup to $REPOSITORY (restic)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=$BACKUP_TOOL run
Nice=10
IOSchedulingClass=idle
TimeoutStartSec=12h
UNIT
put_file /etc/systemd/system/ceres-mail-backup.timer 0644 root:root <<UNIT
[Unit]
Description=ceres-mail backup on $SCHEDULE

[Timer]
OnCalendar=$SCHEDULE
Persistent=true
RandomizedDelaySec=10min

[Install]
WantedBy=timers.target
UNIT
# shellcheck disable=SC2154  # changed: set by lib/prelude.sh
if [ "$changed" = 1 ]; then systemctl daemon-reload; fi
systemctl enable --quiet ceres-mail-backup.timer
if [ "$changed" = 1 ]; then systemctl restart ceres-mail-backup.timer; else systemctl start ceres-mail-backup.timer; fi

# the repository: made once; a run of this stage against one that exists only checks it opens. One this
# password does not open fails the stage (exit 3). A target that cannot be reached yet (the first pulumi up,
# before the backup host authorized this host's key) does not: the first run makes the repository, and
# `mailctl backup status` reports the missing backup until then.
init_status=0
"$BACKUP_TOOL" init || init_status=$?
if [ "$init_status" = 4 ]; then
  echo "WARNING: backups cannot reach $REPOSITORY yet; for sftp, authorize this host's key there" \
    "(pulumi stack output backupSshPublicKey)" >&2
elif [ "$init_status" != 0 ]; then
  exit "$init_status"
fi
rm -f "$PENDING"
echo "backups: $SCHEDULE to $REPOSITORY"
