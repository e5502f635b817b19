# shellcheck shell=bash
# native/mail_ldap.sh: with ldapMode local or external, the part of the `mail` stage that gives every person
# of the directory a mailbox: a person under LDAP_USERS_DN (inetOrgPerson) whose `mail` is in one of the
# stack's mail domains logs in to IMAP and submission with that address and the directory's password, may
# send as their own addresses only, and receives mail at them. The no-reply mailbox stays a local account
# (passwd-file, the stack's password); it and its aliases are never directory logins.
# Rendered between native/mail.sh (which set Postfix's own settings and master.cf entries) and
# native/mail_services.sh (which counts what changed in Postfix and restarts what needs it).
# From the header: LDAP_URI (ldapi:// of the local slapd, or the external directory's URL), LDAP_START_TLS
# (yes for an ldap:// URL: StartTLS required), LDAP_BIND_DN, LDAP_USERS_DN, and native/mail.sh's MAIL_DOMAINS,
# MAILBOX, ALIASES, VMAIL, SUBMISSION_SERVICES; LDAP_BIND_PASSWORD from the secrets.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== directory mailboxes: the people under $LDAP_USERS_DN"
# dovecot_quoted VALUE: VALUE as a quoted Dovecot setting (an operator's bind password may hold anything)
dovecot_quoted() {
  local value=${1//\\/\\\\}
  printf '"%s"' "${value//\"/\\\"}"
}
# Who may log in from the directory: an address in a mail domain of the stack, but never the no-reply
# mailbox or one of its aliases (those belong to the stack, whatever a directory entry claims)
logins=()
for domain in "${MAIL_DOMAINS[@]}"; do logins+=("*@$domain"); done
for reserved in "$MAILBOX" "${ALIASES[@]}"; do logins+=("!$reserved"); done
# shellcheck disable=SC2154  # LDAP_BIND_PASSWORD is set by the secrets reader
put_file /etc/dovecot/ceres-ldap.conf.ext 0600 root:root <<CONF
# ceres-mail: the directory's people (rendered by the stack; holds the bind password: root only)
uris = $LDAP_URI
tls = $LDAP_START_TLS
tls_require_cert = demand
tls_ca_cert_file = /etc/ssl/certs/ca-certificates.crt
ldap_version = 3
dn = $LDAP_BIND_DN
dnpass = $(dovecot_quoted "$LDAP_BIND_PASSWORD")
# the password is checked by binding as the person: the service account never reads a password hash
auth_bind = yes
base = $LDAP_USERS_DN
scope = subtree
deref = never
pass_filter = (&(objectClass=inetOrgPerson)(mail=%u))
# the login stays the address logged in with (Dovecot's default would make it the entry's uid)
pass_attrs = =user=%u
user_filter = (&(objectClass=inetOrgPerson)(mail=%u))
user_attrs = =uid=5000,=gid=5000,=home=$VMAIL/%d/%n
iterate_filter = (objectClass=inetOrgPerson)
iterate_attrs = mail=user
CONF
# after 99-ceres-mail.conf (the no-reply mailbox's passwd-file stays first)
put_file /etc/dovecot/conf.d/99-ceres-mail.ldap.conf 0644 root:root <<CONF
# ceres-mail: the directory's people, after the no-reply mailbox (rendered by the stack)
passdb {
  driver = ldap
  args = /etc/dovecot/ceres-ldap.conf.ext
  username_filter = ${logins[*]}
}
userdb {
  driver = ldap
  args = /etc/dovecot/ceres-ldap.conf.ext
}
CONF

# One table answers both questions Postfix asks the directory: is this a mailbox (virtual_mailbox_maps), and
# whose is this sender address (smtpd_sender_login_maps: the person's addresses, which are its logins).
# Through proxymap: smtpd runs chrooted, where neither the ldapi socket nor the CA store is.
put_file /etc/postfix/ceres-ldap-people.cf 0640 root:postfix <<CONF
# ceres-mail: the directory's people (rendered by the stack; holds the bind password: root and postfix only)
server_host = $LDAP_URI
version = 3
start_tls = $LDAP_START_TLS
tls_require_cert = yes
tls_ca_cert_file = /etc/ssl/certs/ca-certificates.crt
bind = yes
bind_dn = $LDAP_BIND_DN
bind_pw = $LDAP_BIND_PASSWORD
search_base = $LDAP_USERS_DN
scope = sub
query_filter = (&(objectClass=inetOrgPerson)(mail=%s))
result_attribute = mail
domain = ${MAIL_DOMAINS[*]}
CONF
# the aliases own themselves: no one logs in as one, so no one may send as one
for alias in "${ALIASES[@]}"; do printf '%s %s\n' "$alias" "$alias"; done | put_file /etc/postfix/ceres-reserved-senders 0644 root:root
[ /etc/postfix/ceres-reserved-senders.db -nt /etc/postfix/ceres-reserved-senders ] || postmap /etc/postfix/ceres-reserved-senders
people=proxy:ldap:/etc/postfix/ceres-ldap-people.cf
postconf -e "proxy_read_maps = $(postconf -dh proxy_read_maps) $people"
# The stack's own tables first, then the directory. Set per smtpd service (master.cf), not in main.cf, where
# native/mail.sh writes its own: rewriting main.cf twice would let an smtpd started in between run without
# the directory (and refuse its people's mail) until it exits.
for service in smtp "${SUBMISSION_SERVICES[@]}"; do
  postconf -P "$service/inet/virtual_mailbox_maps=hash:/etc/postfix/ceres-mailboxes,$people"
done
for service in "${SUBMISSION_SERVICES[@]}"; do
  postconf -P "$service/inet/smtpd_sender_login_maps=hash:/etc/postfix/ceres-senders,hash:/etc/postfix/ceres-reserved-senders,$people"
done
