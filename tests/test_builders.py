"""Pure builders: deterministic text, the documented values, and third-party judges where they exist."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from dataclasses import replace

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings as hypothesis_settings, strategies as st

from components.builders.ceres_env import SmtpClient, ceres_smtp_env
from components.builders.cloud_init import DATA_DISK, CloudInitInputs, build_user_data, build_vendor_data
from components.builders.inputs import ExternalDirectory, LocalDirectory
from components.builders.native import (
    STAGES,
    AcmeTls,
    InstallInputs,
    ProvidedTls,
    render_mail_stage,
    render_tls_stage,
    stage_runs,
)
from components.builders.shell_script import CUT, SECRETS_READER, render_install_command, render_secrets_stdin, template
from tests.conftest import INSTALL, self_signed
from tests.shell_judges import SHELL_DIR, documented_variables, header_variables, shell_templates, shellcheck_template

#: ldapMode local (slapd on the mail host) and external (a directory elsewhere, StartTLS), as the settings make them
LOCAL_LDAP = LocalDirectory(url="ldaps://mail.example.com", base_dn="dc=example,dc=com",
                        users_dn="ou=people,dc=example,dc=com", bind_dn="cn=ceres-mail,dc=example,dc=com",
                        client_cidrs=("10.42.0.0/16",))
EXTERNAL_LDAP = ExternalDirectory(url="ldap://ldap.example.org:389", base_dn="o=ceres",
                           users_dn="ou=staff,ou=people,o=ceres", bind_dn="uid=mail,ou=services,o=ceres")
DIRECTORIES = {"off": None, "local": LOCAL_LDAP, "external": EXTERNAL_LDAP}
#: every stage as each ldapMode renders it (the ldap stage only exists with a local directory)
RENDERINGS = [(stage, mode, render, replace(INSTALL, ldap=ldap))
              for stage, render in STAGES for mode, ldap in DIRECTORIES.items()
              if stage_runs(stage, replace(INSTALL, ldap=ldap))]
RENDERING_IDS = [f"{stage}-{mode}" for stage, mode, _, _ in RENDERINGS]
#: the templates each stage is rendered from (with LDAP, more of them)
STAGE_TEMPLATES = {"packages": ("native/debconf.sh", "native/packages.sh"), "tls": ("native/tls.sh",),
                   "ldap": ("native/ldap.sh",), "mail": ("native/mail.sh", "native/mail_ldap.sh", "native/mail_services.sh")}


def openssh_pair():
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


# --- cloud-init ------------------------------------------------------------------------------------


def cloud_init_inputs(memory_mib: int = 2048) -> CloudInitInputs:
    return CloudInitInputs(
        hostname="mail",
        fqdn="mail.example.com",
        admin_user="ceres",
        admin_ssh_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL4YsBWNsiUHJg5MivPSYRsb/FByMtRcqEKNrXyt/h2G ops",),
        deploy_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL4YsBWNsiUHJg5MivPSYRsb/FByMtRcqEKNrXyt/h2G deploy\n",
        memory_mib=memory_mib,
    )


def test_user_data_is_deterministic_cloud_config():
    """User-data is stable cloud-config: key-only SSH, no root login, the deploy key, the mail disk mounted, no secret."""
    first = build_user_data(cloud_init_inputs())
    assert first == build_user_data(cloud_init_inputs())
    assert first.startswith("#cloud-config\n")
    config = yaml.safe_load(first)
    assert config["ssh_pwauth"] is False and config["disable_root"] is True
    assert config["users"][0]["ssh_authorized_keys"][-1].endswith(" deploy")
    assert ["LABEL=maildata", "/var/mail", "ext4", "defaults,nofail", "0", "2"] in config["mounts"]
    assert "PRIVATE KEY" not in first, "user-data is reviewable: no secret in it"


def test_vendor_data_carries_only_the_host_key_pair():
    """Vendor-data carries the host's ed25519 key pair and nothing else."""
    private, public = openssh_pair()
    config = yaml.safe_load(build_vendor_data(private, public))
    assert config == {"ssh_keys": {"ed25519_private": private.strip() + "\n", "ed25519_public": public}}


