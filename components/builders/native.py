"""The install steps of the native mail stack, as shell text run over SSH on the mail VM.

Its stages, each its own remote command so that a change re-runs only its stage: `packages` (Debian's
Postfix, Dovecot, rspamd, nginx, certbot; the LDAP modules and slapd when the stack has a directory), `tls`
(nginx for ACME http-01 and the MTA-STS policy, the certificate from the ACME server), `ldap` (only with
ldapMode local: slapd, the directory of CERES users' passwords) and `mail` (mailbox, aliases, Postfix,
Dovecot, rspamd DKIM signing; with a directory, a mailbox for each of its people). Each is rendered from
the templates under `shell/native` (and `shell/lib`) by components/builders/shell_script.py.

A stack with ldapMode off renders exactly the scripts it rendered before the directory existed, so its
stages do not run again: what LDAP adds comes in templates of its own, included only when it is on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from components.builders.cloud_init import DATA_DISK, DATA_MOUNT_POINT
from components.builders.dns_records import record_waited_on
from components.builders.inputs import BruteForce, LdapInputs, LocalDirectory
from components.builders.ldif import ACCOUNT_CLASSES, directory_containers, entry_ldif
from components.builders.ports import HTTP, HTTPS, IMAPS, LDAPS, STRICT_TLS12_CIPHERS, SUBMISSION_SERVICES
from components.builders.shell_script import PRELUDE, READ_SECRETS, STRICT, Stage, render_script

#: The OpenSSL cipher list of the ports that require TLS (see ports.STRICT_TLS_PORTS).
STRICT_CIPHERS = ":".join(STRICT_TLS12_CIPHERS)

# The secrets each stage reads from its standard input.
MAIL_SECRETS = ("MAILBOX_PASSWORD", "DKIM_PRIVATE_KEY")
TLS_SECRETS = ("TLS_PRIVATE_KEY",)  #: only with a key the stack brings (ProvidedTls, StackKeyAcmeTls)
#: ldapMode local: slapd's root DN (LdapInputs.admin_dn) and the service account (LdapInputs.bind_dn)
LDAP_SECRETS = ("LDAP_ADMIN_PASSWORD", "LDAP_BIND_PASSWORD")
#: with a directory (local or external), Dovecot and Postfix bind as the service account
MAIL_LDAP_SECRETS = ("LDAP_BIND_PASSWORD",)

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
#: with a directory: Dovecot's and Postfix's LDAP modules
LDAP_PACKAGES = ("dovecot-ldap", "postfix-ldap")
#: ldapMode local: slapd and its command-line tools, and the debconf answer that keeps the package from making
#: a directory of its own (the ldap stage makes the stack's)
SLAPD_PACKAGES = ("ldap-utils", "slapd")
SLAPD_DEBCONF = ("slapd slapd/no_configuration boolean true",)
#: with webmail: Debian 12's Roundcube (SQLite), PHP-FPM for nginx, sqlite3 to make the database; and the
#: debconf answer that leaves the database to the webmail stage rather than to dbconfig-common's questions
WEBMAIL_PACKAGES = ("php-fpm", "roundcube-core", "roundcube-sqlite3", "sqlite3")
WEBMAIL_DEBCONF = ("roundcube-core roundcube/dbconfig-install boolean false",)
#: fail2ban, its journal reader, and the nftables its bans are made of
GUARD_PACKAGES = ("fail2ban", "nftables", "python3-systemd")
#: slapd's local socket: the ldap stage and (ldapMode local) Dovecot and Postfix talk to slapd through it
SLAPD_LDAPI = "ldapi://%2Frun%2Fslapd%2Fldapi"
#: How slapd hashes a password it is sent (Password Modify, or in clear through the ppolicy overlay):
#: Argon2 from Debian's slapd (its `argon2` module, linked with libargon2: the argon2i variant), 32 MiB and
#: 3 passes per hash (RFC 9106's memory-constrained choice, t=3, at half its 64 MiB: every IMAP or Keycloak
#: login verifies one, about 0.3 s and 32 MiB each, and a 2 GiB VM runs them side by side)
PASSWORD_HASH = "{ARGON2}"
PASSWORD_MODULE = "argon2 m=32768 t=3 p=1"
#: slapd's TLS (Debian builds OpenLDAP with GnuTLS, so a GnuTLS priority string, not OpenSSL's cipher list):
#: TLS 1.3 and 1.2 only, and in 1.2 the same suites as the strict ports (ports.STRICT_TLS12_CIPHERS: ECDHE
#: with AES-GCM or ChaCha20-Poly1305)
SLAPD_TLS_PRIORITY = ("SECURE256:+SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:"
                      "+AES-128-GCM:+CHACHA20-POLY1305:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA")
NGINX_TLS = "/etc/nginx/snippets/ceres-mail-tls.conf"  #: the TLS settings every HTTPS server of the host includes
CERT_NAME = "ceres-mail"  #: certbot lineage: /etc/letsencrypt/live/ceres-mail/
PROVIDED_CERT_DIR = "/etc/ceres-mail/tls"  #: where a provided certificate and key are written
#: dane with ACME: the program (and its timer) that keeps the stack's key certified with that key
RENEW_TOOL = "/usr/local/sbin/ceres-mail-tls-renew"
MESSAGE_SIZE_LIMIT = 26_214_400  #: 25 MiB, what most receivers accept


@dataclass(frozen=True)
class AcmeTls:
    """`tlsMode: acme`: certbot gets the certificate from the ACME server over http-01."""

    mode: ClassVar[str] = "acme"  #: the stages' TLS_MODE (their contract with the shell)
    chain: ClassVar[str] = ""
    cert_dir: ClassVar[str] = f"/etc/letsencrypt/live/{CERT_NAME}"


@dataclass(frozen=True)
class StackKeyAcmeTls:
    """`dane` with `tlsMode: acme`: the ACME server certifies a key the stack owns (a TLSA pins it before it is
    served). It arrives like a provided key (TLS_SECRETS); certbot gets a certificate for it from a CSR the
    host makes, and renews it with the same key (`ceres-mail-tls-renew.timer`: certbot keeps no renewal of a
    CSR's certificate)."""

    mode: ClassVar[str] = "acme-stack-key"
    chain: ClassVar[str] = ""
    cert_dir: ClassVar[str] = PROVIDED_CERT_DIR


@dataclass(frozen=True)
class ProvidedTls:
    """`tlsMode: provided`: the operator's certificate chain; its key travels as a secret (TLS_SECRETS)."""

    chain: str  #: the PEM chain, leaf first
    mode: ClassVar[str] = "provided"
    cert_dir: ClassVar[str] = PROVIDED_CERT_DIR



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
    tls: AcmeTls | StackKeyAcmeTls | ProvidedTls = AcmeTls()  #: where the certificate and its key come from
    ldap: LdapInputs | None = None  #: the directory of CERES users' passwords; None with ldapMode off
    webmail: bool = False  #: Roundcube on https://<mail_host>/ (the `webmail` stage)
    brute_force: BruteForce | None = None  #: fail2ban (the `fail2ban` stage); None leaves it out
    #: (IPv4, IPv6) Postfix's SMTP client sends from: a gateway's tunnel addresses (gateway.smtp_bind_addresses),
    #: ("", "") to let the route decide
    smtp_bind_addresses: tuple[str, str] = ("", "")
    #: keys of the DNS records that must be published before the tls stage serves its key: the TLSA records
    #: pinning it (`dane`), so no DANE-validating sender ever sees a key its TLSA does not name
    served_after: tuple[str, ...] = ()

    @property
    def cert_dir(self) -> str:
        return self.tls.cert_dir

    @property
    def domains(self) -> tuple[str, ...]:
        return self.mail_domains or (self.domain,)

    @property
    def certificate_names(self) -> tuple[str, ...]:
        """The mail host and each domain's MTA-STS host (RFC 8461 3.3 wants HTTPS there)."""
        return (self.mail_host, *(f"mta-sts.{domain}" for domain in self.domains))

    @property
    def https_names(self) -> tuple[str, ...]:
        """The names the tls stage's HTTPS server answers (MTA-STS, 404 elsewhere): with webmail the mail host
        is the webmail's server instead."""
        return tuple(name for name in self.certificate_names if not (self.webmail and name == self.mail_host))


def local_directory(inputs: InstallInputs) -> bool:
    """ldapMode local: slapd runs on the mail host (the `ldap` stage)."""
    return isinstance(inputs.ldap, LocalDirectory)


def render_packages_stage(inputs: InstallInputs) -> str:
    """Debian's packages; with a directory also its LDAP modules, and slapd when it is local (answering
    slapd's debconf question first). Without one, the script of a stack from before LDAP, byte for byte."""
    packages = PACKAGES
    extra = (*(LDAP_PACKAGES if inputs.ldap else ()), *(SLAPD_PACKAGES if local_directory(inputs) else ()),
             *(WEBMAIL_PACKAGES if inputs.webmail else ()), *(GUARD_PACKAGES if inputs.brute_force else ()))
    if extra:
        packages = tuple(sorted({*PACKAGES, *extra}))
    debconf = (*(SLAPD_DEBCONF if local_directory(inputs) else ()), *(WEBMAIL_DEBCONF if inputs.webmail else ()))
    return render_script("packages", inputs.mail_host, (*STRICT, *(("native/debconf.sh",) if debconf else ()), "native/packages.sh"),
                         MAIL_HOST=inputs.mail_host, PACKAGES=packages, **({"DEBCONF": debconf} if debconf else {}))


def stage_secrets(stage: str, inputs: InstallInputs) -> tuple[str, ...]:
    """The secrets `stage` reads from its standard input (none: no stdin at all). The server component
    feeds each by this name: LDAP_ADMIN_PASSWORD and LDAP_BIND_PASSWORD are those of LdapInputs.admin_dn
    and LdapInputs.bind_dn."""
    if stage == "mail":
        return MAIL_SECRETS + (MAIL_LDAP_SECRETS if inputs.ldap else ())
    if stage == "ldap":
        return LDAP_SECRETS
    if stage == "tls" and isinstance(inputs.tls, (ProvidedTls, StackKeyAcmeTls)):
        return TLS_SECRETS
    return ()


def render_tls_stage(inputs: InstallInputs) -> str:
    secrets = stage_secrets("tls", inputs)
    return render_script(
        "tls",
        inputs.mail_host,
        (*PRELUDE, *(READ_SECRETS if secrets else ()), "native/tls.sh",
         *(("native/tls_stack_key.sh",) if isinstance(inputs.tls, StackKeyAcmeTls) else ()), "native/tls_certbot.sh"),
        TLS_MODE=inputs.tls.mode,
        CERT_NAME=CERT_NAME,
        CERT_DIR=inputs.cert_dir,
        CERT_NAMES=inputs.certificate_names,
        HTTPS_NAMES=inputs.https_names,
        ACME_DIRECTORY=inputs.acme_directory,
        ACME_EMAIL=inputs.acme_email,
        ACME_CA_BUNDLE=inputs.acme_ca_bundle.strip(),
        TLS_CERTIFICATE=inputs.tls.chain.strip(),
        MTA_STS_POLICY=inputs.mta_sts_policy,
        STRICT_CIPHERS=STRICT_CIPHERS,
        HTTP_PORT=str(HTTP.port),
        HTTPS_PORT=str(HTTPS.port),
        NGINX_TLS=NGINX_TLS,
        **({"SECRETS": secrets} if secrets else {}),
        **({"RENEW_TOOL": RENEW_TOOL} if isinstance(inputs.tls, StackKeyAcmeTls) else {}),
    )


def render_mail_stage(inputs: InstallInputs) -> str:
    """The mailbox, Postfix, Dovecot and rspamd; with a directory, its people's mailboxes too
    (native/mail_ldap.sh, between the stage's two parts, with the variables only it reads at the header's end)."""
    ldap = (("native/mail_ldap.sh",) if inputs.ldap else ())
    return render_script(
        "mail",
        inputs.mail_host,
        (*PRELUDE, *READ_SECRETS, "native/mail.sh", *ldap, "native/mail_services.sh"),
        DOMAIN=inputs.domain,
        MAIL_HOST=inputs.mail_host,
        MAIL_DOMAINS=inputs.domains,
        MAILBOX=inputs.mailbox,
        ALIASES=inputs.aliases,
        DKIM_SELECTOR=inputs.dkim_selector,
        CERT_DIR=inputs.cert_dir,
        SECRETS=stage_secrets("mail", inputs),
        MESSAGE_SIZE_LIMIT=str(MESSAGE_SIZE_LIMIT),
        VMAIL=f"{DATA_MOUNT_POINT}/vhosts",
        STRICT_CIPHERS=STRICT_CIPHERS,
        SUBMISSION_SERVICES=tuple(service.name for service in SUBMISSION_SERVICES),
        IMPLICIT_TLS_SERVICES=tuple(service.name for service in SUBMISSION_SERVICES if service.tls == "implicit"),
        IMAPS_PORT=str(IMAPS.port),
        SMTP_BIND_ADDRESS=inputs.smtp_bind_addresses[0],
        SMTP_BIND_ADDRESS6=inputs.smtp_bind_addresses[1],
        # a gateway without IPv6 has no address to send IPv6 mail from: the home one would fail SPF
        INET_PROTOCOLS="ipv4" if inputs.smtp_bind_addresses[0] and not inputs.smtp_bind_addresses[1] else "all",
        **DATA_DISK,
        **(directory_client(inputs.ldap) if inputs.ldap else {}),
    )


def directory_client(ldap: LdapInputs) -> dict[str, str]:
    """Where Dovecot and Postfix find the people: the local slapd through its socket (no TLS to do, nothing
    on the network), or the external directory at its URL, with StartTLS required for ldap://."""
    local = isinstance(ldap, LocalDirectory)
    return {
        "LDAP_URI": SLAPD_LDAPI if local else ldap.url,
        "LDAP_START_TLS": "yes" if not local and ldap.start_tls else "no",
        "LDAP_BIND_DN": ldap.bind_dn,
        "LDAP_USERS_DN": ldap.users_dn,
    }


def render_ldap_stage(inputs: InstallInputs) -> str:
    """ldapMode local: slapd on the mail host (native/ldap.sh). It carries the tls stage's digest: slapd
    serves its own copy of the certificate, so every run of the tls stage (which may bring a new one) is
    followed by one of this stage; certbot's renewals refresh the copy through a deploy hook."""
    ldap = inputs.ldap
    if not isinstance(ldap, LocalDirectory):
        raise ValueError("the ldap stage is for ldapMode local only")
    return render_script(
        "ldap",
        inputs.mail_host,
        (*PRELUDE, *READ_SECRETS, "native/ldap.sh"),
        MAIL_HOST=inputs.mail_host,
        BASE_DN=ldap.base_dn,
        ADMIN_DN=ldap.admin_dn,
        BIND_DN=ldap.bind_dn,
        USERS_DN=ldap.users_dn,
        CONTAINERS=directory_containers(ldap),
        BIND_ENTRY=entry_ldif(ldap.bind_dn, ACCOUNT_CLASSES, "the service account"),
        LDAPI=SLAPD_LDAPI,
        LDAPS_PORT=str(LDAPS.port),
        TLS_MODE=inputs.tls.mode,
        CERT_DIR=inputs.cert_dir,
        TLS_STAGE_SHA256=hashlib.sha256(render_tls_stage(inputs).encode()).hexdigest(),
        TLS_PRIORITY=SLAPD_TLS_PRIORITY,
        PASSWORD_HASH=PASSWORD_HASH,
        PASSWORD_MODULE=PASSWORD_MODULE,
        SECRETS=stage_secrets("ldap", inputs),
    )


# The stages in the order they run, by name (the remote command of each is `<name>-install-<stage>`); `ldap`
# only with ldapMode local (`stage_runs`): after `tls`, whose certificate slapd serves, before `mail`, whose
# Dovecot and Postfix look the people up in it.
STAGES = (("packages", render_packages_stage), ("tls", render_tls_stage), ("ldap", render_ldap_stage),
          ("mail", render_mail_stage))


def stage_runs(stage: str, inputs: InstallInputs) -> bool:
    """Whether the stack has `stage`: every one but `ldap`, which only a local directory has."""
    return stage != "ldap" or local_directory(inputs)


def native_stages(inputs: InstallInputs) -> tuple[Stage, ...]:
    """The native stack's stages, rendered."""
    acme_names = inputs.certificate_names if isinstance(inputs.tls, (AcmeTls, StackKeyAcmeTls)) else ()
    return tuple(
        Stage(stage, render(inputs), stage_secrets(stage, inputs), certifies=acme_names if stage == "tls" else (),
              after=tuple(record_waited_on(key) for key in inputs.served_after) if stage == "tls" else ())
        for stage, render in STAGES
        if stage_runs(stage, inputs)
    )
