"""The install step of the mail stack, as shell text run over SSH on the mail VM.

Secrets never appear in the script or its command line: they arrive on standard input as
`NAME=base64` lines (see `render_secrets_stdin`), are read into shell variables and written only to
root-owned files. The script is idempotent: it converges files and services to the rendered state, so a
re-run changes nothing.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass

from components.builders.cloud_init import DATA_MOUNT_POINT

# The secrets the script reads from stdin, in the order render_secrets_stdin writes them.
SECRET_NAMES = ("MAILBOX_PASSWORD", "DKIM_PRIVATE_KEY")

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True)
class InstallInputs:
    """Plain (non-secret) values the install script is rendered from."""

    domain: str
    mail_host: str
    mailbox: str
    dkim_selector: str
    acme_email: str
    acme_directory: str = LETS_ENCRYPT


def render_secrets_stdin(mailbox_password: str, dkim_private_key_pem: str) -> str:
    """The standard input of the install command: one `NAME=base64(value)` line per secret."""
    values = dict(zip(SECRET_NAMES, (mailbox_password, dkim_private_key_pem), strict=True))
    return "".join(f"{name}={base64.b64encode(value.encode()).decode()}\n" for name, value in values.items())


# Reads what render_secrets_stdin wrote into shell variables; never echoes a value.
SECRETS_READER = """# Secrets: NAME=base64 lines on stdin, decoded into variables, never echoed.
while IFS= read -r line; do
  [ -n "$line" ] || continue
  name=${line%%=*}
  case "$name" in
    MAILBOX_PASSWORD) MAILBOX_PASSWORD=$(printf '%s' "${line#*=}" | base64 -d) ;;
    DKIM_PRIVATE_KEY) DKIM_PRIVATE_KEY=$(printf '%s' "${line#*=}" | base64 -d) ;;
    *) echo "unknown secret on stdin: $name" >&2; exit 2 ;;
  esac
done
: "${MAILBOX_PASSWORD:?missing on stdin}" "${DKIM_PRIVATE_KEY:?missing on stdin}"
"""


def render_wait_for_cloud_init() -> str:
    """Block until first boot is done (packages, users, host key), or fail with cloud-init's verdict."""
    return "cloud-init status --wait >/dev/null || { cloud-init status --long; exit 1; }"


