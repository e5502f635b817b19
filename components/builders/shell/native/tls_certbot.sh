# shellcheck shell=bash
# native/tls_certbot.sh: the end of the native `tls` stage with tlsMode acme (no dane): certbot's own
# lineage, its key made and renewed by certbot. Rendered after native/tls.sh, whose functions it uses.
# From the header: CERT_NAME, CERT_DIR, CERT_NAMES (array), ACME_DIRECTORY, ACME_EMAIL.
# shellcheck disable=SC2154  # PENDING is set by lib/prelude.sh
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----
# a certbot run killed half-way can leave a lineage without its certificate: start that one afresh
if [ -e "/etc/letsencrypt/renewal/$CERT_NAME.conf" ] && ! openssl x509 -noout -in "$CERT_DIR/fullchain.pem" 2>/dev/null; then
  certbot delete --non-interactive --cert-name "$CERT_NAME" || rm -f "/etc/letsencrypt/renewal/$CERT_NAME.conf"
fi
names=()
for name in "${CERT_NAMES[@]}"; do names+=(-d "$name"); done
certbot certonly --non-interactive --agree-tos --webroot -w /var/www/acme \
  --cert-name "$CERT_NAME" --keep-until-expiring --expand \
  --server "$ACME_DIRECTORY" -m "$ACME_EMAIL" "${names[@]}" \
  --deploy-hook "systemctl reload postfix dovecot nginx 2>/dev/null || true"
apply_nginx
rm -f "$PENDING"
