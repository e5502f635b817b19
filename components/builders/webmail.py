"""The native stack's web and guard stages: Roundcube webmail on https://<mailHost>/ and fail2ban.

`webmail` (with `webmail: true`): Debian's Roundcube under nginx and PHP-FPM, behind the stack's certificate,
its SQLite database on the data disk, its `des_key` made by the stack. It logs in to Dovecot over IMAPS and
sends through submission with the user's own credentials, both on the loopback interface (no certificate
check there: the connection never leaves the host, and the certificate names the public host). No installer
is reachable; nginx adds HSTS, a Content-Security-Policy as tight as Roundcube's inline scripts allow,
X-Frame-Options and friends.

`fail2ban`: Debian's fail2ban reading the journal, with jails for Postfix's SASL logins (25, 465, 587),
Dovecot (993), Roundcube and sshd. `bruteForceMaxRetry` failures within 10 minutes ban the address from every
port for `bruteForceBanMinutes`, with nftables rules that reject; adminCidrs, the cluster's networks
(clusterCidrs, ldapClientCidrs) and the host itself are never banned.
"""

from __future__ import annotations

from components.builders.cloud_init import DATA_MOUNT_POINT
from components.builders.inputs import BruteForce
from components.builders.native import NGINX_TLS, InstallInputs
from components.builders.ports import HTTPS, IMAPS, SUBMISSION
from components.builders.shell_script import PRELUDE, READ_SECRETS, Stage, render_script

PHP_FPM_SOCKET = "/run/php/php8.2-fpm.sock"  #: Debian 12's PHP
ROUNDCUBE_ROOT = "/var/lib/roundcube/public_html"  #: Debian's document root: index.php, skins, plugins only
ROUNDCUBE_DB = f"{DATA_MOUNT_POINT}/roundcube/roundcube.sqlite"  #: on the data disk, with the mail
WEBMAIL_SECRETS = ("ROUNDCUBE_DES_KEY",)
DES_KEY_LENGTH = 24  #: Roundcube's des_key is 24 characters
FIND_MINUTES = 10  #: the window bruteForceMaxRetry failures must fall into
#: Content-Security-Policy for Roundcube 1.6 (elastic): its own scripts are inline and use eval, so
#: 'unsafe-inline' and 'unsafe-eval' stay for scripts; everything else is the host itself
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
                           "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
                           "frame-src 'self' blob:; frame-ancestors 'self'; form-action 'self'; base-uri 'self'; "
                           "object-src 'none'")


def render_webmail_stage(inputs: InstallInputs) -> str:
    return render_script(
        "webmail",
        inputs.mail_host,
        (*PRELUDE, *READ_SECRETS, "native/webmail.sh"),
        MAIL_HOST=inputs.mail_host,
        NGINX_TLS=NGINX_TLS,
        HTTPS_PORT=str(HTTPS.port),
        IMAPS_PORT=str(IMAPS.port),
        SUBMISSION_PORT=str(SUBMISSION.port),
        PHP_FPM_SOCKET=PHP_FPM_SOCKET,
        ROUNDCUBE_ROOT=ROUNDCUBE_ROOT,
        ROUNDCUBE_DB=ROUNDCUBE_DB,
        CONTENT_SECURITY_POLICY=CONTENT_SECURITY_POLICY,
        SECRETS=WEBMAIL_SECRETS,
    )


def render_fail2ban_stage(inputs: InstallInputs) -> str:
    guard = inputs.brute_force or BruteForce()
    return render_script(
        "fail2ban",
        inputs.mail_host,
        (*PRELUDE, "native/fail2ban.sh"),
        MAX_RETRY=str(guard.max_retry),
        BAN_MINUTES=str(guard.ban_minutes),
        FIND_MINUTES=str(FIND_MINUTES),
        NEVER_BANNED=("127.0.0.0/8", "::1", *guard.never_banned),
        WEBMAIL="yes" if inputs.webmail else "no",
    )


def web_stages(inputs: InstallInputs) -> tuple[Stage, ...]:
    """The stages after `mail`: the webmail (with `webmail`), then fail2ban, which watches all of them."""
    webmail = (Stage("webmail", render_webmail_stage(inputs), WEBMAIL_SECRETS),) if inputs.webmail else ()
    guard = (Stage("fail2ban", render_fail2ban_stage(inputs)),) if inputs.brute_force else ()
    return (*webmail, *guard)