# --- install script --------------------------------------------------------------------------------


@pytest.mark.parametrize("stage, mode, render, inputs", RENDERINGS, ids=RENDERING_IDS)
def test_install_stage_passes_shellcheck(stage, mode, render, inputs):
    """shellcheck (Debian) finds nothing in any rendered stage, with every ldapMode."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make test installs it as root)")
    result = subprocess.run(["shellcheck", "--shell=bash", "-"], input=render(inputs), text=True, capture_output=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("path", shell_templates("common", "gateway", "lib", "native"))
def test_shell_template_passes_shellcheck_as_it_is(path):
    """shellcheck finds nothing in each shell template as it sits on disk, before any rendering."""
    shellcheck_template(path)


def test_every_shell_template_renders_only_what_follows_its_preamble():
    """The line that ends the preamble is there once, and no include is left unexpanded."""
    paths = sorted(str(p.relative_to(SHELL_DIR)) for p in SHELL_DIR.rglob("*") if p.is_file())
    assert paths == shell_templates("common", "gateway", "lib", "native", "mailcow"), "every file is a .sh template the shellcheck tests see"
    for path in paths:
        assert (SHELL_DIR / path).read_text().count(CUT) == 1, path
        assert "# ---- include" not in template(path) and CUT not in template(path), path


@pytest.mark.parametrize("tls_mode", ["acme", "provided"])
@pytest.mark.parametrize("stage, mode, render, inputs", RENDERINGS, ids=RENDERING_IDS)
def test_each_stage_template_names_the_header_variables_it_is_rendered_with(stage, mode, render, inputs, tls_mode):
    """A template's preamble lists what the header sets, so a reader (and shellcheck's user) knows; without
    LDAP the stage's first template alone does."""
    tls = ProvidedTls("-----BEGIN CERTIFICATE-----") if tls_mode == "provided" else AcmeTls()
    script = render(replace(inputs, tls=tls))
    templates = STAGE_TEMPLATES[stage] if inputs.ldap else (f"native/{stage}.sh",)
    assert header_variables(script) - documented_variables(*templates) == set()


@pytest.mark.parametrize("stage, mode, render, inputs", RENDERINGS, ids=RENDERING_IDS)
def test_install_stage_is_valid_bash_and_deterministic(stage, mode, render, inputs):
    """The same inputs render the same stage script; it parses as bash and runs under sudo as ceres-mail-<stage>."""
    script = render(inputs)
    assert script == render(replace(inputs))
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    command = render_install_command(script, stage)
    subprocess.run(["bash", "-n", "-c", command], check=True)
    assert command.startswith("sudo -n bash -c ") and command.endswith(f" ceres-mail-{stage}")


def test_the_install_command_runs_as_root_directly_and_as_anyone_else_through_sudo():
    """A root login runs the script itself (many VPS images have no sudo); any other user through `sudo -n`."""
    script = "#!/usr/bin/env bash\necho 'it ran'\n"
    assert render_install_command(script, "gateway-vps", "root") == f"bash -c {shlex.quote(script)} ceres-mail-gateway-vps"
    assert render_install_command(script, "gateway-vps", "debian") == f"sudo -n bash -c {shlex.quote(script)} ceres-mail-gateway-vps"
    assert render_install_command(script, "mail") == f"sudo -n bash -c {shlex.quote(script)} ceres-mail-mail"


def test_only_the_mail_stage_reads_secrets():
    """Only the mail stage's script reads the mailbox password; no other stage mentions it."""
    assert "MAILBOX_PASSWORD" in render_mail_stage(INSTALL)
    assert all("MAILBOX_PASSWORD" not in render(inputs) for stage, _, render, inputs in RENDERINGS if stage != "mail")


def test_tls_stage_asks_for_the_mail_host_and_every_mta_sts_name():
    """The certificate covers the mail host and the mta-sts host of every mail domain (RFC 8461 3.3)."""
    inputs = InstallInputs(**{**INSTALL.__dict__, "mail_domains": ("example.com", "example.org")})
    assert inputs.certificate_names == ("mail.example.com", "mta-sts.example.com", "mta-sts.example.org")
    assert "CERT_NAMES=(mail.example.com mta-sts.example.com mta-sts.example.org)" in render_tls_stage(inputs)


