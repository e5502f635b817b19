"""The mailcow stack: static checks, the stages run against stand-ins, and the graph.

mailcow's images cannot be pulled on these machines, so what is proven here is everything up to them:
every rendered script, and every template in components/builders/shell/mailcow as it is, passes
shellcheck; mailcow.conf parses back key by key (as bash sources it and as compose reads .env); the
`mailcow` stage writes that file with the secrets filled in from stdin and starts compose (a recording
`docker`); the `release` stage clones, keeps and moves the pinned tag against a local git repository
and runs mailcow's update procedure only on a move; the `configure` stage (mailcow_api.py on its stdin)
drives a local fake of mailcow's API (tests/mailcow_fake.py) and makes no write on a re-run. The
graph test shows that switching stacks changes only the install part and the VM's size.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import secrets as random_secrets
import shutil
import stat
import string
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dotenv import dotenv_values

from components.builders import mailcow as mailcow_module
from components.builders.mailcow import (
    CONF_SECRETS,
    MAILCOW_RELEASE_COMMITS,
    MailcowInputs,
    api_program,
    desired_state,
    mailcow_conf,
    mailcow_stages,
    render_configure_stage,
    render_mailcow_stage,
    render_release_stage,
)
from components.builders.native import ProvidedTls
from components.builders.shell_script import render_secrets_stdin
from mailctl.diff import diff_plans
from mailctl.recorder import record
from mailctl.render import render_mermaid, render_text
from tests.conftest import INSTALL as ONE_DOMAIN, PROJECT_DIR, one, stack_config
from tests.mailcow_fake import FakeMailcow, serve
from tests.shell_judges import documented_variables, header_variables, shell_templates, shellcheck_template

INSTALL = replace(
    ONE_DOMAIN,
    mail_domains=("example.com", "example.org"),
    aliases=("abuse@example.com", "abuse@example.org", "dmarc@example.com", "postmaster@example.com",
             "postmaster@example.org", "tls-reports@example.com"),
)
MAILCOW = MailcowInputs(install=INSTALL, timezone="Europe/Berlin", clamav=False)
PROVIDED = replace(MAILCOW, install=replace(INSTALL, tls=ProvidedTls("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")))

# The keys generate_config.sh of the pinned release (2026-07a) writes, and the options its update
# procedure adds when missing (_modules/scripts/new_options.sh): the rendered file must carry all of
# them, or `update.sh` would append to it and the next run would take the additions out again.
GENERATE_CONFIG_KEYS = {
    "MAILCOW_HOSTNAME", "MAILCOW_PASS_SCHEME", "DBNAME", "DBUSER", "DBPASS", "DBROOT", "REDISPASS", "HTTP_PORT",
    "HTTP_BIND", "HTTPS_PORT", "HTTPS_BIND", "HTTP_REDIRECT", "SMTP_PORT", "SMTPS_PORT", "SUBMISSION_PORT",
    "IMAP_PORT", "IMAPS_PORT", "POP_PORT", "POPS_PORT", "SIEVE_PORT", "DOVEADM_PORT", "SQL_PORT", "REDIS_PORT",
    "TZ", "COMPOSE_PROJECT_NAME", "DOCKER_COMPOSE_VERSION", "ACL_ANYONE", "MAILDIR_GC_TIME", "ADDITIONAL_SAN",
    "AUTODISCOVER_SAN", "ADDITIONAL_SERVER_NAMES", "SKIP_LETS_ENCRYPT", "ACME_DNS_CHALLENGE", "ACME_DNS_PROVIDER",
    "ACME_ACCOUNT_EMAIL", "ENABLE_SSL_SNI", "SKIP_IP_CHECK", "SKIP_HTTP_VERIFICATION", "SKIP_UNBOUND_HEALTHCHECK",
    "SKIP_CLAMD", "SKIP_OLEFY", "SKIP_SOGO", "SKIP_FTS", "FTS_HEAP", "FTS_PROCS", "ALLOW_ADMIN_EMAIL_LOGIN",
    "USE_WATCHDOG", "WATCHDOG_NOTIFY_BAN", "WATCHDOG_NOTIFY_START", "WATCHDOG_EXTERNAL_CHECKS", "WATCHDOG_VERBOSE",
    "LOG_LINES", "IPV4_NETWORK", "IPV6_NETWORK", "MAILDIR_SUB", "SOGO_EXPIRE_SESSION", "SOGO_URL_ENCRYPTION_KEY",
    "DOVECOT_MASTER_USER", "DOVECOT_MASTER_PASS", "WEBAUTHN_ONLY_TRUSTED_VENDORS", "SPAMHAUS_DQS_KEY",
    "ENABLE_IPV6", "DISABLE_NETFILTER_ISOLATION_RULE",
}
UPDATE_ADDS_IF_MISSING = {
    "AUTODISCOVER_SAN", "SKIP_LETS_ENCRYPT", "SKIP_SOGO", "USE_WATCHDOG", "WATCHDOG_NOTIFY_EMAIL",
    "WATCHDOG_NOTIFY_WEBHOOK", "WATCHDOG_NOTIFY_WEBHOOK_BODY", "WATCHDOG_NOTIFY_BAN", "WATCHDOG_NOTIFY_START",
    "WATCHDOG_EXTERNAL_CHECKS", "WATCHDOG_SUBJECT", "SKIP_CLAMD", "SKIP_OLEFY", "SKIP_IP_CHECK", "ADDITIONAL_SAN",
    "DOVEADM_PORT", "IPV4_NETWORK", "IPV6_NETWORK", "LOG_LINES", "SNAT_TO_SOURCE", "SNAT6_TO_SOURCE",
    "COMPOSE_PROJECT_NAME", "DOCKER_COMPOSE_VERSION", "SQL_PORT", "API_KEY", "API_KEY_READ_ONLY", "API_ALLOW_FROM",
    "MAILDIR_GC_TIME", "MAILDIR_SUB", "ACL_ANYONE", "FTS_HEAP", "FTS_PROCS", "SKIP_FTS", "ENABLE_SSL_SNI",
    "ALLOW_ADMIN_EMAIL_LOGIN", "SKIP_HTTP_VERIFICATION", "SOGO_EXPIRE_SESSION", "SOGO_URL_ENCRYPTION_KEY",
    "REDIS_PORT", "REDISPASS", "DOVECOT_MASTER_USER", "DOVECOT_MASTER_PASS", "MAILCOW_PASS_SCHEME",
    "ADDITIONAL_SERVER_NAMES", "WATCHDOG_VERBOSE", "WEBAUTHN_ONLY_TRUSTED_VENDORS", "SPAMHAUS_DQS_KEY",
    "SKIP_UNBOUND_HEALTHCHECK", "DISABLE_NETFILTER_ISOLATION_RULE", "HTTP_REDIRECT", "ENABLE_IPV6",
    "ACME_DNS_CHALLENGE", "ACME_DNS_PROVIDER", "ACME_ACCOUNT_EMAIL",
}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the stages write root-owned files (make test runs as root)")


def alnum(length: int) -> str:
    return "".join(random_secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def conf_secrets() -> dict[str, str]:
    return {key: alnum(secret.length) for key, secret in CONF_SECRETS.items()}


def dkim_key() -> tuple[str, str]:
    """A DKIM key as pulumi-tls gives it (PKCS#1 PEM) and its public key as mailcow stores it."""
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(spki).decode()


def run_stage(script: str, stage: str, secrets: dict[str, str] | None, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, f"ceres-mail-{stage}"], input=render_secrets_stdin(secrets) if secrets else "",
                          text=True, capture_output=True, env=env, cwd=cwd, timeout=300)


