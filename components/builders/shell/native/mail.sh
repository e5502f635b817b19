# shellcheck shell=bash
# native/mail.sh: the native stack's `mail` stage: mailbox, aliases, Postfix, Dovecot, rspamd DKIM signing.
# Rendered after the header, lib/strict.sh, lib/prelude.sh (put_file, changed, PENDING) and lib/secrets.sh
# (MAILBOX_PASSWORD, DKIM_PRIVATE_KEY).
# From the header: STAGE, DOMAIN, MAIL_HOST, MAIL_DOMAINS (array), MAILBOX, ALIASES (array),
# DKIM_SELECTOR, CERT_DIR, SECRETS (array), MESSAGE_SIZE_LIMIT, VMAIL.
# A template: install_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

# shellcheck disable=SC2154  # MAILBOX_PASSWORD and DKIM_PRIVATE_KEY are set by the secrets reader
echo "== mailbox $MAILBOX"
getent group vmail >/dev/null || groupadd --system --gid 5000 vmail
getent passwd vmail >/dev/null || useradd --system --uid 5000 --gid vmail --home-dir "$VMAIL" --shell /usr/sbin/nologin vmail
install -d -m 0750 -o vmail -g vmail "$VMAIL"
# Keep the stored hash while the password is unchanged: a fresh salt would rewrite the file every run.
hash=$(awk -F: -v user="$MAILBOX" '$1 == user { print $2 }' /etc/dovecot/ceres-users 2>/dev/null || true)
crypt=${hash#"{SHA512-CRYPT}"}
salt=$(printf '%s' "$crypt" | cut -d'$' -f3)
if [ -z "$hash" ] || [ "$(openssl passwd -6 -salt "$salt" -stdin <<<"$MAILBOX_PASSWORD")" != "$crypt" ]; then
  hash="{SHA512-CRYPT}$(openssl passwd -6 -stdin <<<"$MAILBOX_PASSWORD")"
fi
local_part=${MAILBOX%@*}
mailbox_domain=${MAILBOX#*@}
printf '%s:%s:5000:5000::%s/%s/%s::\n' "$MAILBOX" "$hash" "$VMAIL" "$mailbox_domain" "$local_part" \
  | put_file /etc/dovecot/ceres-users 0640 root:dovecot

echo "== postfix"
printf '%s OK\n' "$MAILBOX" | put_file /etc/postfix/ceres-mailboxes 0644 root:root
for alias in "${ALIASES[@]}"; do printf '%s %s\n' "$alias" "$MAILBOX"; done | put_file /etc/postfix/ceres-aliases 0644 root:root
printf '%s %s\n' "$MAILBOX" "$MAILBOX" | put_file /etc/postfix/ceres-senders 0644 root:root
for map in ceres-mailboxes ceres-aliases ceres-senders; do
  [ /etc/postfix/$map.db -nt /etc/postfix/$map ] || postmap /etc/postfix/$map
done
{
  echo "myhostname = $MAIL_HOST"
  echo "mydomain = $DOMAIN"
  echo "myorigin = \$mydomain"
  echo "mydestination = localhost"
  echo "inet_interfaces = all"
  echo "inet_protocols = all"
  echo "virtual_mailbox_domains = ${MAIL_DOMAINS[*]}"
  echo "virtual_mailbox_maps = hash:/etc/postfix/ceres-mailboxes"
  echo "virtual_alias_maps = hash:/etc/postfix/ceres-aliases"
  echo "virtual_transport = lmtp:unix:private/dovecot-lmtp"
  echo "smtpd_tls_cert_file = $CERT_DIR/fullchain.pem"
  echo "smtpd_tls_key_file = $CERT_DIR/privkey.pem"
  echo "smtpd_tls_security_level = may"
  echo "smtpd_tls_protocols = >=TLSv1.2"
  echo "smtpd_tls_mandatory_protocols = >=TLSv1.2"
  echo "smtp_tls_security_level = may"
  echo "smtp_tls_protocols = >=TLSv1.2"
  echo "smtpd_sasl_type = dovecot"
  echo "smtpd_sasl_path = private/auth"
  echo "smtpd_sasl_auth_enable = no"
  echo "smtpd_tls_auth_only = yes"
  echo "smtpd_helo_required = yes"
  echo "smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination"
  echo "smtpd_recipient_restrictions = permit_sasl_authenticated, reject_unauth_destination"
  echo "smtpd_sender_login_maps = hash:/etc/postfix/ceres-senders"
  echo "smtpd_milters = inet:127.0.0.1:11332"
  echo "non_smtpd_milters = inet:127.0.0.1:11332"
  echo "milter_default_action = tempfail"  # never send unsigned: wait for rspamd rather than skip it
  echo "message_size_limit = $MESSAGE_SIZE_LIMIT"
  echo "smtpd_recipient_limit = 100"
  echo "smtpd_client_recipient_rate_limit = 200"
  echo "anvil_rate_time_unit = 60s"
} >/tmp/ceres-postfix-settings
postfix_state() { { postconf -n; postconf -M; postconf -P; } | sha256sum; }
before=$(postfix_state)
xargs -d '\n' postconf -e </tmp/ceres-postfix-settings
rm -f /tmp/ceres-postfix-settings
postconf -M submission/inet="submission inet n - y - - smtpd"
postconf -P \
  "submission/inet/syslog_name=postfix/submission" \
  "submission/inet/smtpd_tls_security_level=encrypt" \
  "submission/inet/smtpd_sasl_auth_enable=yes" \
  "submission/inet/smtpd_client_restrictions=permit_sasl_authenticated,reject" \
  "submission/inet/smtpd_sender_restrictions=reject_sender_login_mismatch"
if [ "$(postfix_state)" != "$before" ]; then changed=1; touch "$PENDING"; echo "updated postfix settings"; fi

echo "== dovecot"
put_file /etc/dovecot/conf.d/99-ceres-mail.conf 0644 root:root <<CONF
# ceres-mail: IMAPS only, LMTP delivery, SASL for Postfix (rendered by the stack)
protocols = imap lmtp
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cert = <$CERT_DIR/fullchain.pem
ssl_key = <$CERT_DIR/privkey.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%u /etc/dovecot/ceres-users
}
userdb {
  driver = passwd-file
  args = username_format=%u /etc/dovecot/ceres-users
}
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = 993
    ssl = yes
  }
}
service lmtp {
  unix_listener /var/spool/postfix/private/dovecot-lmtp {
    mode = 0600
    user = postfix
    group = postfix
  }
}
service auth {
  unix_listener /var/spool/postfix/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
CONF

echo "== rspamd: DKIM signing as $DKIM_SELECTOR._domainkey"
printf '%s\n' "$DKIM_PRIVATE_KEY" | put_file "/var/lib/rspamd/dkim/$DKIM_SELECTOR.key" 0640 root:_rspamd
put_file /etc/rspamd/local.d/dkim_signing.conf 0644 root:root <<CONF
# ceres-mail: one key for every mail domain, signing what authenticated users send
path = "/var/lib/rspamd/dkim/\$selector.key";
selector = "$DKIM_SELECTOR";
sign_authenticated = true;
sign_local = true;
use_domain = "header";
allow_username_mismatch = false;
CONF

echo "== services"
systemctl enable --quiet postfix dovecot rspamd redis-server
if [ "$changed" = 1 ]; then
  systemctl restart redis-server rspamd dovecot postfix
  rm -f "$PENDING"
else
  for service in redis-server rspamd dovecot postfix; do
    systemctl is-active --quiet "$service" || systemctl start "$service"
  done
fi
# ready means signing: wait (bounded) for rspamd's milter to listen before saying so
for _ in $(seq 120); do
  if (: </dev/tcp/127.0.0.1/11332) 2>/dev/null; then break; fi
  sleep 0.5
done
(: </dev/tcp/127.0.0.1/11332) 2>/dev/null || { echo "rspamd's milter does not listen on 127.0.0.1:11332" >&2; exit 1; }
echo "ceres-mail: $MAIL_HOST ready for ${MAIL_DOMAINS[*]}"