def test_values_are_shell_quoted_in_the_header():
    """A value with shell metacharacters stays one literal word."""
    inputs = InstallInputs(**{**INSTALL.__dict__, "mta_sts_policy": "mode: testing\n$(reboot)\n`id`"})
    script = render_tls_stage(inputs)
    assert "MTA_STS_POLICY='mode: testing\n$(reboot)\n`id`'" in script


@hypothesis_settings(max_examples=25, deadline=None)
@given(password=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=64))
def test_secrets_reach_the_script_intact_through_stdin(password):
    """Whatever the password holds (quotes, newlines, unicode), bash reads back the same bytes."""
    private, _ = openssh_pair()
    probe = ("SECRETS=(MAILBOX_PASSWORD DKIM_PRIVATE_KEY)\n" + SECRETS_READER
             + 'printf "%s" "$MAILBOX_PASSWORD" | sha256sum; printf "%s" "$DKIM_PRIVATE_KEY" | sha256sum')
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", probe],
        input=render_secrets_stdin({"MAILBOX_PASSWORD": password, "DKIM_PRIVATE_KEY": private}),
        text=True,
        capture_output=True,
        check=True,
    )
    # command substitution drops trailing newlines, as it would for any shell variable
    expected = [hashlib.sha256(v.rstrip("\n").encode()).hexdigest() for v in (password, private)]
    assert [line.split()[0] for line in result.stdout.splitlines()] == expected


def test_missing_secret_stops_the_script():
    """A stage whose stdin lacks a secret it needs stops, naming the one missing."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "SECRETS=(MAILBOX_PASSWORD DKIM_PRIVATE_KEY)\n" + SECRETS_READER],
        input="MAILBOX_PASSWORD=eA==\n", text=True, capture_output=True,
    )
    assert result.returncode != 0 and "missing on stdin: DKIM_PRIVATE_KEY" in result.stderr


def test_an_unexpected_secret_stops_the_script():
    """A stage stops on a secret it does not expect on stdin, so stdin can never set another variable (PATH)."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "SECRETS=(MAILBOX_PASSWORD)\n" + SECRETS_READER],
        input="MAILBOX_PASSWORD=eA==\nPATH=eA==\n", text=True, capture_output=True,
    )
    assert result.returncode == 2 and "unknown secret on stdin: PATH" in result.stderr


def test_provided_tls_mode_takes_the_key_on_stdin_and_skips_acme():
    """tlsMode provided: the key comes on stdin, no ACME, mail uses /etc/ceres-mail/tls; acme mode reads no secret."""
    provided = replace(INSTALL, tls=ProvidedTls("-----BEGIN CERTIFICATE-----"))
    script = render_tls_stage(provided)
    assert "SECRETS=(TLS_PRIVATE_KEY)" in script and "CERT_DIR=/etc/ceres-mail/tls" in script
    assert "SECRETS=" not in render_tls_stage(INSTALL), "acme mode reads no secret"
    assert "CERT_DIR=/etc/ceres-mail/tls" in render_mail_stage(provided)


# --- the directory (ldapMode) --------------------------------------------------------------------------