def assert_no_secret_in(text: str, values) -> None:
    for value in values:
        for piece in (value, *[line for line in value.splitlines() if len(line) > 20]):
            assert piece not in text, "a secret value reached the output"


# --- static: scripts and mailcow.conf ---------------------------------------------------------------


@pytest.mark.parametrize("inputs", [MAILCOW, PROVIDED], ids=["acme", "provided-tls"])
def test_every_mailcow_stage_passes_shellcheck_and_is_deterministic(inputs):
    """The four mailcow stages pass shellcheck and render the same bytes from the same inputs."""
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make test installs it as root)")
    stages = mailcow_stages(inputs)
    assert [s.name for s in stages] == ["docker", "release", "mailcow", "configure"]
    assert stages == mailcow_stages(inputs), "the same inputs render the same bytes"
    for stage in stages:
        result = subprocess.run(["shellcheck", "--shell=bash", "-"], input=stage.script, text=True, capture_output=True)
        assert result.returncode == 0, f"{stage.name}:\n{result.stdout}"


@pytest.mark.parametrize("path", shell_templates("mailcow"))
def test_mailcow_template_passes_shellcheck_as_it_is(path):
    """Every mailcow shell template passes shellcheck as it is on disk."""
    shellcheck_template(path)


@pytest.mark.parametrize("inputs", [MAILCOW, PROVIDED], ids=["acme", "provided-tls"])
def test_each_mailcow_template_names_the_header_variables_it_is_rendered_with(inputs):
    """Each mailcow template's preamble names every variable its rendered header sets."""
    for stage in mailcow_stages(inputs):
        assert header_variables(stage.script) - documented_variables(f"mailcow/{stage.name}.sh") == set(), stage.name


def test_secrets_go_only_to_the_stages_that_use_them_and_never_into_a_script():
    """Each mailcow stage gets only the secrets it uses, on stdin; the rendered mailcow.conf leaves them empty."""
    stages = {s.name: s for s in mailcow_stages(PROVIDED)}
    assert stages["docker"].secrets == stages["release"].secrets == ()
    assert set(stages["mailcow"].secrets) == {*CONF_SECRETS, "TLS_PRIVATE_KEY"}
    assert set(stages["configure"].secrets) == {"API_KEY", "DKIM_PRIVATE_KEY", "MAILBOX_PASSWORD"}
    template = dotenv_values(stream=io.StringIO(stages["mailcow"].script.split("MAILCOW_CONF='", 1)[1].split("'\n", 1)[0]))
    assert all(template[key] == "" for key in CONF_SECRETS), "secret keys are rendered empty, filled on the VM"


