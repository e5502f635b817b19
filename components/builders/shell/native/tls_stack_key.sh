# shellcheck shell=bash
# native/tls_stack_key.sh: the end of the native `tls` stage with dane and tlsMode acme: the ACME server
# certifies the key the stack owns (on stdin as TLS_PRIVATE_KEY), which the TLSA records pin, and our own
# timer renews the certificate with that same key. Rendered after native/tls.sh, whose functions it uses
# (put_file, apply_nginx, reload_tls_readers), and before native/tls_certbot.sh, which it never reaches.
# From the header: CERT_NAME, CERT_DIR, CERT_NAMES (array), ACME_DIRECTORY, ACME_EMAIL, RENEW_TOOL.
# shellcheck disable=SC2154  # changed and PENDING are set by lib/prelude.sh
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

# render_renewal: the program that keeps the stack's key certified (TLS_MODE acme-stack-key), run by this
# stage and then daily by its timer. It gets a certificate when there is none, when it is not for the key
# or misses a name, or when it ends within 30 days; a CSR of the key goes to certbot, whose output files
# must not exist yet (a fresh folder each time); then what serves the certificate reloads it, and slapd's
# copy (ldapMode local) is refreshed. Every run then retires certbot's own lineage from before dane, once
# nothing reads it any more.
render_renewal() {
  cat <<RENEW
#!/bin/bash
# ceres-mail: keeps the certificate of the key the stack owns (dane) valid, with that key (rendered by the tls stage)
set -euo pipefail
cert_dir=$(printf '%q' "$CERT_DIR")
names=($(printf '%q ' "${CERT_NAMES[@]}"))
acme_directory=$(printf '%q' "$ACME_DIRECTORY")
acme_email=$(printf '%q' "$ACME_EMAIL")
lineage=$(printf '%q' "$CERT_NAME")
RENEW
  cat <<'RENEW'
# certbot's own lineage (tlsMode acme before dane) renews a key no TLSA names: it goes, but only once no
# configuration names its files. Deleted while Postfix, Dovecot or an nginx server still read it, their next
# reload would fail; the mail stage, which runs after the tls stage, moves Postfix and Dovecot to the stack's
# key, and the next run of this program (daily) deletes the lineage.
retire_lineage() {
  [ -e "/etc/letsencrypt/renewal/$lineage.conf" ] || return 0
  if grep -rqsF "/etc/letsencrypt/live/$lineage/" /etc/postfix /etc/dovecot /etc/nginx; then return 0; fi
  certbot delete --non-interactive --cert-name "$lineage"
}
fits() {
  local cert=$cert_dir/fullchain.pem name
  [ -s "$cert" ] && openssl x509 -in "$cert" -noout -checkend 2592000 >/dev/null || return 1
  [ "$(openssl x509 -in "$cert" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" \
    = "$(openssl pkey -in "$cert_dir/privkey.pem" -pubout -outform DER | sha256sum)" ] || return 1
  for name in "${names[@]}"; do
    openssl x509 -in "$cert" -noout -checkhost "$name" | grep -q ' does match ' || return 1
  done
}
if fits; then retire_lineage; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
san=$(printf 'DNS:%s,' "${names[@]}")
openssl req -new -key "$cert_dir/privkey.pem" -subj "/CN=${names[0]}" -addext "subjectAltName=${san%,}" \
  -outform DER -out "$work/csr.der"
if [ -s /etc/ceres-mail/acme-ca.pem ]; then export REQUESTS_CA_BUNDLE=/etc/ceres-mail/acme-ca.pem; fi
certbot certonly --non-interactive --agree-tos --webroot -w /var/www/acme --csr "$work/csr.der" \
  --cert-path "$work/cert.pem" --fullchain-path "$work/fullchain.pem" --chain-path "$work/chain.pem" \
  --server "$acme_directory" -m "$acme_email"
install -m 0644 -o root -g root "$work/fullchain.pem" "$cert_dir/fullchain.pem.new"
mv -f "$cert_dir/fullchain.pem.new" "$cert_dir/fullchain.pem"
echo "ceres-mail: certified the stack's key for ${names[*]} until $(openssl x509 -in "$cert_dir/fullchain.pem" -noout -enddate | cut -d= -f2)"
for service in postfix dovecot nginx; do
  if systemctl is-active --quiet "$service"; then systemctl reload "$service"; fi
done
# slapd (ldapMode local) serves its own copy, its key readable by its group
if [ -d /etc/ldap/tls ]; then
  install -m 0644 -o root -g openldap "$cert_dir/fullchain.pem" /etc/ldap/tls/fullchain.pem
  install -m 0640 -o root -g openldap "$cert_dir/privkey.pem" /etc/ldap/tls/privkey.pem
  systemctl try-restart slapd
fi
retire_lineage
RENEW
}
# render_renewal_units: its daily timer (a random hour, so many hosts do not ask the ACME server at once)
render_renewal_units() {
  put_file /etc/systemd/system/ceres-mail-tls-renew.service 0644 root:root <<UNIT
[Unit]
Description=ceres-mail: renew the certificate of the stack's key
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=$RENEW_TOOL
UNIT
  put_file /etc/systemd/system/ceres-mail-tls-renew.timer 0644 root:root <<'UNIT'
[Unit]
Description=ceres-mail: renew the certificate of the stack's key daily

[Timer]
OnCalendar=daily
RandomizedDelaySec=12h
Persistent=true

[Install]
WantedBy=timers.target
UNIT
  systemctl daemon-reload
  systemctl enable --quiet --now ceres-mail-tls-renew.timer
}
# dane: the ACME server certifies the key the stack owns, which the TLSA records pin (published before this
# stage runs). certbot certifies a CSR of it and keeps no renewal of its own for that: our timer renews it,
# with the same key. A lineage certbot made before (tlsMode acme without dane) would go on renewing a key
# no TLSA names: the renewal program deletes it once nothing reads it (render_renewal); its hook that copied
# it for slapd goes now.
if [ "$TLS_MODE" = acme-stack-key ]; then
  # shellcheck disable=SC2154  # set by the secrets reader
  printf '%s\n' "$TLS_PRIVATE_KEY" | put_file "$CERT_DIR/privkey.pem" 0600 root:root
  # the hook would copy certbot's certificate over slapd's copy of the stack key's: the renewal refreshes that copy
  rm -f /etc/letsencrypt/renewal-hooks/deploy/ceres-mail-slapd
  render_renewal | put_file "$RENEW_TOOL" 0755 root:root
  render_renewal_units
  "$RENEW_TOOL"
  apply_nginx
  if [ "$changed" = 1 ] || [ -e "$PENDING" ]; then reload_tls_readers; fi
  rm -f "$PENDING"
  exit 0
fi