#: The sha256 of each stage's script before LDAP existed. A stack with ldapMode off must render exactly these
#: (a changed script re-runs its stage on every existing stack); a deliberate change of an off-mode stage
#: updates them. (tls: since the webmail, its HTTPS server answers HTTPS_NAMES, without the mail host when
#: the webmail has it, and takes its TLS settings from the NGINX_TLS snippet the webmail's server shares;
#: since the switch between tlsMode acme and provided on a running host, a provided certificate is written
#: before nginx is applied, and the snippet names a certificate only once it exists.
#: mail: since the WireGuard gateway, it always sets Postfix's smtp_bind_address, smtp_bind_address6 and
#: inet_protocols, to empty and `all` without a gateway, so a stack that leaves gatewayMode wireguard stops
#: binding to a tunnel address that is gone; and it drops Debian's system-user (PAM) passdb, whose failure for
#: every good mailbox login fail2ban counted.)
BEFORE_LDAP = {
    "acme": {"packages": "ef9beb787af95022702680a3ccd2201047882e9ac5152e55c4458493670479e5",
             "tls": "b5c01401c387e21024e6410a2c3d5ce20bb30b8c377363799334dc211461c273",
             "mail": "9d0e8a74d496d7852ae6a0892098317cf2f400126cc06e8cbc640a380f29e1ab"},
    "provided, two domains": {"packages": "ef9beb787af95022702680a3ccd2201047882e9ac5152e55c4458493670479e5",
                              "tls": "796961033b706b356b11e9f900dfde9f3003413fba0354f91d3a8994474078e5",
                              "mail": "5f77f6fb09c31ca3a01c63d05b9e11f0be7a1074e2b26e0b2241ec9b653cc4d9"},
}
OFF_MODE_INPUTS = {
    "acme": INSTALL,
    "provided, two domains": replace(INSTALL, tls=ProvidedTls("-----BEGIN CERTIFICATE-----"),
                                     mail_domains=("example.com", "example.org"),
                                     aliases=("postmaster@example.com", "abuse@example.org")),
}


@pytest.mark.parametrize("variant", sorted(BEFORE_LDAP))
def test_without_a_directory_every_stage_renders_as_before_ldap(variant):
    """With ldapMode off every stage's script is byte for byte as before LDAP, so existing stacks re-run nothing."""
    from components.builders.native import native_stages

    stages = native_stages(OFF_MODE_INPUTS[variant])
    assert {s.name: hashlib.sha256(s.script.encode()).hexdigest() for s in stages} == BEFORE_LDAP[variant]
    assert [s.secrets for s in stages if s.name == "mail"] == [("MAILBOX_PASSWORD", "DKIM_PRIVATE_KEY")]


@pytest.mark.parametrize("mode, names", [("off", ["packages", "tls", "mail"]), ("local", ["packages", "tls", "ldap", "mail"]),
                                         ("external", ["packages", "tls", "mail"])])
def test_the_ldap_stage_runs_only_with_a_local_directory_and_says_what_it_reads(mode, names):
    """The server component feeds each stage the secrets `Stage.secrets` names: the ldap stage both LDAP
    passwords (after tls, whose certificate slapd serves, before mail), the mail stage the bind password."""
    from components.builders.native import native_stages

    stages = {s.name: s for s in native_stages(replace(INSTALL, ldap=DIRECTORIES[mode]))}
    assert list(stages) == names
    if mode == "local":
        assert stages["ldap"].secrets == ("LDAP_ADMIN_PASSWORD", "LDAP_BIND_PASSWORD")
        assert "SECRETS=(LDAP_ADMIN_PASSWORD LDAP_BIND_PASSWORD)" in stages["ldap"].script
    expected = ("MAILBOX_PASSWORD", "DKIM_PRIVATE_KEY", *(("LDAP_BIND_PASSWORD",) if mode != "off" else ()))
    assert stages["mail"].secrets == expected
    assert f"SECRETS=({' '.join(expected)})" in stages["mail"].script


def test_the_directory_packages_come_only_with_a_directory_and_slapd_only_when_local():
    """LDAP packages come only with a directory, slapd only when local, told beforehand to make no directory itself."""
    from components.builders.native import render_packages_stage

    def packages(mode: str) -> str:
        return next(line for line in render_packages_stage(replace(INSTALL, ldap=DIRECTORIES[mode])).splitlines()
                    if line.startswith("PACKAGES="))

    assert "ldap" not in packages("off")
    assert "dovecot-ldap" in packages("external") and "postfix-ldap" in packages("external")
    assert "slapd" not in packages("external")
    assert all(p in packages("local") for p in ("dovecot-ldap", "postfix-ldap", "slapd", "ldap-utils"))
    local = render_packages_stage(replace(INSTALL, ldap=LOCAL_LDAP))
    # slapd's package makes no directory of its own, answered before any install or repair
    assert local.index("slapd/no_configuration boolean true") < local.index("dpkg --configure -a")