def parse_with_bash(text: str, tmp_path: Path) -> dict[str, str]:
    """mailcow.conf as update.sh reads it: `source mailcow.conf`."""
    path = tmp_path / "mailcow.conf"
    path.write_text(text)
    out = subprocess.run(["env", "-i", "bash", "-c", f"set -a; source {path}; env -0"], capture_output=True, text=True, check=True).stdout
    return {k: v for k, _, v in (entry.partition("=") for entry in out.split("\0") if entry)}


def test_mailcow_conf_parses_back_key_by_key(tmp_path):
    """mailcow.conf has every key the pinned release writes (so update.sh adds none), read alike by bash and compose."""
    secrets = conf_secrets()
    text = mailcow_conf(MAILCOW, secrets)
    assert text == mailcow_conf(MAILCOW, secrets)
    as_env_file = dotenv_values(stream=io.StringIO(text))  # how compose reads .env
    as_bash = parse_with_bash(text, tmp_path)
    written = {line.split("=", 1)[0].lstrip("#") for line in text.splitlines() if "=" in line}
    assert GENERATE_CONFIG_KEYS <= set(as_env_file) and UPDATE_ADDS_IF_MISSING <= written
    assert all(as_bash.get(key, "") == value for key, value in as_env_file.items()), "bash and compose read the same values"
    expected = {
        "MAILCOW_HOSTNAME": "mail.example.com", "TZ": "Europe/Berlin", "SKIP_CLAMD": "y",
        "HTTP_PORT": "80", "HTTP_BIND": "", "HTTPS_PORT": "443", "HTTPS_BIND": "", "HTTP_REDIRECT": "y",
        "SMTP_PORT": "25", "SUBMISSION_PORT": "587", "IMAPS_PORT": "993",
        "SKIP_LETS_ENCRYPT": "n", "DIRECTORY_URL": "", "ACME_ACCOUNT_EMAIL": "postmaster@example.com",
        "ADDITIONAL_SAN": "mta-sts.example.com,mta-sts.example.org", "AUTODISCOVER_SAN": "n",
        "API_ALLOW_FROM": "127.0.0.1,::1,172.22.1.1", "ENABLE_IPV6": "false", "DOCKER_COMPOSE_VERSION": "native",
        "SQL_PORT": "127.0.0.1:13306", "REDIS_PORT": "127.0.0.1:7654", "DOVEADM_PORT": "127.0.0.1:19991",
        **secrets,
    }
    for key, value in expected.items():
        assert as_env_file[key] == value, key
    assert len(as_env_file["SOGO_URL_ENCRYPTION_KEY"]) == 16


def test_mailcow_conf_follows_the_settings():
    """The ClamAV, IPv6, autodiscover, ACME directory and provided-certificate settings each reach mailcow.conf."""
    secrets = conf_secrets()
    acme_elsewhere = replace(MAILCOW, clamav=True, ipv6=True, autodiscover=True,
                             install=replace(INSTALL, acme_directory="https://acme.example.net/directory"))
    conf = dotenv_values(stream=io.StringIO(mailcow_conf(acme_elsewhere, secrets)))
    assert (conf["SKIP_CLAMD"], conf["ENABLE_IPV6"], conf["AUTODISCOVER_SAN"]) == ("n", "true", "y")
    assert conf["DIRECTORY_URL"] == "https://acme.example.net/directory"
    assert dotenv_values(stream=io.StringIO(mailcow_conf(PROVIDED, secrets)))["SKIP_LETS_ENCRYPT"] == "y"


def test_mailcow_conf_refuses_a_value_that_would_need_quoting():
    """A setting that would need quoting in mailcow.conf, like an apostrophe, is refused naming its key."""
    bad = replace(MAILCOW, install=replace(INSTALL, acme_email="o'neil@example.com"))
    with pytest.raises(ValueError, match="ACME_ACCOUNT_EMAIL"):
        mailcow_conf(bad, conf_secrets())


# --- the mailcow stage, run against a recording docker and curl ---------------------------------------

FAKE_DOCKER = """#!/bin/sh
echo "docker $*" >>"$RECORD/docker.log"
"""
# curl reads its config (the API key header) from stdin; records argv and that config separately
FAKE_CURL = """#!/bin/sh
echo "curl $*" >>"$RECORD/curl.argv"
cat >"$RECORD/curl.config"
[ -e "$RECORD/api-up" ]
"""


@pytest.fixture
def sandbox(tmp_path):
    """A mailcow checkout stand-in, a state dir, and docker/curl that record instead of acting."""
    bin_dir, record_dir, checkout = tmp_path / "bin", tmp_path / "record", tmp_path / "mailcow"
    for directory in (bin_dir, record_dir, checkout / "data/conf/rspamd/override.d"):
        directory.mkdir(parents=True)
    for name, text in (("docker", FAKE_DOCKER), ("curl", FAKE_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record_dir), "CERES_MAIL_STATE": str(tmp_path / "state"),
           "HOME": str(tmp_path)}
    return tmp_path, checkout, record_dir, env


