# shellcheck shell=bash
# native/fail2ban.sh: the native stack's `fail2ban` stage, the last of its install: Debian's fail2ban reads the
# journal and bans an address that fails to log in MAX_RETRY times within FIND_MINUTES, from every port, for
# BAN_MINUTES (nftables rules that reject). Jails: postfix-sasl (SMTP AUTH on 25, 465, 587), dovecot (IMAPS),
# sshd, and roundcube-auth with the webmail. NEVER_BANNED (loopback, adminCidrs, the cluster's networks) are
# never banned. Rendered after the header, lib/strict.sh and lib/prelude.sh (put_file).
# From the header: STAGE, MAX_RETRY, BAN_MINUTES, FIND_MINUTES, NEVER_BANNED (array), WEBMAIL (yes|no).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE: $MAX_RETRY failed logins in $FIND_MINUTES min ban an address for $BAN_MINUTES min"
{
  cat <<JAIL
# ceres-mail: written by the fail2ban stage on every pulumi up; change the stack, not this file
[DEFAULT]
# Debian 12 logs to the journal (no /var/log/auth.log or mail.log to tail)
backend = systemd
banaction = nftables-allports
banaction_allports = nftables-allports
maxretry = $MAX_RETRY
findtime = ${FIND_MINUTES}m
bantime = ${BAN_MINUTES}m
ignoreip = ${NEVER_BANNED[*]}

[sshd]
enabled = true

[postfix-sasl]
enabled = true
# Debian runs Postfix as the instance unit postfix@-
journalmatch = _SYSTEMD_UNIT=postfix@-.service

[dovecot]
enabled = true
JAIL
  if [ "$WEBMAIL" = yes ]; then
    cat <<JAIL

[roundcube-auth]
enabled = true
JAIL
  fi
} | put_file /etc/fail2ban/jail.d/ceres-mail.local 0644 root:root
fail2ban-client -t >/dev/null
systemctl enable --quiet fail2ban
# shellcheck disable=SC2154  # changed: set by lib/prelude.sh
if [ "$changed" = 1 ] || [ -e "$PENDING" ] || ! systemctl is-active --quiet fail2ban; then
  systemctl restart fail2ban
fi
# the jails are up once the server answers for each
for jail in sshd postfix-sasl dovecot $([ "$WEBMAIL" = yes ] && echo roundcube-auth); do
  for _ in $(seq 1 30); do
    if fail2ban-client status "$jail" >/dev/null 2>&1; then continue 2; fi
    sleep 1
  done
  echo "fail2ban's jail $jail did not start" >&2
  journalctl -u fail2ban --no-pager -n 20 >&2
  exit 1
done
rm -f "$PENDING"
echo "fail2ban: jails sshd, postfix-sasl, dovecot$([ "$WEBMAIL" = yes ] && echo ", roundcube-auth"); never banned: ${NEVER_BANNED[*]}"
