"""The install steps of the native mail stack, as shell text run over SSH on the mail VM.

Three stages, each its own remote command so that a change re-runs only its stage: `packages` (Debian's
Postfix, Dovecot, rspamd, nginx, certbot), `tls` (nginx for ACME http-01 and the MTA-STS policy, the
certificate from the ACME server) and `mail` (mailbox, aliases, Postfix, Dovecot, rspamd DKIM signing).

Every script is a header of shell variables rendered from plain values (quoted with shlex) followed by
fixed shell text, so the same inputs give the same bytes. That text lives in `.sh` templates under
`shell/` (`lib/` shared by both mail stacks, `native/` and `mailcow/` one per stage): what follows a
template's `# ---- rendered below ----` line is its text, the lines above it (what the template is, the
header variables it uses) are for readers and shellcheck only, and a line `# ---- include lib/<name>.sh ----`
stands for that template's text. Each template passes shellcheck on its own, as it is: shellcheck takes an
unassigned UPPER_CASE name for one set outside the file (here: by the header or lib/secrets.sh), and a
template using a lowercase variable another one sets (`changed`, from lib/prelude.sh) says so with a
targeted `# shellcheck disable=SC2154`.

Secrets never appear in a script or command line: they arrive on standard input as `NAME=base64` lines
(`render_secrets_stdin`), are read into variables and written only to root-owned files. A file a stage
needs on the host (mailcow's `mailcow_api.py`) travels the same way, with its sha256 in the header. Every
stage converges: files are rewritten only when their content
differs and services restart only then, so a re-run changes nothing.
"""

from __future__ import annotations

import base64
import functools
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from components.builders.cloud_init import DATA_DISK_DEVICE, DATA_DISK_LABEL, DATA_MOUNT_POINT
from components.builders.inputs import LdapInputs
from components.builders.ports import HTTP, HTTPS, IMAPS, STRICT_TLS12_CIPHERS, SUBMISSION_SERVICES

#: What lib/data_disk.sh checks: the data disk cloud-init formats and mounts (the header's values).
DATA_DISK = {"DATA_MOUNT": DATA_MOUNT_POINT, "DATA_DEVICE": DATA_DISK_DEVICE, "DATA_LABEL": DATA_DISK_LABEL}
#: The OpenSSL cipher list of the ports that require TLS (see ports.STRICT_TLS_PORTS).
STRICT_CIPHERS = ":".join(STRICT_TLS12_CIPHERS)

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
    ldap: LdapInputs | None = None  #: the directory of CERES users' passwords; None with ldapMode off

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


SHELL = resources.files(__package__).joinpath("shell")  #: the templates' directory
CUT = "# ---- rendered below ----\n"
INCLUDE = re.compile(r"^# ---- include (lib/[\w.-]+\.sh) ----\n", re.MULTILINE)


@functools.cache
def template(path: str) -> str:
    """The text `shell/<path>` renders: what follows its preamble, each include replaced by that template's text."""
    _, cut, text = SHELL.joinpath(*path.split("/")).read_text(encoding="utf-8").partition(CUT)
    if not cut:
        raise ValueError(f"shell/{path} has no line {CUT.strip()!r}")
    return INCLUDE.sub(lambda include: template(include[1]), text)


# The templates that open a stage's script, after its header: strict mode; strict mode and put_file for the
# stages that write files; the reader of the stage's stdin (the header's SECRETS names what it takes).
STRICT = ("lib/strict.sh",)
PRELUDE = (*STRICT, "lib/prelude.sh")
READ_SECRETS = ("lib/secrets.sh",)
SECRETS_READER = template("lib/secrets.sh")


def script_header(stage: str, host: str, **variables: str | tuple[str, ...]) -> str:
    lines = ["#!/usr/bin/env bash", f"# ceres-mail {stage} stage for {host}; rendered by the stack, re-runs converge.",
             f"STAGE={stage}"]
    for name, value in variables.items():
        if any(c in "".join(value) for c in "$`"):
            lines.append("# shellcheck disable=SC2016  # literal text, not an expansion")
        if isinstance(value, tuple):
            lines.append(f"{name}=({' '.join(shlex.quote(v) for v in value)})")
        else:
            lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def render_script(stage: str, host: str, templates: Iterable[str], **variables: str | tuple[str, ...]) -> str:
    """A stage's script: its header of quoted values, then the text of its templates in order."""
    return script_header(stage, host, **variables) + "".join(template(path) for path in templates)


def render_packages_stage(inputs: InstallInputs) -> str:
    return render_script("packages", inputs.mail_host, (*STRICT, "native/packages.sh"), MAIL_HOST=inputs.mail_host, PACKAGES=PACKAGES)