@needs_root
def test_mailcow_stage_writes_the_conf_with_its_secrets_and_starts_compose(sandbox):
    """The stage writes mailcow.conf (0600) with its secrets and starts compose, never showing one; re-runs keep it."""
    tmp_path, checkout, record_dir, env = sandbox
    (record_dir / "api-up").touch()
    inputs = replace(MAILCOW, directory=str(checkout))
    script, secrets = render_mailcow_stage(inputs), conf_secrets()
    first = run_stage(script, "mailcow", secrets, env, tmp_path)
    assert first.returncode == 0, first.stderr
    conf_path = checkout / "mailcow.conf"
    assert stat.S_IMODE(conf_path.stat().st_mode) == 0o600
    assert dotenv_values(conf_path) == dotenv_values(stream=io.StringIO(mailcow_conf(inputs, secrets)))
    assert os.readlink(checkout / ".env") == "mailcow.conf"
    assert (checkout / "data/assets/ssl/cert.pem").exists(), "a stand-in certificate until acme-mailcow's"
    assert "docker compose up -d --remove-orphans --quiet-pull" in (record_dir / "docker.log").read_text()
    assert secrets["API_KEY"] not in (record_dir / "curl.argv").read_text(), "the API key is not on curl's command line"
    assert f"X-API-Key: {secrets['API_KEY']}" in (record_dir / "curl.config").read_text()
    assert_no_secret_in(first.stdout + first.stderr, secrets.values())

    before = conf_path.stat().st_mtime_ns
    again = run_stage(script, "mailcow", secrets, env, tmp_path)
    assert again.returncode == 0 and "updated" not in again.stdout
    assert conf_path.stat().st_mtime_ns == before, "a re-run leaves mailcow.conf alone"


@needs_root
def test_mailcow_stage_fails_clearly_when_the_api_never_answers(sandbox):
    """When mailcow's API never answers, the stage fails saying so and how long it waited, with compose's state."""
    tmp_path, checkout, record_dir, env = sandbox
    inputs = replace(MAILCOW, directory=str(checkout), api_wait_tries=1)
    result = run_stage(render_mailcow_stage(inputs), "mailcow", conf_secrets(), env, tmp_path)
    assert result.returncode == 1
    assert "mailcow's API at https://127.0.0.1 did not answer within 5s" in result.stderr
    assert "docker compose ps" in (record_dir / "docker.log").read_text()


# --- the release stage, against a local stand-in of mailcow-dockerized's repository ------------------


def git(*args, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path):
    """A repository with release tags; its update.sh records how it was called."""
    work = tmp_path / "upstream-work"
    work.mkdir()
    git("init", "-q", "-b", "master", cwd=work)
    (work / "update.sh").write_text('#!/bin/bash\necho "$*" >>"$RECORD/update.log"\n')
    (work / "update.sh").chmod(0o755)
    (work / "data/web/inc").mkdir(parents=True)
    (work / "data/web/inc/.keep").touch()

    def release(tag: str) -> None:
        (work / "VERSION").write_text(tag)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", tag, cwd=work)
        git("tag", tag, cwd=work)

    release("2026-05")
    release("2026-07a")
    return work, release


@needs_root
def test_release_stage_clones_keeps_and_moves_the_pinned_tag(sandbox, upstream):
    """The release stage clones the pinned tag, keeps it, moves forward (updating a running mailcow), never back."""
    tmp_path, _, record_dir, env = sandbox
    work, release = upstream
    checkout = tmp_path / "opt-mailcow"
    pinned = replace(MAILCOW, directory=str(checkout), repository=f"file://{work}")

    def at(tag: str, commit: str = "") -> subprocess.CompletedProcess:
        """The stage pinned to `tag` at the commit it names upstream now (or at `commit`)."""
        if not commit:
            commit = git("rev-parse", "--quiet", "--verify", f"refs/tags/{tag}^{{commit}}", cwd=work) if tag in git("tag", cwd=work).split() else "0" * 40
        return run_stage(render_release_stage(replace(pinned, release=tag, commit=commit)), "release", None, env, tmp_path)

    first = at("2026-05")
    assert first.returncode == 0, first.stderr
    assert (checkout / "VERSION").read_text() == "2026-05"
    assert '$MAILCOW_GIT_VERSION="2026-05";' in (checkout / "data/web/inc/app_info.inc.php").read_text()
    assert "already in place" in at("2026-05").stdout

    # not configured yet: moving the tag is a checkout, nothing to update
    assert at("2026-07a").returncode == 0 and not (record_dir / "update.log").exists()

    # a running installation: moving the tag runs mailcow's update procedure, without questions
    (checkout / "mailcow.conf").write_text("MAILCOW_HOSTNAME=mail.example.com\n")
    release("2026-09")
    moved = at("2026-09")
    assert moved.returncode == 0, moved.stderr
    assert (checkout / "VERSION").read_text() == "2026-09"
    assert (record_dir / "update.log").read_text() == "--force --dev --skip-ping-check\n"
    assert "updating mailcow from 2026-07a to 2026-09" in moved.stdout

    back = at("2026-05")
    assert back.returncode == 1 and "only goes forward" in back.stderr
    missing = at("2027-01")
    assert missing.returncode == 1 and "has no release tag '2027-01' (mailcowVersion)" in missing.stderr
    assert (checkout / "VERSION").read_text() == "2026-09", "a refused move leaves the installation as it was"


