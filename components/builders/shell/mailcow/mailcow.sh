# shellcheck shell=bash
# mailcow/mailcow.sh: the mailcow stack's `mailcow` stage: mailcow.conf with its secrets filled in, the
# certificate when provided, `docker compose up -d`, then wait for mailcow's API. Rendered after the
# header, lib/strict.sh, lib/prelude.sh (put_file, changed, PENDING) and lib/secrets.sh (every
# CONF_SECRETS key, and TLS_PRIVATE_KEY with a provided certificate).
# From the header: STAGE, MAILCOW_DIR, MAIL_HOST, MAILCOW_CONF, CONF_SECRETS (array), TLS_MODE,
# TLS_CERTIFICATE, API_URL, API_WAIT_TRIES, SECRETS (array).
# shellcheck disable=SC2154,SC2164  # `changed` is set by lib/prelude.sh; `cd` runs under lib/strict.sh's `set -e`
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE: $MAILCOW_DIR/mailcow.conf"
cd "$MAILCOW_DIR"
# the rendered file with each secret key's value filled in from stdin
printf '%s' "$MAILCOW_CONF" | while IFS= read -r line; do
  key=${line%%=*}
  case " ${CONF_SECRETS[*]} " in
    *" $key "*) printf '%s=%s\n' "$key" "${!key}" ;;
    *) printf '%s\n' "$line" ;;
  esac
done | put_file "$MAILCOW_DIR/mailcow.conf" 0600 root:root
ln -sfn mailcow.conf .env
placeholder=data/conf/rspamd/override.d/worker-controller-password.inc
[ -e "$placeholder" ] || echo '# Placeholder' >"$placeholder"
install -d -m 0755 data/assets/ssl
if [ "$TLS_MODE" = provided ]; then
  printf '%s\n' "$TLS_CERTIFICATE" | put_file "$MAILCOW_DIR/data/assets/ssl/cert.pem" 0644 root:root
  # shellcheck disable=SC2154  # set by the secrets reader
  printf '%s\n' "$TLS_PRIVATE_KEY" | put_file "$MAILCOW_DIR/data/assets/ssl/key.pem" 0600 root:root
elif [ ! -s data/assets/ssl/cert.pem ]; then
  # a stand-in until acme-mailcow has the real certificate, as generate_config.sh does
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$MAIL_HOST" \
    -keyout data/assets/ssl/key.pem -out data/assets/ssl/cert.pem 2>/dev/null
fi

echo "== $STAGE: docker compose up"
docker compose up -d --remove-orphans --quiet-pull
if [ "$changed" = 1 ] && [ "$TLS_MODE" = provided ]; then
  docker compose restart postfix-mailcow dovecot-mailcow nginx-mailcow
fi
rm -f "$PENDING"

echo "== $STAGE: waiting for mailcow's API"
api_answers() {
  # the key goes to curl on its stdin, never on its command line
  printf 'header = "X-API-Key: %s"\n' "$API_KEY" \
    | curl -fsk --max-time 10 --config - "$API_URL/api/v1/get/status/version" >/dev/null 2>&1
}
for attempt in $(seq "$API_WAIT_TRIES"); do
  if api_answers; then
    echo "ceres-mail: mailcow on $MAIL_HOST answers"
    exit 0
  fi
  if [ $((attempt % 6)) = 0 ]; then echo "  mailcow still starting ($((attempt * 5))s)"; fi
  sleep 5
done
echo "mailcow's API at $API_URL did not answer within $((API_WAIT_TRIES * 5))s; containers:" >&2
docker compose ps >&2 || true
exit 1