def render_native_install(inputs: InstallInputs) -> str:
    """Postfix (MTA, submission on 587), Dovecot (IMAPS on 993, SASL for Postfix, LMTP delivery) and
    rspamd (DKIM signing), with a certificate from ACME for the mail host."""
    q = {name: shlex.quote(str(value)) for name, value in vars(inputs).items()}
    vmail = f"{DATA_MOUNT_POINT}/vhosts"
    return f"""#!/usr/bin/env bash
# ceres-mail: native mail stack for {inputs.domain}, rendered by the stack; re-run converges.
set -euo pipefail
umask 077
export DEBIAN_FRONTEND=noninteractive

DOMAIN={q['domain']}
MAIL_HOST={q['mail_host']}
MAILBOX={q['mailbox']}
DKIM_SELECTOR={q['dkim_selector']}
ACME_EMAIL={q['acme_email']}
ACME_DIRECTORY={q['acme_directory']}
VMAIL={shlex.quote(vmail)}

{SECRETS_READER}
# put_file PATH MODE OWNER: write stdin to PATH only when it differs, so a re-run restarts nothing.
changed=0
put_file() {{
  local path=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then rm -f "$tmp"; return 0; fi
  install -D -m "$mode" -o "${{owner%:*}}" -g "${{owner#*:}}" "$tmp" "$path"
  rm -f "$tmp"
  changed=1
  echo "updated $path"
}}

echo "== packages"
echo "postfix postfix/main_mailer_type select Internet Site" | debconf-set-selections
echo "postfix postfix/mailname string $MAIL_HOST" | debconf-set-selections
apt-get -q update
apt-get -q install -y --no-install-recommends \\
  postfix dovecot-imapd dovecot-lmtpd rspamd redis-server certbot ca-certificates openssl

echo "== mailbox $MAILBOX"
getent group vmail >/dev/null || groupadd --system --gid 5000 vmail
getent passwd vmail >/dev/null || useradd --system --uid 5000 --gid vmail --home-dir "$VMAIL" --shell /usr/sbin/nologin vmail
install -d -m 0750 -o vmail -g vmail "$VMAIL"
# keep the existing hash while the password is unchanged: a fresh salt would rewrite the file each run
current=$(awk -F: -v u="$MAILBOX" '$1 == u {{ print $2 }}' /etc/dovecot/ceres-users 2>/dev/null || true)
if [ -z "$current" ] || [ "$(openssl passwd -6 -salt "$(printf '%s' "${{current#\\{{SHA512-CRYPT\\}}}}" | cut -d'$' -f3)" -stdin <<<"$MAILBOX_PASSWORD")" != "${{current#\\{{SHA512-CRYPT\\}}}}" ]; then
  current="{{SHA512-CRYPT}}$(openssl passwd -6 -stdin <<<"$MAILBOX_PASSWORD")"
fi
printf '%s:%s:5000:5000::%s/%s/%s::\\n' "$MAILBOX" "$current" "$VMAIL" "$DOMAIN" "${{MAILBOX%@*}}" \\
  | put_file /etc/dovecot/ceres-users 0640 root:dovecot

echo "== TLS certificate for $MAIL_HOST"
CERT_DIR=/etc/letsencrypt/live/$MAIL_HOST
if [ ! -s "$CERT_DIR/fullchain.pem" ]; then
  certbot certonly --non-interactive --agree-tos --standalone --preferred-challenges http \\
    --server "$ACME_DIRECTORY" -m "$ACME_EMAIL" -d "$MAIL_HOST" \\
    --deploy-hook "systemctl reload postfix dovecot"
fi

echo "== postfix"
postconf -e \\
  "myhostname = $MAIL_HOST" "mydomain = $DOMAIN" "myorigin = \\$mydomain" \\
  "mydestination = localhost" "inet_protocols = all" \\
  "virtual_mailbox_domains = $DOMAIN" "virtual_transport = lmtp:unix:private/dovecot-lmtp" \\
  "smtpd_tls_cert_file = $CERT_DIR/fullchain.pem" "smtpd_tls_key_file = $CERT_DIR/privkey.pem" \\
  "smtpd_tls_security_level = may" "smtp_tls_security_level = may" \\
  "smtpd_sasl_type = dovecot" "smtpd_sasl_path = private/auth" \\
  "smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination" \\
  "smtpd_recipient_restrictions = permit_sasl_authenticated, reject_unauth_destination" \\
  "smtpd_sender_login_maps = hash:/etc/postfix/ceres-senders" \\
  "smtpd_milters = inet:127.0.0.1:11332" "non_smtpd_milters = inet:127.0.0.1:11332" \\
  "milter_default_action = accept"
printf '%s %s\\n' "$MAILBOX" "$MAILBOX" | put_file /etc/postfix/ceres-senders 0644 root:root
postmap /etc/postfix/ceres-senders
postconf -M submission/inet="submission inet n - y - - smtpd"
postconf -P \\
  "submission/inet/syslog_name=postfix/submission" \\
  "submission/inet/smtpd_tls_security_level=encrypt" \\
  "submission/inet/smtpd_sasl_auth_enable=yes" \\
  "submission/inet/smtpd_client_restrictions=permit_sasl_authenticated,reject" \\
  "submission/inet/smtpd_sender_restrictions=reject_sender_login_mismatch"

echo "== dovecot"
put_file /etc/dovecot/conf.d/99-ceres-mail.conf 0644 root:root <<CONF
protocols = imap lmtp
ssl = required
ssl_cert = <$CERT_DIR/fullchain.pem
ssl_key = <$CERT_DIR/privkey.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%u /etc/dovecot/ceres-users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u /etc/dovecot/ceres-users
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener /var/spool/postfix/private/dovecot-lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
service auth {{
  unix_listener /var/spool/postfix/private/auth {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
CONF

echo "== rspamd DKIM signing ($DKIM_SELECTOR._domainkey.$DOMAIN)"
printf '%s\\n' "$DKIM_PRIVATE_KEY" | put_file "/var/lib/rspamd/dkim/$DKIM_SELECTOR.key" 0640 root:_rspamd
put_file /etc/rspamd/local.d/dkim_signing.conf 0644 root:root <<CONF
path = "/var/lib/rspamd/dkim/\\$selector.key";
selector = "$DKIM_SELECTOR";
allow_username_mismatch = false;
use_domain = "header";
CONF

echo "== services"
systemctl enable --quiet postfix dovecot rspamd redis-server
if [ "$changed" = 1 ]; then
  systemctl restart redis-server rspamd dovecot postfix
else
  systemctl start redis-server rspamd dovecot postfix
fi
echo "ceres-mail: $MAIL_HOST ready for $DOMAIN"
"""


def render_install_command(script: str) -> str:
    """The remote command line: root through sudo, the script as an argument, stdin left for secrets."""
    return f"sudo -n bash -c {shlex.quote(script)} ceres-mail-install"