@needs_root
def test_a_moved_release_tag_is_refused(sandbox, upstream):
    """Tags move; the stage checks out a release only while its tag names the pinned commit."""
    tmp_path, _, _, env = sandbox
    work, release = upstream
    pinned = git("rev-parse", "refs/tags/2026-07a^{commit}", cwd=work)
    inputs = replace(MAILCOW, directory=str(tmp_path / "opt-mailcow"), repository=f"file://{work}",
                     release="2026-07a", commit=pinned)
    (work / "VERSION").write_text("something else")
    git("commit", "-q", "-am", "moved", cwd=work)
    git("tag", "-f", "2026-07a", cwd=work)
    refused = run_stage(render_release_stage(inputs), "release", None, env, tmp_path)
    assert refused.returncode == 1
    assert f"tag 2026-07a names {git('rev-parse', 'HEAD', cwd=work)}, not the pinned commit {pinned}" in refused.stderr
    assert not (tmp_path / "opt-mailcow").exists(), "nothing is left checked out"


def test_the_default_release_is_pinned_to_a_commit():
    """The default mailcow release is pinned to a full commit hash, which the release stage carries."""
    assert MAILCOW.release in MAILCOW_RELEASE_COMMITS
    assert re.fullmatch(r"[0-9a-f]{40}", MAILCOW.commit) and MAILCOW.commit == MAILCOW_RELEASE_COMMITS[MAILCOW.release]
    assert f"MAILCOW_COMMIT={MAILCOW.commit}" in render_release_stage(MAILCOW)


# --- the configure stage, against a fake of mailcow's API ------------------------------------------


@pytest.fixture
def mailcow_api(tmp_path):
    state = FakeMailcow(api_key=alnum(40))
    running, stop = serve(state, tmp_path)
    yield running
    stop()


def configure(running, secrets: dict[str, str], tmp_path: Path, inputs: MailcowInputs = MAILCOW,
              program: str | None = None) -> subprocess.CompletedProcess:
    """The configure stage as the stack runs it: its stdin the secrets and mailcow_api.py (or `program`)."""
    inputs = replace(inputs, api_url=running.api_url, imap_endpoint=running.imap_endpoint)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    [stage] = [s for s in mailcow_stages(inputs) if s.name == "configure"]
    files = dict(stage.files) if program is None else {"API_PROGRAM": program}
    return run_stage(stage.script, "configure", {**secrets, **files}, env, tmp_path)


@pytest.fixture
def stack_secrets(mailcow_api):
    private, public = dkim_key()
    return {"API_KEY": mailcow_api.state.api_key, "MAILBOX_PASSWORD": alnum(32), "DKIM_PRIVATE_KEY": private}, public


def posts(state: FakeMailcow) -> list[str]:
    return [call.path.removeprefix("/api/v1/") for call in state.calls if call.writes]


def test_configure_creates_domains_mailbox_aliases_dkim_and_mta_sts(mailcow_api, stack_secrets, tmp_path):
    """The configure stage creates the domains, mailbox, aliases, DKIM keys and MTA-STS policies, showing no secret."""
    secrets, public = stack_secrets
    result = configure(mailcow_api, secrets, tmp_path)
    assert result.returncode == 0, result.stderr
    state = mailcow_api.state
    assert posts(state) == (["add/domain"] * 2 + ["add/mailbox"] + ["add/alias"] * 6 + ["add/dkim_import"] * 2
                            + ["add/mta-sts"] * 2)
    assert set(state.domains) == {"example.com", "example.org"}
    assert state.mailboxes["no-reply@example.com"]["password"] == secrets["MAILBOX_PASSWORD"]
    assert state.mailboxes["no-reply@example.com"]["name"] == "CERES"
    assert {a["address"]: a["goto"] for a in state.aliases.values()} == {alias: "no-reply@example.com" for alias in INSTALL.aliases}
    assert {d: (k["selector"], k["pubkey"]) for d, k in state.dkim.items()} == {d: ("ceres", public) for d in INSTALL.domains}
    assert state.mta_sts_text("example.org") == "version: STSv1\nmode: testing\nmax_age: 604800\nmx: mail.example.com\n"
    assert "mailcow: 13 change(s)" in result.stdout
    assert_no_secret_in(result.stdout + result.stderr, secrets.values())