def test_a_new_tls_stage_re_runs_the_ldap_stage():
    """slapd serves its own copy of the certificate: a tls stage that may bring a new one (a provided
    certificate replaced, another name certified) changes the ldap stage's script, so it runs after it."""
    from components.builders.native import render_ldap_stage

    local = replace(INSTALL, ldap=LOCAL_LDAP)
    provided = replace(local, tls=ProvidedTls("-----BEGIN CERTIFICATE-----\nA"))
    scripts = {render_ldap_stage(inputs) for inputs in (local, provided, replace(provided, tls=ProvidedTls("-----BEGIN CERTIFICATE-----\nB")),
                                                         replace(local, mail_domains=("example.com", "example.org")))}
    assert len(scripts) == 4


def test_the_ldap_stage_makes_the_containers_down_to_the_people_and_the_service_account():
    """The ldap stage makes every entry from the base down to the people and service account, DNs read per RFC 4514."""
    from components.builders.ldif import ACCOUNT_CLASSES, directory_containers, entry_ldif

    assert directory_containers(LOCAL_LDAP) == (
        "dn: dc=example,dc=com\nobjectClass: top\nobjectClass: domain\ndc: example",
        "dn: ou=people,dc=example,dc=com\nobjectClass: top\nobjectClass: organizationalUnit\nou: people",
    )
    assert [entry.splitlines()[0] for entry in directory_containers(EXTERNAL_LDAP)] == [
        "dn: o=ceres", "dn: ou=people,o=ceres", "dn: ou=staff,ou=people,o=ceres", "dn: ou=services,o=ceres"]
    assert entry_ldif(EXTERNAL_LDAP.bind_dn, ACCOUNT_CLASSES, "the service account").splitlines()[1:] == [
        "objectClass: top", "objectClass: account", "objectClass: simpleSecurityObject", "uid: mail"]
    # an escaped value is the entry's attribute value unescaped; one LDIF cannot write plainly is base64
    escaped = replace(LOCAL_LDAP, base_dn="o=Ceres\\, Inc", users_dn="ou=Über,o=Ceres\\, Inc", bind_dn="cn=mail,o=Ceres\\, Inc")
    first, second = directory_containers(escaped)
    assert first.splitlines()[-1] == "o: Ceres, Inc"
    assert second.splitlines()[0].startswith("dn:: ") and second.splitlines()[-1].startswith("ou:: ")
    from components.builders.ldif import rdn_value

    assert rdn_value("\\C3\\9Cber \\2C Co\\\\2C") == "Über , Co\\2C"
    with pytest.raises(ValueError, match="named by mail=; the ldap stage makes those named by cn=, uid="):
        entry_ldif("mail=x,dc=example,dc=com", ACCOUNT_CLASSES, "the service account")


@pytest.mark.parametrize("mode, uri, start_tls", [("local", "ldapi://%2Frun%2Fslapd%2Fldapi", "no"),
                                                  ("external", "ldap://ldap.example.org:389", "yes")])
def test_the_mail_stage_finds_the_people_where_the_directory_is(mode, uri, start_tls):
    """Local: slapd's own socket (nothing on the network); external: its URL, StartTLS required for ldap://."""
    script = render_mail_stage(replace(INSTALL, ldap=DIRECTORIES[mode]))
    assert f"LDAP_URI={shlex.quote(uri)}" in script and f"LDAP_START_TLS={start_tls}" in script
    assert f"LDAP_USERS_DN={shlex.quote(DIRECTORIES[mode].users_dn)}" in script
    assert script.index("postconf -M") < script.index("proxy:ldap:") < script.index('"$(postfix_state)" != "$before"')


# --- CERES environment -----------------------------------------------------------------------------


def test_ceres_env_uses_the_seed_names_and_value_forms():
    """CERES gets the variable names and value forms it reads (port in digits, true/false), CERES_MAIL_MODE=external."""
    env = ceres_smtp_env(SmtpClient("mail.example.com", 587, True, False, "no-reply@example.com", "no-reply@example.com"))
    assert env == {
        "CERES_SMTP_HOST": "mail.example.com",
        "CERES_SMTP_PORT": "587",
        "CERES_SMTP_USER": "no-reply@example.com",
        "CERES_SMTP_STARTTLS": "true",
        "CERES_SMTP_TLS": "false",
        "CERES_MAIL_FROM": "no-reply@example.com",
        "CERES_MAIL_MODE": "external",
    }


