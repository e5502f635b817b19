"""The install steps of the native mail stack, as shell text run over SSH on the mail VM.

Three stages, each its own remote command so that a change re-runs only its stage: `packages` (Debian's
Postfix, Dovecot, rspamd, nginx, certbot), `tls` (nginx for ACME http-01 and the MTA-STS policy, the
certificate from the ACME server) and `mail` (mailbox, aliases, Postfix, Dovecot, rspamd DKIM signing).

Every script is a header of shell variables rendered from plain values (quoted with shlex) followed by a
fixed body, so the same inputs give the same bytes. Secrets never appear in a script or command line:
they arrive on standard input as `NAME=base64` lines (`render_secrets_stdin`), are read into variables
and written only to root-owned files. Every stage converges: files are rewritten only when their content
differs and services restart only then, so a re-run changes nothing.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass

from components.builders.cloud_init import DATA_MOUNT_POINT

# The secrets each stage reads from its standard input.
MAIL_SECRETS = ("MAILBOX_PASSWORD", "DKIM_PRIVATE_KEY")
TLS_SECRETS = ("TLS_PRIVATE_KEY",)  #: only with tls_mode "provided"

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
PACKAGES = (
    "ca-certificates",
    "certbot",
    "dovecot-imapd",
    "dovecot-lmtpd",
    "nginx-light",
    "openssl",
    "postfix",
    "redis-server",
    "rspamd",
)
CERT_NAME = "ceres-mail"  #: certbot lineage: /etc/letsencrypt/live/ceres-mail/
PROVIDED_CERT_DIR = "/etc/ceres-mail/tls"  #: where a provided certificate and key are written
MESSAGE_SIZE_LIMIT = 26_214_400  #: 25 MiB, what most receivers accept


@dataclass(frozen=True)
class InstallInputs:
    """Plain (non-secret) values the install scripts are rendered from."""

    domain: str  #: primary mail domain
    mail_host: str
    mailbox: str  #: the no-reply mailbox CERES and Keycloak log in as
    dkim_selector: str
    acme_email: str
    mail_domains: tuple[str, ...] = ()  #: every mail domain (primary first); empty means just `domain`
    aliases: tuple[str, ...] = ()  #: addresses delivered to the mailbox (postmaster@, abuse@, reports)
    mta_sts_policy: str = ""  #: served at https://mta-sts.<domain>/.well-known/mta-sts.txt
    acme_directory: str = LETS_ENCRYPT
    acme_ca_bundle: str = ""  #: PEM of a private ACME server's CA; empty trusts the system store
    tls_mode: str = "acme"  #: "acme" (certbot, http-01) or "provided" (certificate from the stack)
    tls_certificate: str = ""  #: with "provided": the PEM chain (its key travels as a secret)

    @property
    def cert_dir(self) -> str:
        return PROVIDED_CERT_DIR if self.tls_mode == "provided" else f"/etc/letsencrypt/live/{CERT_NAME}"

    @property
    def domains(self) -> tuple[str, ...]:
        return self.mail_domains or (self.domain,)

    @property
    def certificate_names(self) -> tuple[str, ...]:
        """The mail host and each domain's MTA-STS host (RFC 8461 3.3 wants HTTPS there)."""
        return (self.mail_host, *(f"mta-sts.{domain}" for domain in self.domains))


def render_secrets_stdin(secrets: dict[str, str]) -> str:
    """A stage's standard input: one `NAME=base64(value)` line per secret, in a stable order."""
    return "".join(f"{name}={base64.b64encode(value.encode()).decode()}\n" for name, value in sorted(secrets.items()))


# Reads what render_secrets_stdin wrote into the variables the header's SECRETS array names; a name not
# expected, or one missing, stops the stage. Never echoes a value.
SECRETS_READER = r"""# Secrets: NAME=base64 lines on stdin, decoded into variables, never echoed.
while IFS= read -r line; do
  [ -n "$line" ] || continue
  name=${line%%=*}
  case " ${SECRETS[*]} " in
    *" $name "*) printf -v "$name" '%s' "$(printf '%s' "${line#*=}" | base64 -d)" ;;
    *) echo "unknown secret on stdin: $name" >&2; exit 2 ;;
  esac
done
for name in "${SECRETS[@]}"; do
  [ -n "${!name:-}" ] || { echo "missing on stdin: $name" >&2; exit 2; }
done
"""

STRICT = r"""set -euo pipefail
umask 022
export DEBIAN_FRONTEND=noninteractive
"""