def test_a_second_run_reads_but_writes_nothing(mailcow_api, stack_secrets, tmp_path):
    """A second configure run only reads: it checks the mailbox password by logging in and writes nothing."""
    secrets, _ = stack_secrets
    assert configure(mailcow_api, secrets, tmp_path).returncode == 0
    mailcow_api.state.calls.clear()
    again = configure(mailcow_api, secrets, tmp_path)
    assert again.returncode == 0, again.stderr
    assert posts(mailcow_api.state) == [] and mailcow_api.state.calls, "it read, and wrote nothing"
    assert mailcow_api.state.imap_logins[-1] == ("no-reply@example.com", True), "the password was checked by logging in"
    assert "already as declared, nothing written" in again.stdout


def test_drift_made_in_mailcow_is_put_back_and_only_that(mailcow_api, stack_secrets, tmp_path):
    """Changes made in mailcow (password, domain, alias, DKIM key) are put back, and nothing else is written."""
    secrets, public = stack_secrets
    assert configure(mailcow_api, secrets, tmp_path).returncode == 0
    state = mailcow_api.state
    state.mailboxes["no-reply@example.com"]["password"] = "changed-in-the-ui"
    state.domains["example.org"]["active"] = 0
    next(a for a in state.aliases.values() if a["address"] == "abuse@example.com")["goto"] = "someone@example.net"
    state.dkim["example.org"]["pubkey"] = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAother"
    state.calls.clear()
    result = configure(mailcow_api, secrets, tmp_path)
    assert result.returncode == 0, result.stderr
    assert posts(state) == ["edit/domain", "edit/mailbox", "edit/alias", "add/dkim_import"]
    edit_mailbox = next(c.body for c in state.calls if c.path.endswith("edit/mailbox"))
    assert set(edit_mailbox["attr"]) == {"password", "password2"}, "only the password is reset"
    assert state.mailboxes["no-reply@example.com"]["password"] == secrets["MAILBOX_PASSWORD"]
    assert state.dkim["example.org"]["pubkey"] == public
    assert_no_secret_in(result.stdout + result.stderr, secrets.values())


def test_switching_the_signing_selector_imports_the_new_key_for_each_domain_and_leaves_no_old_one(
        mailcow_api, stack_secrets, tmp_path):
    """Step 2 of a rotation: mailcow keeps one key per domain, so the switch is one overwriting import per
    domain, and the retired private key is gone from mailcow (it stays published in DNS only)."""
    secrets, _ = stack_secrets
    assert configure(mailcow_api, secrets, tmp_path).returncode == 0
    state = mailcow_api.state
    assert sorted(state.dkim_private_keys) == ["ceres.example.com", "ceres.example.org"]
    state.calls.clear()
    new_private, new_public = dkim_key()
    switched = replace(MAILCOW, install=replace(INSTALL, dkim_selector="ceres2026"))
    result = configure(mailcow_api, {**secrets, "DKIM_PRIVATE_KEY": new_private}, tmp_path, inputs=switched)
    assert result.returncode == 0, result.stderr
    assert posts(state) == ["add/dkim_import"] * 2
    imports = [c.body for c in state.calls if c.writes]
    assert [(b["domain"], b["dkim_selector"], int(b["overwrite_existing"])) for b in imports] == [
        ("example.com", "ceres2026", 1), ("example.org", "ceres2026", 1)]
    assert {d: (k["selector"], k["pubkey"]) for d, k in state.dkim.items()} == {d: ("ceres2026", new_public) for d in INSTALL.domains}
    assert sorted(state.dkim_private_keys) == ["ceres2026.example.com", "ceres2026.example.org"]
    assert_no_secret_in(result.stdout + result.stderr, [new_private, *secrets.values()])


def test_a_changed_mta_sts_mode_edits_the_policy_only(mailcow_api, stack_secrets, tmp_path):
    """A new MTA-STS mode edits each domain's policy and writes nothing else."""
    secrets, _ = stack_secrets
    assert configure(mailcow_api, secrets, tmp_path).returncode == 0
    mailcow_api.state.calls.clear()
    assert configure(mailcow_api, secrets, tmp_path, replace(MAILCOW, mta_sts_mode="enforce")).returncode == 0
    assert posts(mailcow_api.state) == ["edit/mta-sts", "edit/mta-sts"]
    assert "mode: enforce" in mailcow_api.state.mta_sts_text("example.com")


def test_an_api_refusal_fails_the_stage_with_mailcows_reason_and_no_secret(mailcow_api, stack_secrets, tmp_path):
    """When mailcow refuses a change the stage fails with mailcow's reason, no traceback and no secret."""
    secrets, _ = stack_secrets
    mailcow_api.state.refuse["add/mailbox"] = ["mailbox_quota_exceeded", "2048"]
    result = configure(mailcow_api, secrets, tmp_path)
    assert result.returncode == 1
    assert "mailcow refused add/mailbox for no-reply@example.com: mailbox_quota_exceeded 2048" in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_secret_in(result.stdout + result.stderr, secrets.values())