def run_data_disk_check(mount: str) -> subprocess.CompletedProcess:
    header = "".join(f"{name}={value}\n" for name, value in {**DATA_DISK, "DATA_MOUNT": mount}.items())
    return subprocess.run(["bash", "-c", header + template("lib/strict.sh") + template("lib/data_disk.sh")],
                          capture_output=True, text=True, timeout=30)


def test_mail_is_refused_a_directory_on_the_system_disk(tmp_path):
    """cloud-init mounts the data disk `nofail`: without it the mail directory is a plain directory on the
    system disk, and the stage stops there, naming the disk it expected."""
    refused = run_data_disk_check(str(tmp_path))
    assert refused.returncode == 1
    assert f"not mounted on {tmp_path}: expected /dev/sdb (filesystem LABEL=maildata)" in refused.stderr
    # a filesystem of its own mounted there passes (here: /proc, which is never the root filesystem)
    mounted = run_data_disk_check("/proc")
    assert mounted.returncode == 0, mounted.stderr
    assert "mail data on proc at /proc" in mounted.stdout


def test_the_stages_that_store_mail_check_the_data_disk_first():
    """The mail and docker stages check the data disk is mounted before they write any mail or container data."""
    from components.builders.mailcow import MailcowInputs, render_docker_stage

    mail = render_mail_stage(INSTALL)
    assert mail.index("is not mounted on $DATA_MOUNT") < mail.index("install -d -m 0750 -o vmail")
    docker = render_docker_stage(MailcowInputs(install=INSTALL))
    assert docker.index("is not mounted on $DATA_MOUNT") < docker.index('"data-root"')


# --- the tls stage run for real, on an overlay of this machine's root (nothing reaches the machine) ------

FAKE_SYSTEMCTL = """#!/bin/sh
# records every call; `reload <unit>` fails while /record/fail-reload-<unit> exists
echo "systemctl $*" >>/record/systemctl.log
case "$1" in
  reload) [ ! -e "/record/fail-reload-$2" ] ;;
  *) exit 0 ;;
esac
"""


def run_in_scratch_root(tmp_path, script: str, stage: str, stdin: str) -> subprocess.CompletedProcess:
    """Run a stage as root in a chroot whose root is an overlay of `/`: it sees a real Debian, its writes
    land in tmp_path/upper, and systemctl and nginx are fakes that only record (there is no init to ask)."""
    upper, work, root = tmp_path / "upper", tmp_path / "work", tmp_path / "root"
    # (and what the packages stage installed: nginx's site folders)
    for directory in (upper / "usr/local/bin", upper / "record", upper / "etc/nginx/sites-enabled",
                      upper / "etc/nginx/sites-available", work, root):
        directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("nginx", "#!/bin/sh\nexit 0\n")):
        (upper / "usr/local/bin" / name).write_text(text)
        (upper / "usr/local/bin" / name).chmod(0o755)
    (tmp_path / "script").write_text(script)
    inner = (f"mount -t overlay overlay -o lowerdir=/,upperdir={upper},workdir={work} {root} && "
             f"mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc && "
             f"cp {tmp_path / 'script'} {root}/stage.sh && "
             f"exec chroot {root} env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CERES_MAIL_STATE=/state "
             f"bash /stage.sh ceres-mail-{stage}")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", inner],
                          input=stdin, text=True, capture_output=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts an overlay (make test runs as root)")
