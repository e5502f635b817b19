# shellcheck shell=bash
# native/webmail.sh: the native stack's `webmail` stage (webmail: true), after `mail`: Debian's Roundcube
# (installed by the packages stage) configured by the stack, its SQLite database on the data disk, served by
# nginx and PHP-FPM on https://MAIL_HOST/ with the stack's certificate. Rendered after the header,
# lib/strict.sh, lib/prelude.sh (put_file) and lib/secrets.sh (ROUNDCUBE_DES_KEY).
# From the header: STAGE, MAIL_HOST, NGINX_TLS, HTTPS_PORT, IMAPS_PORT, SUBMISSION_PORT,
# PHP_FPM_SOCKET, ROUNDCUBE_ROOT, ROUNDCUBE_DB, CONTENT_SECURITY_POLICY, SECRETS (array).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE: Roundcube on https://$MAIL_HOST/"
# the database, on the data disk: made once from Roundcube's own schema, brought up to date by every run
# (a Debian upgrade of Roundcube may bring a newer schema; dbconfig-common is told to stay out)
install -d -m 0750 -o www-data -g www-data "$(dirname "$ROUNDCUBE_DB")"
if [ ! -s "$ROUNDCUBE_DB" ]; then
  # made aside and moved in whole: a run killed half-way leaves no half-made database behind
  rm -f "$ROUNDCUBE_DB.new"
  sqlite3 "$ROUNDCUBE_DB.new" </usr/share/roundcube/SQL/sqlite.initial.sql
  chown www-data:www-data "$ROUNDCUBE_DB.new"
  chmod 0640 "$ROUNDCUBE_DB.new"
  mv "$ROUNDCUBE_DB.new" "$ROUNDCUBE_DB"
  echo "made Roundcube's database $ROUNDCUBE_DB"
fi

# the configuration: the whole file, the stack's (Debian's own, with its generated des_key, is replaced)
# shellcheck disable=SC2154  # ROUNDCUBE_DES_KEY is set by the secrets reader
put_file /etc/roundcube/config.inc.php 0640 root:www-data <<PHP
<?php
// ceres-mail: written by the webmail stage on every pulumi up; change the stack, not this file
\$config = [];
\$config['db_dsnw'] = 'sqlite:///$ROUNDCUBE_DB?mode=0640';
// Dovecot and Postfix on this host: the loopback never leaves it, and the certificate names the public host
\$config['imap_host'] = 'ssl://localhost:$IMAPS_PORT';
\$config['imap_conn_options'] = ['ssl' => ['verify_peer' => false, 'verify_peer_name' => false]];
\$config['smtp_host'] = 'tls://localhost:$SUBMISSION_PORT';
\$config['smtp_conn_options'] = ['ssl' => ['verify_peer' => false, 'verify_peer_name' => false]];
// every user sends with their own login, which Postfix allows only as their own address
\$config['smtp_user'] = '%u';
\$config['smtp_pass'] = '%p';
\$config['des_key'] = '$ROUNDCUBE_DES_KEY';
\$config['product_name'] = '$MAIL_HOST';
\$config['skin'] = 'elastic';
\$config['plugins'] = [];
\$config['enable_installer'] = false;
\$config['enable_spellcheck'] = false;
\$config['identities_level'] = 3;
\$config['use_https'] = true;
\$config['session_samesite'] = 'Strict';
\$config['x_frame_options'] = false;
\$config['ip_check'] = true;
// logins, failed ones included, go to the journal as "roundcube": fail2ban's roundcube-auth jail reads them
\$config['log_driver'] = 'syslog';
\$config['syslog_id'] = 'roundcube';
\$config['log_logins'] = true;
PHP
php -l /etc/roundcube/config.inc.php >/dev/null
runuser -u www-data -- /usr/share/roundcube/bin/updatedb.sh --package=roundcube --dir=/usr/share/roundcube/SQL \
  >/dev/null

# nginx: the mail host's own HTTPS server (the tls stage's answers the MTA-STS names); headers on every answer
put_file /etc/nginx/sites-available/ceres-webmail 0644 root:root <<NGINX
# ceres-mail: Roundcube webmail on https://$MAIL_HOST/
server {
    listen $HTTPS_PORT ssl;
    listen [::]:$HTTPS_PORT ssl;
    server_name $MAIL_HOST;
    # the certificate and TLS settings the tls stage writes
    include $NGINX_TLS;
    root $ROUNDCUBE_ROOT;
    index index.php;
    client_max_body_size 25m;
    server_tokens off;
    add_header Strict-Transport-Security "max-age=31536000" always;
    add_header Content-Security-Policy "$CONTENT_SECURITY_POLICY" always;
    add_header X-Frame-Options "SAMEORIGIN" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header Referrer-Policy "same-origin" always;
    location ~ /\\. { return 404; }
    location ^~ /installer { return 404; }
    location ~ \\.php\$ {
        try_files \$uri =404;
        include fastcgi_params;
        fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
        fastcgi_param HTTPS on;
        fastcgi_pass unix:$PHP_FPM_SOCKET;
    }
}
NGINX
ln -sfn /etc/nginx/sites-available/ceres-webmail /etc/nginx/sites-enabled/ceres-webmail
systemctl enable --quiet php8.2-fpm nginx
if ! systemctl is-active --quiet php8.2-fpm; then systemctl start php8.2-fpm; fi
nginx -t -q
# shellcheck disable=SC2154  # changed: set by lib/prelude.sh
if [ "$changed" = 1 ] || [ -e "$PENDING" ]; then
  systemctl reload-or-restart nginx
  systemctl reload php8.2-fpm
fi
rm -f "$PENDING"
echo "webmail: https://$MAIL_HOST/"
