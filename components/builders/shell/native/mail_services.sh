# shellcheck shell=bash
# shellcheck disable=SC2154  # before, changed, postfix_state: set by native/mail.sh, rendered first
# native/mail_services.sh: the end of the native stack's `mail` stage: whether Postfix's settings changed,
# Dovecot, rspamd DKIM signing, then the services (re)started as the stage's changes need. Rendered after
# native/mail.sh and, with LDAP, native/mail_ldap.sh, whose Postfix settings it counts with the rest.
# From the header: the same as native/mail.sh (CERT_DIR, STRICT_CIPHERS, IMAPS_PORT, DKIM_SELECTOR,
# DKIM_PRIVATE_KEY from the secrets, MAIL_HOST, MAIL_DOMAINS).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----
if [ "$(postfix_state)" != "$before" ]; then changed=1; touch "$PENDING"; echo "updated postfix settings"; fi

echo "== dovecot"
# Debian's 10-auth.conf asks the system's users first (PAM): every mailbox login would fail there and log it
# with the client's address, which fail2ban counts, so good logins would get a client banned. The stack's
# users are the only ones: that include is commented out (put_file: written only the first time).
sed 's/^!include auth-system.conf.ext/#!include auth-system.conf.ext  # ceres-mail: mailboxes only/' \
  /etc/dovecot/conf.d/10-auth.conf | put_file /etc/dovecot/conf.d/10-auth.conf 0644 root:root
put_file /etc/dovecot/conf.d/99-ceres-mail.conf 0644 root:root <<CONF
# ceres-mail: IMAPS only, LMTP delivery, SASL for Postfix (rendered by the stack)
protocols = imap lmtp
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cipher_list = $STRICT_CIPHERS
ssl_prefer_server_ciphers = no
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
    port = $IMAPS_PORT
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
# what changes here needs rspamd alone: a DKIM rotation's switch restarts nothing else
changed_before_rspamd=$changed
changed=0
printf '%s\n' "$DKIM_PRIVATE_KEY" | put_file "/var/lib/rspamd/dkim/$DKIM_SELECTOR.key" 0640 root:_rspamd
# only the signing key lives on the host: a rotated-out key is gone from here with the switch
for retired in /var/lib/rspamd/dkim/*.key; do
  if [ -e "$retired" ] && [ "$retired" != "/var/lib/rspamd/dkim/$DKIM_SELECTOR.key" ]; then
    rm -f "$retired"
    echo "removed $retired"
    changed=1
  fi
done
put_file /etc/rspamd/local.d/dkim_signing.conf 0644 root:root <<CONF
# ceres-mail: one key for every mail domain, signing what authenticated users send
path = "/var/lib/rspamd/dkim/\$selector.key";
selector = "$DKIM_SELECTOR";
sign_authenticated = true;
sign_local = true;
use_domain = "header";
allow_username_mismatch = false;
CONF
rspamd_changed=$changed
changed=$changed_before_rspamd

echo "== services"
systemctl enable --quiet postfix dovecot rspamd redis-server
if [ "$changed" = 1 ]; then
  systemctl restart redis-server rspamd dovecot postfix
  rm -f "$PENDING"
elif [ "$rspamd_changed" = 1 ]; then
  systemctl restart rspamd
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