def test_a_failed_reload_of_a_provided_certificate_is_retried_not_forgotten(tmp_path):
    """A new certificate must reach Postfix and Dovecot. A reload that fails fails the stage and leaves
    the pending marker, so the next run reloads even though no file changes any more."""
    provided = replace(INSTALL, tls=ProvidedTls(""))
    names = provided.certificate_names
    upper = tmp_path / "upper"
    log, marker = upper / "record/systemctl.log", upper / "state/tls.pending"

    def run(certificate: tuple[str, str]) -> subprocess.CompletedProcess:
        inputs = replace(provided, tls=ProvidedTls(certificate[0]))
        return run_in_scratch_root(tmp_path, render_tls_stage(inputs), "tls",
                                   render_secrets_stdin({"TLS_PRIVATE_KEY": certificate[1]}))

    first = run(self_signed(*names))
    assert first.returncode == 0, first.stderr
    assert {"systemctl reload postfix", "systemctl reload dovecot"} <= set(log.read_text().splitlines())
    assert not marker.exists()

    log.unlink()
    (upper / "record/fail-reload-dovecot").touch()
    renewed = self_signed(*names)
    failed = run(renewed)
    assert failed.returncode != 0, "a failed reload fails the stage"
    assert marker.exists(), "and the change stays pending"

    (upper / "record/fail-reload-dovecot").unlink()
    log.unlink()
    retried = run(renewed)
    assert retried.returncode == 0, retried.stderr
    assert "updated" not in retried.stdout, "no file changed this time"
    assert {"systemctl reload postfix", "systemctl reload dovecot"} <= set(log.read_text().splitlines())
    assert not marker.exists()


@pytest.mark.parametrize("stage, mode, render, inputs", RENDERINGS, ids=RENDERING_IDS)
def test_no_stage_uses_a_fixed_temporary_path(stage, mode, render, inputs):
    """A fixed /tmp name can be pre-created by another user and is left behind by a failed run:
    temporary files come from mktemp, and the Postfix settings go through a pipe."""
    assert "/tmp/" not in render(inputs)


def ssh_key(comment: str) -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + f" {comment}"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts an overlay (make test runs as root)")
def test_the_access_stage_keeps_the_admin_keys_as_declared(tmp_path):
    """cloud-init plants adminSshKeys at first boot only: the access stage brings a rotated list to a
    running VM, drops a key taken off it, and always keeps the deploy key the install logs in with."""
    from components.builders.access import AccessInputs, access_stage

    deploy, old, new = ssh_key("deploy"), ssh_key("ops-old"), ssh_key("ops-new")
    authorized = tmp_path / "upper/home/ceres/.ssh/authorized_keys"

    def run(*admin_keys: str) -> subprocess.CompletedProcess:
        stage = access_stage(AccessInputs("mail.example.com", "ceres", admin_keys))
        assert stage.secrets == ("DEPLOY_PUBLIC_KEY",)
        user = "id ceres >/dev/null 2>&1 || useradd --create-home ceres\n"  # what cloud-init did at first boot
        return run_in_scratch_root(tmp_path, user + stage.script, "access",
                                   render_secrets_stdin({"DEPLOY_PUBLIC_KEY": deploy}))

    first = run(old)
    assert first.returncode == 0, first.stderr
    keys = [line for line in authorized.read_text().splitlines() if not line.startswith("#")]
    assert keys == [old, deploy]
    assert oct(authorized.stat().st_mode & 0o777) == "0o600"
    rotated = run(new)
    assert rotated.returncode == 0, rotated.stderr
    assert [line for line in authorized.read_text().splitlines() if not line.startswith("#")] == [new, deploy]
    again = run(new)
    assert again.returncode == 0 and "updated" not in again.stdout


def test_the_strict_ports_tls12_suites_are_each_ecdhe_with_an_aead_cipher():
    """Judged suite by suite from OpenSSL's own description, not by name, and whatever the certificate: a
    CBC or static-RSA suite for RSA certificates would never be negotiated with the test host's ECDSA one
    (the mail world's provided certificate, an RSA one, is scanned on the running host as well)."""
    import ssl

    from components.builders.native import STRICT_CIPHERS
    from components.builders.ports import STRICT_TLS12_CIPHERS

    assert STRICT_CIPHERS == ":".join(STRICT_TLS12_CIPHERS), "what Postfix, Dovecot and nginx are given"
    for suite in STRICT_TLS12_CIPHERS:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.set_ciphers(suite)
        [described] = [c for c in context.get_ciphers() if c["name"] == suite]
        assert described["kea"] == "kx-ecdhe" and described["aead"], described
    assert {suite.split("-")[1] for suite in STRICT_TLS12_CIPHERS} == {"ECDSA", "RSA"}, "both kinds of certificate"
