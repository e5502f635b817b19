# shellcheck shell=bash
# shellcheck disable=SC2034  # before: read by native/mail_services.sh, which counts Postfix's changes
# native/mail.sh: the native stack's `mail` stage: mailbox, aliases, Postfix, Dovecot, rspamd DKIM signing.
# This template is its first part (the mailbox, Postfix's maps and settings); native/mail_services.sh is the
# rest, and with LDAP native/mail_ldap.sh comes in between (cut there so that a stage without LDAP renders
# exactly as before the directory existed: an existing stack's mail stage does not run again).
# Rendered after the header, lib/strict.sh, lib/prelude.sh (put_file, changed, PENDING) and lib/secrets.sh
# (MAILBOX_PASSWORD, DKIM_PRIVATE_KEY).
# From the header: STAGE, DOMAIN, MAIL_HOST, MAIL_DOMAINS (array), MAILBOX, ALIASES (array),
# DKIM_SELECTOR, CERT_DIR, SECRETS (array), MESSAGE_SIZE_LIMIT, VMAIL, STRICT_CIPHERS,
# SUBMISSION_SERVICES (array: Postfix service names), IMPLICIT_TLS_SERVICES (array: those of them with TLS
# at connect), IMAPS_PORT, INET_PROTOCOLS, SMTP_BIND_ADDRESS and SMTP_BIND_ADDRESS6 (empty, or the gateway
# tunnel's addresses: set even when empty, so a stack that leaves gatewayMode wireguard sends from its own
# address again), and for lib/data_disk.sh (included first): DATA_MOUNT, DATA_DEVICE, DATA_LABEL.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----
# ---- include lib/data_disk.sh ----

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
postfix_state() { { postconf -n; postconf -M; postconf -P; } | sha256sum; }
before=$(postfix_state)
# Every setting the stack relies on is set here, also those Debian's postinst writes on a fresh install
# (mynetworks, mailbox_size_limit, recipient_delimiter, relayhost, aliases): a postinst killed half-way
# leaves them out, and nothing would put them back.
{
  echo "myhostname = $MAIL_HOST"
  echo "mydomain = $DOMAIN"
  echo "myorigin = \$mydomain"
  echo "mydestination = localhost"
  echo "mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128"
  echo "relayhost ="
  echo "alias_maps = hash:/etc/aliases"
  echo "alias_database = hash:/etc/aliases"
  echo "mailbox_size_limit = 0"
  echo "recipient_delimiter = +"
  echo "inet_interfaces = all"
  echo "inet_protocols = $INET_PROTOCOLS"
  # behind a gateway, outbound mail leaves from the tunnel address, which the gateway makes its public one
  echo "smtp_bind_address = $SMTP_BIND_ADDRESS"
  echo "smtp_bind_address6 = $SMTP_BIND_ADDRESS6"
  echo "virtual_mailbox_domains = ${MAIL_DOMAINS[*]}"
  echo "virtual_mailbox_maps = hash:/etc/postfix/ceres-mailboxes"
  echo "virtual_alias_maps = hash:/etc/postfix/ceres-aliases"
  echo "virtual_transport = lmtp:unix:private/dovecot-lmtp"
  echo "smtpd_tls_cert_file = $CERT_DIR/fullchain.pem"
  echo "smtpd_tls_key_file = $CERT_DIR/privkey.pem"
  # port 25 stays opportunistic and wide (RFC 7435): a sender that cannot do our best TLS still delivers
  echo "smtpd_tls_security_level = may"
  echo "smtpd_tls_protocols = >=TLSv1.2"
  # the submission ports require TLS, and get only AEAD suites with forward secrecy
  echo "smtpd_tls_mandatory_protocols = >=TLSv1.2"
  echo "smtpd_tls_mandatory_ciphers = high"
  echo "tls_high_cipherlist = $STRICT_CIPHERS"
  echo "tls_preempt_cipherlist = no"
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
} | xargs -d '\n' postconf -e
# Submission: STARTTLS on 587 (RFC 6409) and implicit TLS on 465 (RFC 8314), the same rules on both:
# TLS before anything else, SASL only there, a client may send only as the address it logged in as.
for service in "${SUBMISSION_SERVICES[@]}"; do
  postconf -M "$service/inet=$service inet n - y - - smtpd"
  postconf -P \
    "$service/inet/syslog_name=postfix/$service" \
    "$service/inet/smtpd_tls_security_level=encrypt" \
    "$service/inet/smtpd_sasl_auth_enable=yes" \
    "$service/inet/smtpd_client_restrictions=permit_sasl_authenticated,reject" \
    "$service/inet/smtpd_sender_restrictions=reject_sender_login_mismatch"
done
for service in "${IMPLICIT_TLS_SERVICES[@]}"; do postconf -P "$service/inet/smtpd_tls_wrappermode=yes"; done