def test_a_wrong_api_key_is_reported_as_such(mailcow_api, stack_secrets, tmp_path):
    """A wrong API key fails the stage as refused (401), pointing at API_KEY and API_ALLOW_FROM, and writes nothing."""
    secrets, _ = stack_secrets
    result = configure(mailcow_api, {**secrets, "API_KEY": alnum(40)}, tmp_path)
    assert result.returncode == 1
    assert "the API key was refused (401); check API_KEY and API_ALLOW_FROM" in result.stderr
    assert posts(mailcow_api.state) == []


def test_mailcow_api_travels_on_stdin_and_the_script_carries_its_hash(monkeypatch):
    """mailcow_api.py is a file on the stage's stdin, not an argument; its sha256 in the script re-runs
    the stage when the program changes, though stdin is secret and never diffed."""
    [stage] = [s for s in mailcow_stages(MAILCOW) if s.name == "configure"]
    program = (PROJECT_DIR / "components/vm_programs/mailcow_api.py").read_text().rstrip("\n") + "\n"
    assert stage.files == (("API_PROGRAM", program),) and "def converge" not in stage.script
    assert f"API_PROGRAM_SHA256={hashlib.sha256(program.encode()).hexdigest()}\n" in stage.script
    assert "SECRETS=(API_KEY DKIM_PRIVATE_KEY MAILBOX_PASSWORD API_PROGRAM)\n" in stage.script
    monkeypatch.setattr(mailcow_module, "api_program", lambda: program + "# changed\n")
    assert render_configure_stage(MAILCOW) != stage.script


def test_a_program_other_than_the_rendered_one_is_not_run(mailcow_api, stack_secrets, tmp_path):
    """A mailcow_api.py on stdin other than the one the stage was rendered with is not run and calls no API."""
    secrets, _ = stack_secrets
    result = configure(mailcow_api, secrets, tmp_path, program=api_program() + "print('not this one')\n")
    assert result.returncode == 2 and "mailcow_api.py on stdin is not the one this stage was rendered with" in result.stderr
    assert mailcow_api.state.calls == []


def test_desired_state_holds_no_secret_and_names_every_domain():
    """The configure stage's desired state names every mail domain and holds no password."""
    state = desired_state(MAILCOW)
    assert '"domains": ["example.com", "example.org"]' in state and "password" not in state.lower()


# --- the graph --------------------------------------------------------------------------------------


def plan_of(scratch_project, **changes):
    config = stack_config("prod")
    config.update({f"ceres-mail:{key}": value for key, value in changes.items()})
    return record(scratch_project("prod", config), "prod")


COMMAND = "command:remote:Command"
VM = "proxmoxve:index/vmLegacy:VmLegacy"


def test_switching_native_to_mailcow_changes_only_the_install_part_and_the_vm_size(scratch_project):
    """Switching to mailcow swaps only the install stages and their secrets, and grows the VM's disk and memory."""
    native, mailcow = plan_of(scratch_project), plan_of(scratch_project, mailStack="mailcow")
    changes = diff_plans(native, mailcow)
    server = one(mailcow, "ceres-mail:mail:Server").urn
    outside = [c for c in changes if mailcow.by_urn().get(c.urn, native.by_urn().get(c.urn)).parent != server]
    assert [(c.name, c.action, sorted(c.inputs)) for c in outside] == [
        ("ceres-mail-vm-vm", "changed", ["disks[0].size", "memory.dedicated"])
    ]
    assert {c.name.removeprefix("ceres-mail-server-") for c in changes if c.action == "removed"} == {
        "install-packages", "install-tls", "install-mail", "install-webmail", "install-fail2ban", "native-roundcube-des-key"}
    assert {c.name.removeprefix("ceres-mail-server-") for c in changes if c.action == "added"} == {
        "install-docker", "install-release", "install-mailcow", "install-configure", "mailcow-api-key",
        "mailcow-db-password", "mailcow-db-root-password", "mailcow-redis-password", "mailcow-sogo-url-key"}
    vm = next(c for c in changes if c.name == "ceres-mail-vm-vm")
    assert vm.inputs == {"disks[0].size": {"before": 20, "after": 40}, "memory.dedicated": {"before": 2048, "after": 6144}}


def test_mailcow_stages_run_in_order_and_ceres_waits_for_the_configured_mailbox(scratch_project):
    """The mailcow stages run in order, secrets on stdin; CERES and Keycloak wait for configure, never for backup."""
    plan = plan_of(scratch_project, mailStack="mailcow")
    order = ["-wait-cloud-init", "-install-access", "-install-docker", "-install-release", "-install-mailcow",
             "-install-configure"]
    for before, after in zip(order, order[1:]):
        assert one(plan, COMMAND, before).urn in one(plan, COMMAND, after).dependencies
    configured = one(plan, COMMAND, "-install-configure").urn
    for type_ in ("kubernetes:core/v1:Secret", "keycloak:index/realm:Realm"):
        assert configured in one(plan, type_).dependencies
    stdin = {r.name.rsplit("-", 1)[1]: r.inputs.get("stdin") for r in plan.of_type(COMMAND)}
    assert stdin == {"init": None, "access": "[secret]", "docker": None, "release": None, "mailcow": "[secret]",
                     "configure": "[secret]", "backup": "[secret]"}
    backup = one(plan, COMMAND, "-install-backup")
    assert configured in backup.dependencies, "mailcow backs up once it is configured"
    assert backup.urn not in one(plan, "kubernetes:core/v1:Secret").dependencies