PRELUDE = STRICT + r"""
# `cmd | put_file …` must run put_file in this shell, or what it sets (changed=1) would be lost
shopt -s lastpipe

# put_file PATH MODE OWNER:GROUP < content: write only when it differs, so a re-run restarts nothing.
# A written file is applied (reload/restart) at the end of the stage; until then a marker records that
# it is pending, so a run interrupted in between still applies it the next time.
# (CERES_MAIL_STATE moves the marker for the tests; sudo's env_reset keeps it out of a real run)
STATE_DIR=${CERES_MAIL_STATE:-/var/lib/ceres-mail}
PENDING=$STATE_DIR/$STAGE.pending
install -d -m 0755 "$STATE_DIR"
# shellcheck disable=SC2034  # `changed` is read by the stages that restart services
changed=0
if [ -e "$PENDING" ]; then changed=1; fi
# shellcheck disable=SC2034  # (its `changed=1` likewise)
put_file() {
  local path=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path" && [ "$(stat -c '%a %U:%G' "$path")" = "${mode#0} $owner" ]; then
    rm -f "$tmp"
    return 0
  fi
  touch "$PENDING"
  install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$tmp" "$path"
  rm -f "$tmp"
  changed=1
  echo "updated $path"
}
"""


def script_header(stage: str, inputs: InstallInputs, **variables: str | tuple[str, ...]) -> str:
    lines = ["#!/usr/bin/env bash", f"# ceres-mail {stage} stage for {inputs.mail_host}; rendered by the stack, re-runs converge.",
             f"STAGE={stage}"]
    for name, value in variables.items():
        if any(c in "".join(value) for c in "$`"):
            lines.append("# shellcheck disable=SC2016  # literal text, not an expansion")
        if isinstance(value, tuple):
            lines.append(f"{name}=({' '.join(shlex.quote(v) for v in value)})")
        else:
            lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


# Repairs what an interrupted earlier run (or crash) left in dpkg, then installs what PACKAGES lists and
# is missing; `preseed` runs first when something is to be installed. Shared by both mail stacks.
APT_REPAIR = r"""
# An interrupted earlier run (or crash) leaves dpkg mid-way: configure what was unpacked, reinstall what was
# left half-installed, and let apt fix dependencies. All no-ops on a healthy system.
dpkg --configure -a || true
broken=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 !~ /^(ii|un|rc|pn)/ { print $2 }')
if [ -n "$broken" ]; then
  echo "repairing packages an interrupted run left behind: $broken"
  apt-get -q update
  # shellcheck disable=SC2086  # one word per package
  apt-get -q install -y --reinstall --no-install-recommends $broken
  dpkg --configure -a
fi
if ! apt-get -q check >/dev/null 2>&1; then
  apt-get -q update
  apt-get -q install -y -f --no-install-recommends
fi
"""

APT_INSTALL_MISSING = r"""
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  preseed
  apt-get -q update
  apt-get -q install -y --no-install-recommends "${missing[@]}"
else
  echo "all packages present"
fi
"""

PACKAGES_BODY = (
    '\necho "== $STAGE"\n'
    + APT_REPAIR
    + r"""preseed() {
  echo "postfix postfix/main_mailer_type select Internet Site" | debconf-set-selections
  echo "postfix postfix/mailname string $MAIL_HOST" | debconf-set-selections
}
"""
    + APT_INSTALL_MISSING
)


def render_packages_stage(inputs: InstallInputs) -> str:
    return script_header("packages", inputs, MAIL_HOST=inputs.mail_host, PACKAGES=PACKAGES) + STRICT + PACKAGES_BODY