def stage_secrets(stage: str, inputs: InstallInputs) -> tuple[str, ...]:
    """The secrets `stage` reads from its standard input (none: no stdin at all)."""
    if stage == "mail":
        return MAIL_SECRETS
    if stage == "tls" and inputs.tls_mode == "provided":
        return TLS_SECRETS
    return ()


def render_tls_stage(inputs: InstallInputs) -> str:
    secrets = stage_secrets("tls", inputs)
    return render_script(
        "tls",
        inputs.mail_host,
        (*PRELUDE, *(READ_SECRETS if secrets else ()), "native/tls.sh"),
        TLS_MODE=inputs.tls_mode,
        CERT_NAME=CERT_NAME,
        CERT_DIR=inputs.cert_dir,
        CERT_NAMES=inputs.certificate_names,
        ACME_DIRECTORY=inputs.acme_directory,
        ACME_EMAIL=inputs.acme_email,
        ACME_CA_BUNDLE=inputs.acme_ca_bundle.strip(),
        TLS_CERTIFICATE=inputs.tls_certificate.strip(),
        MTA_STS_POLICY=inputs.mta_sts_policy,
        STRICT_CIPHERS=STRICT_CIPHERS,
        HTTP_PORT=str(HTTP.port),
        HTTPS_PORT=str(HTTPS.port),
        **({"SECRETS": secrets} if secrets else {}),
    )


def render_mail_stage(inputs: InstallInputs) -> str:
    return render_script(
        "mail",
        inputs.mail_host,
        (*PRELUDE, *READ_SECRETS, "native/mail.sh"),
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
        STRICT_CIPHERS=STRICT_CIPHERS,
        SUBMISSION_SERVICES=tuple(service.name for service in SUBMISSION_SERVICES),
        IMPLICIT_TLS_SERVICES=tuple(service.name for service in SUBMISSION_SERVICES if service.tls == "implicit"),
        IMAPS_PORT=str(IMAPS.port),
        **DATA_DISK,
    )


#: What the access stage reads on its stdin: the stack's deploy key is known only once the stack made it.
ACCESS_INPUTS = ("DEPLOY_PUBLIC_KEY",)


@dataclass(frozen=True)
class AccessInputs:
    """Who may log in to the VM over SSH: the admin user and the keys the stack declares for it."""

    mail_host: str
    admin_user: str
    admin_keys: tuple[str, ...]  #: adminSshKeys; the deploy key is added on the VM from stdin


def render_access_stage(inputs: AccessInputs) -> str:
    return render_script("access", inputs.mail_host, (*PRELUDE, *READ_SECRETS, "common/access.sh"),
                         ADMIN_USER=inputs.admin_user, ADMIN_KEYS=inputs.admin_keys, SECRETS=ACCESS_INPUTS)


def access_stage(inputs: AccessInputs) -> Stage:
    """The first stage of every mail stack: the admin's authorized_keys, kept as the stack declares them
    (cloud-init plants them at first boot only, so a rotated key would otherwise never reach the VM)."""
    return Stage("access", render_access_stage(inputs), ACCESS_INPUTS)


def render_wait_for_cloud_init() -> str:
    """Block until first boot is done (packages, users, host key), or fail with cloud-init's verdict."""
    return "cloud-init status --wait >/dev/null || { cloud-init status --long; exit 1; }"


# The stages in the order they run, by name (the remote command of each is `<name>-install-<stage>`).
STAGES = (("packages", render_packages_stage), ("tls", render_tls_stage), ("mail", render_mail_stage))


@dataclass(frozen=True)
class Stage:
    """One remote install command: its name, its script, and what it reads from stdin.

    `files` are (variable name, text) of files the stage needs on the host: not secrets, but they travel on
    stdin with the secrets (the header's SECRETS names them too) rather than as a long argument; the header
    carries each one's sha256, so a changed file still changes the script and re-runs the stage.
    """

    name: str
    script: str
    secrets: tuple[str, ...] = ()  #: names of the secrets on stdin
    files: tuple[tuple[str, str], ...] = ()
    #: host names the stage asks an ACME server to certify (http-01): it must wait until they resolve
    certifies: tuple[str, ...] = ()


def native_stages(inputs: InstallInputs) -> tuple[Stage, ...]:
    """The native stack's stages, rendered."""
    acme_names = inputs.certificate_names if inputs.tls_mode == "acme" else ()
    return tuple(
        Stage(stage, render(inputs), stage_secrets(stage, inputs), certifies=acme_names if stage == "tls" else ())
        for stage, render in STAGES
    )


def render_install_command(script: str, stage: str = "install") -> str:
    """The remote command line: root through sudo, the script as an argument, stdin left for secrets."""
    return f"sudo -n bash -c {shlex.quote(script)} ceres-mail-{stage}"
