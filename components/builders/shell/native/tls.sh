# shellcheck shell=bash
# native/tls.sh: the native stack's `tls` stage: nginx for ACME http-01 and the MTA-STS policy, then the
# certificate: the one the stack provides, else the shared ACME preparation (the CA bundle of a private
# ACME server); native/tls_stack_key.sh (dane: certbot certifies the stack's key) or native/tls_certbot.sh
# (certbot's own lineage) follows. Rendered after the header, lib/strict.sh,
# lib/prelude.sh and, with a key the stack brings (a provided certificate's, or with dane its own one for
# ACME), lib/secrets.sh (which sets TLS_PRIVATE_KEY).
# From the header: STAGE, TLS_MODE, CERT_NAME, CERT_DIR, CERT_NAMES (array), HTTPS_NAMES (array), ACME_DIRECTORY, ACME_EMAIL,
# ACME_CA_BUNDLE, TLS_CERTIFICATE, MTA_STS_POLICY, STRICT_CIPHERS, HTTP_PORT, HTTPS_PORT, NGINX_TLS; SECRETS (array) with a key
# the stack brings; RENEW_TOOL with TLS_MODE acme-stack-key.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== web: ACME http-01 and MTA-STS"
install -d -m 0755 /var/www/acme /var/www/mta-sts/.well-known
printf '%s' "$MTA_STS_POLICY" | put_file /var/www/mta-sts/.well-known/mta-sts.txt 0644 root:root

render_nginx() {
  cat <<NGINX
# ceres-mail: ACME http-01 for every certificate name, MTA-STS policy over HTTPS (RFC 8461 3.3)
server {
    listen $HTTP_PORT default_server;
    listen [::]:$HTTP_PORT default_server;
    server_name _;
    location /.well-known/acme-challenge/ { root /var/www/acme; }
    location / { return 301 https://\$host\$request_uri; }
}
NGINX
  if [ -s "$CERT_DIR/fullchain.pem" ]; then
    cat <<NGINX
server {
    listen $HTTPS_PORT ssl default_server;
    listen [::]:$HTTPS_PORT ssl default_server;
    server_name ${HTTPS_NAMES[*]};
    include $NGINX_TLS;
    location = /.well-known/mta-sts.txt { root /var/www/mta-sts; default_type text/plain; }
    location / { return 404; }
}
NGINX
  fi
}
# the TLS settings of every HTTPS server of the host (this stage's, the webmail's): the stack's certificate,
# TLS 1.2 and 1.3 with the strict suites, and no HTTP compression over TLS (BREACH)
render_nginx_tls() {
  cat <<NGINX
# ceres-mail: TLS of the HTTPS servers, written by the tls stage
ssl_certificate $CERT_DIR/fullchain.pem;
ssl_certificate_key $CERT_DIR/privkey.pem;
ssl_protocols TLSv1.2 TLSv1.3;
ssl_ciphers $STRICT_CIPHERS;
ssl_prefer_server_ciphers off;
gzip off;
NGINX
}
# apply_nginx: write nginx's site and apply it now (certbot's http-01 needs it before the certificate
# exists). The TLS settings every HTTPS server includes (the webmail's too) name the stack's certificate
# only once it exists: on a host switched between tlsMode acme and provided they keep naming the one
# being served until then, so nginx never refuses its configuration half-way through the switch.
# Whether the stage changed anything stays in `changed`; the pending marker is cleared only at the end of
# the stage, once every service that reads the certificate has been reloaded.
apply_nginx() {
  local site_changed=0 stage_changed=$changed
  changed=0
  if [ -s "$CERT_DIR/fullchain.pem" ]; then render_nginx_tls | put_file "$NGINX_TLS" 0644 root:root; fi
  render_nginx | put_file /etc/nginx/sites-available/ceres-mail 0644 root:root
  site_changed=$changed
  changed=$((stage_changed || site_changed))
  ln -sfn /etc/nginx/sites-available/ceres-mail /etc/nginx/sites-enabled/ceres-mail
  if [ -e /etc/nginx/sites-enabled/default ]; then rm -f /etc/nginx/sites-enabled/default; site_changed=1; fi
  nginx -t -q
  systemctl enable --quiet nginx
  if [ "$site_changed" = 1 ] || [ -e "$PENDING" ] || ! systemctl is-active --quiet nginx; then
    systemctl reload-or-restart nginx
  fi
}
# reload_tls_readers: Postfix and Dovecot read the certificate at start; a running one reloads, and a
# failed reload fails the stage (the marker stays, so the next run tries again)
reload_tls_readers() {
  for service in postfix dovecot; do
    if systemctl is-active --quiet "$service"; then systemctl reload "$service"; fi
  done
}
# a provided certificate needs no http-01: it is in place before nginx is told about it
if [ "$TLS_MODE" = provided ]; then
  echo "== certificate for ${CERT_NAMES[*]}: provided by the stack"
  printf '%s\n' "$TLS_CERTIFICATE" | put_file "$CERT_DIR/fullchain.pem" 0644 root:root
  # shellcheck disable=SC2154  # set by the secrets reader
  printf '%s\n' "$TLS_PRIVATE_KEY" | put_file "$CERT_DIR/privkey.pem" 0600 root:root
  apply_nginx
  if [ "$changed" = 1 ] || [ -e "$PENDING" ]; then reload_tls_readers; fi
  rm -f "$PENDING"
  exit 0
fi

apply_nginx

echo "== certificate for ${CERT_NAMES[*]}"
if [ -n "$ACME_CA_BUNDLE" ]; then
  # a private ACME server: trust its CA for certbot only, also in the renewal timer
  printf '%s\n' "$ACME_CA_BUNDLE" | put_file /etc/ceres-mail/acme-ca.pem 0644 root:root
  printf '[Service]\nEnvironment=REQUESTS_CA_BUNDLE=/etc/ceres-mail/acme-ca.pem\n' \
    | put_file /etc/systemd/system/certbot.service.d/ceres-mail-ca.conf 0644 root:root
  export REQUESTS_CA_BUNDLE=/etc/ceres-mail/acme-ca.pem
fi