TLS_BODY = r"""
echo "== web: ACME http-01 and MTA-STS"
install -d -m 0755 /var/www/acme /var/www/mta-sts/.well-known
printf '%s' "$MTA_STS_POLICY" | put_file /var/www/mta-sts/.well-known/mta-sts.txt 0644 root:root

render_nginx() {
  cat <<NGINX
# ceres-mail: ACME http-01 for every certificate name, MTA-STS policy over HTTPS (RFC 8461 3.3)
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name _;
    location /.well-known/acme-challenge/ { root /var/www/acme; }
    location / { return 301 https://\$host\$request_uri; }
}
NGINX
  if [ -s "$CERT_DIR/fullchain.pem" ]; then
    cat <<NGINX
server {
    listen 443 ssl default_server;
    listen [::]:443 ssl default_server;
    server_name ${CERT_NAMES[*]};
    ssl_certificate $CERT_DIR/fullchain.pem;
    ssl_certificate_key $CERT_DIR/privkey.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /.well-known/mta-sts.txt { root /var/www/mta-sts; default_type text/plain; }
    location / { return 404; }
}
NGINX
  fi
}
apply_nginx() {
  changed=0
  if [ -e "$PENDING" ]; then changed=1; fi
  render_nginx | put_file /etc/nginx/sites-available/ceres-mail 0644 root:root
  ln -sfn /etc/nginx/sites-available/ceres-mail /etc/nginx/sites-enabled/ceres-mail
  if [ -e /etc/nginx/sites-enabled/default ]; then rm -f /etc/nginx/sites-enabled/default; changed=1; fi
  nginx -t -q
  systemctl enable --quiet nginx
  if [ "$changed" = 1 ] || ! systemctl is-active --quiet nginx; then systemctl reload-or-restart nginx; fi
  rm -f "$PENDING"
}
apply_nginx

if [ "$TLS_MODE" = provided ]; then
  echo "== certificate for ${CERT_NAMES[*]}: provided by the stack"
  printf '%s\n' "$TLS_CERTIFICATE" | put_file "$CERT_DIR/fullchain.pem" 0644 root:root
  # shellcheck disable=SC2154  # set by the secrets reader
  printf '%s\n' "$TLS_PRIVATE_KEY" | put_file "$CERT_DIR/privkey.pem" 0600 root:root
  if [ "$changed" = 1 ]; then
    systemctl reload postfix dovecot 2>/dev/null || true
  fi
  apply_nginx  # applies nginx, clears the pending marker
  exit 0
fi

echo "== certificate for ${CERT_NAMES[*]}"
if [ -n "$ACME_CA_BUNDLE" ]; then
  # a private ACME server: trust its CA for certbot only, also in the renewal timer
  printf '%s\n' "$ACME_CA_BUNDLE" | put_file /etc/ceres-mail/acme-ca.pem 0644 root:root
  printf '[Service]\nEnvironment=REQUESTS_CA_BUNDLE=/etc/ceres-mail/acme-ca.pem\n' \
    | put_file /etc/systemd/system/certbot.service.d/ceres-mail-ca.conf 0644 root:root
  export REQUESTS_CA_BUNDLE=/etc/ceres-mail/acme-ca.pem
fi
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
"""


def stage_secrets(stage: str, inputs: InstallInputs) -> tuple[str, ...]:
    """The secrets `stage` reads from its standard input (none: no stdin at all)."""
    if stage == "mail":
        return MAIL_SECRETS
    if stage == "tls" and inputs.tls_mode == "provided":
        return TLS_SECRETS
    return ()


def render_tls_stage(inputs: InstallInputs) -> str:
    secrets = stage_secrets("tls", inputs)
    return (
        script_header(
            "tls",
            inputs,
            TLS_MODE=inputs.tls_mode,
            CERT_NAME=CERT_NAME,
            CERT_DIR=inputs.cert_dir,
            CERT_NAMES=inputs.certificate_names,
            ACME_DIRECTORY=inputs.acme_directory,
            ACME_EMAIL=inputs.acme_email,
            ACME_CA_BUNDLE=inputs.acme_ca_bundle.strip(),
            TLS_CERTIFICATE=inputs.tls_certificate.strip(),
            MTA_STS_POLICY=inputs.mta_sts_policy,
            **({"SECRETS": secrets} if secrets else {}),
        )
        + PRELUDE
        + (SECRETS_READER if secrets else "")
        + TLS_BODY
    )


MAIL_BODY = r"""
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
"""


def render_mail_stage(inputs: InstallInputs) -> str:
    return (
        script_header(
            "mail",
            inputs,
            DOMAIN=inputs.domain,
            MAIL_HOST=inputs.mail_host,
            MAIL_DOMAINS=inputs.domains,
            MAILBOX=inputs.mailbox,
            ALIASES=inputs.aliases,
            DKIM_SELECTOR=inputs.dkim_selector,
            CERT_DIR=inputs.cert_dir,
            SECRETS=MAIL_SECRETS,
            MESSAGE_SIZE_LIMIT=str(MESSAGE_SIZE_LIMIT),
            VMAIL=f"{DATA_MOUNT_POINT}/vhosts",
        )
        + PRELUDE
        + SECRETS_READER
        + MAIL_BODY
    )


def render_wait_for_cloud_init() -> str:
    """Block until first boot is done (packages, users, host key), or fail with cloud-init's verdict."""
    return "cloud-init status --wait >/dev/null || { cloud-init status --long; exit 1; }"


# The stages in the order they run, by name (the remote command of each is `<name>-install-<stage>`).
STAGES = (("packages", render_packages_stage), ("tls", render_tls_stage), ("mail", render_mail_stage))


@dataclass(frozen=True)
class Stage:
    """One remote install command: its name, its script, and the secrets it reads from stdin."""

    name: str
    script: str
    secrets: tuple[str, ...] = ()


def native_stages(inputs: InstallInputs) -> tuple[Stage, ...]:
    """The native stack's stages, rendered."""
    return tuple(Stage(stage, render(inputs), stage_secrets(stage, inputs)) for stage, render in STAGES)


def render_install_command(script: str, stage: str = "install") -> str:
    """The remote command line: root through sudo, the script as an argument, stdin left for secrets."""
    return f"sudo -n bash -c {shlex.quote(script)} ceres-mail-{stage}"