def test_a_new_mailcow_release_re_runs_that_one_step(scratch_project):
    """A new mailcow release re-runs only the release step, pinned to that release's commit."""
    base = plan_of(scratch_project, mailStack="mailcow")
    older = plan_of(scratch_project, mailStack="mailcow", mailcowVersion="2026-07")
    changes = diff_plans(older, base)
    assert [(c.name, c.action) for c in changes] == [("ceres-mail-server-install-release", "re-runs")]
    assert f"MAILCOW_COMMIT={MAILCOW_RELEASE_COMMITS['2026-07a']}" in one(base, COMMAND, "-install-release").inputs["create"]


def test_a_dkim_rotation_on_mailcow_re_runs_only_the_configure_step_and_only_at_the_switch(scratch_project):
    """Publishing the next key adds the key and its record; the switch re-imports (the signing selector is
    in the configure step's desired state, its key on stdin); retiring removes the old key and record."""
    base = plan_of(scratch_project, mailStack="mailcow")
    published = plan_of(scratch_project, mailStack="mailcow", dkimPublishedSelectors=["ceres2026"])
    switched = plan_of(scratch_project, mailStack="mailcow", dkimSelector="ceres2026", dkimPublishedSelectors=["ceres"])
    retired = plan_of(scratch_project, mailStack="mailcow", dkimSelector="ceres2026")
    steps = [diff_plans(before, after) for before, after in ((base, published), (published, switched), (switched, retired))]
    assert [sorted((c.name, c.action) for c in step) for step in steps] == [
        [("ceres-mail-dkim-key-ceres2026", "added"), ("ceres-mail-dns-txt-ceres2026._domainkey.example.com", "added")],
        [("ceres-mail-dns-txt-ceres._domainkey.example.com", "changed"),
         ("ceres-mail-dns-txt-ceres2026._domainkey.example.com", "changed"),
         ("ceres-mail-server-install-configure", "re-runs")],
        [("ceres-mail-dkim-key-ceres", "removed"), ("ceres-mail-dns-txt-ceres._domainkey.example.com", "removed")],
    ]
    assert '"dkim_selector": "ceres2026"' in one(switched, COMMAND, "-install-configure").inputs["create"]


def test_clamav_off_changes_only_mailcow_conf(scratch_project):
    """Turning ClamAV off changes only the mailcow stage, whose mailcow.conf then says SKIP_CLAMD=y."""
    base = plan_of(scratch_project, mailStack="mailcow")
    head = plan_of(scratch_project, mailStack="mailcow", mailcowClamav=False)
    assert [c.name for c in diff_plans(base, head)] == ["ceres-mail-server-install-mailcow"]
    assert "SKIP_CLAMD=y" in one(head, COMMAND, "-install-mailcow").inputs["create"]


def test_applied_mailcow_secrets_travel_on_stdin_only(scratch_project):
    """As after an apply: the generated mailcow secrets reach the stages on stdin, and appear in no
    command line and no form of the plan."""
    config = stack_config("prod")
    config["ceres-mail:mailStack"] = "mailcow"
    raw: dict = {}
    plan = record(scratch_project("prod", config), "prod", known_outputs=True,
                  raw_inputs_hook=lambda urn, type_, inputs: raw.__setitem__(urn, inputs))
    stdin = raw[one(plan, COMMAND, "-install-mailcow").urn]["stdin"]
    received = {name: base64.b64decode(value).decode() for name, _, value in (line.partition("=") for line in stdin.splitlines())}
    assert set(received) == set(CONF_SECRETS)
    assert all(len(received[key]) == secret.length and received[key].isalnum() for key, secret in CONF_SECRETS.items())
    command_lines = "\n".join(raw[c.urn]["create"] for c in plan.of_type(COMMAND))
    forms = plan.to_json() + render_text(plan) + render_mermaid(plan)
    assert not any(value in command_lines or value in forms for value in received.values())
    # mailcow_api.py goes along with the configure stage's secrets, not into its command line
    configure_stdin = raw[one(plan, COMMAND, "-install-configure").urn]["stdin"]
    programs = [base64.b64decode(line.partition("=")[2]).decode() for line in configure_stdin.splitlines() if line.startswith("API_PROGRAM=")]
    assert programs == [api_program()] and "def converge" not in command_lines


def test_the_mailcow_stack_passes_the_same_policies_as_the_native_one(scratch_project):
    """The mailcow stack gets the same policy verdicts as the native one, with no mandatory violation."""
    native, mailcow = plan_of(scratch_project), plan_of(scratch_project, mailStack="mailcow")
    assert mailcow.policy == native.policy, "the stack switch changes no policy verdict"
    assert not [v for v in mailcow.policy if v["level"] == "mandatory"]
