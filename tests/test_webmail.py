"""The webmail and fail2ban stages without a host: settings, the graph, the rendered scripts (shellcheck),
and the rendered jail judged by Debian's own fail2ban (`fail2ban-client -t` on a copy of its configuration).

What they do on a real host, in a real browser, is tests/test_mail_host.py (its step 2).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace

import pytest

from components.builders.inputs import BruteForce
from components.builders.native import InstallInputs, render_packages_stage, render_tls_stage
from components.builders.webmail import render_fail2ban_stage, render_webmail_stage, web_stages
from mailctl.plan import SECRET
from mailctl.recorder import record
from mailctl.zone import stack_settings
from tests.conftest import one, stack_config

COMMAND = "command:remote:Command"
INSTALL = InstallInputs(domain="example.com", mail_host="mail.example.com", mailbox="no-reply@example.com",
                        dkim_selector="ceres", acme_email="postmaster@example.com", webmail=True,
                        brute_force=BruteForce(5, 60, ("198.51.100.0/28",)))


def settings_with(scratch_project, **edits):
    return stack_settings(scratch_project("prod", stack_config("prod", edits)), "prod")


def test_native_gets_webmail_and_fail2ban_after_the_mailbox(prod_plan):
    """Webmail then fail2ban follow the mailbox; CERES and Keycloak wait for neither; Roundcube's key is protected."""
    mail, webmail, guard = (one(prod_plan, COMMAND, f"-install-{s}") for s in ("mail", "webmail", "fail2ban"))
    assert mail.urn in webmail.dependencies and webmail.urn in guard.dependencies
    for consumer in ("kubernetes:core/v1:Secret", "keycloak:index/realm:Realm"):
        dependencies = one(prod_plan, consumer).dependencies
        assert mail.urn in dependencies and webmail.urn not in dependencies and guard.urn not in dependencies
    key = one(prod_plan, "random:index/randomPassword:RandomPassword", "-roundcube-des-key")
    assert key.inputs["length"] == 24 and key.options["protect"]
    assert webmail.inputs["stdin"] == SECRET


def test_webmail_off_leaves_the_mail_host_to_the_tls_stage(scratch_project):
    """With webmail off no Roundcube is installed and the TLS stage serves HTTPS for the mail host; fail2ban stays."""
    settings = settings_with(scratch_project, **{"ceres-mail:webmail": False})
    inputs = settings.install_inputs
    assert not inputs.webmail and inputs.https_names == inputs.certificate_names
    assert [s.name for s in settings.server_inputs.after_install()] == ["fail2ban", "backup"]
    assert "roundcube" not in render_packages_stage(inputs)
    assert "WEBMAIL=no" in render_fail2ban_stage(inputs)


def test_mailcow_has_neither_stage_even_with_webmail_on(scratch_project):
    """A mailcow stack gets neither the webmail nor the fail2ban stage, even with webmail on: only backup follows."""
    settings = settings_with(scratch_project, **{"ceres-mail:mailStack": "mailcow", "ceres-mail:webmail": True})
    assert not settings.install_inputs.webmail and settings.install_inputs.brute_force is None
    assert [s.name for s in settings.server_inputs.after_install()] == ["backup"]


def test_admins_and_the_cluster_are_never_banned(scratch_project):
    """fail2ban never bans localhost, the admin networks or the cluster's CIDRs, and uses the configured retry limit."""
    settings = settings_with(scratch_project, **{"ceres-mail:clusterCidrs": ["192.0.2.0/26"],
                                                 "ceres-mail:bruteForceMaxRetry": 8})
    guard = settings.install_inputs.brute_force
    assert guard.never_banned == ("192.0.2.0/26", "198.51.100.0/28", "2001:db8:ad::/48")
    script = render_fail2ban_stage(settings.install_inputs)
    assert "MAX_RETRY=8" in script and "NEVER_BANNED=(127.0.0.0/8 ::1 192.0.2.0/26 198.51.100.0/28 2001:db8:ad::/48)" in script


def test_the_tls_stage_answers_the_mta_sts_names_and_the_webmail_the_mail_host():
    """With webmail on, webmail serves HTTPS for the mail host, the TLS stage for the MTA-STS names; one certificate."""
    tls = render_tls_stage(INSTALL)
    assert "HTTPS_NAMES=(mta-sts.example.com)" in tls
    assert "CERT_NAMES=(mail.example.com mta-sts.example.com)" in tls, "the certificate still names both"
    assert "MAIL_HOST=mail.example.com" in render_webmail_stage(INSTALL)


def test_no_secret_in_the_scripts():
    """Roundcube's DES key reaches the webmail stage only as a secret on stdin, never written in a script."""
    for stage in web_stages(INSTALL):
        assert "des_key'] = '$ROUNDCUBE_DES_KEY'" in stage.script if stage.name == "webmail" else True
        assert not re.search(r"ROUNDCUBE_DES_KEY=\S", stage.script)
    assert [s.secrets for s in web_stages(INSTALL)] == [("ROUNDCUBE_DES_KEY",), ()]


@pytest.mark.parametrize("render", [render_webmail_stage, render_fail2ban_stage], ids=["webmail", "fail2ban"])
def test_the_rendered_stages_pass_shellcheck(render):
    """The rendered webmail and fail2ban stage scripts pass shellcheck."""
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (make test installs it as root)")
    checked = subprocess.run(["shellcheck", "--shell=bash", "-"], input=render(INSTALL), text=True, capture_output=True)
    assert checked.returncode == 0, checked.stdout


def rendered_jail(inputs: InstallInputs, tmp_path) -> str:
    """The jail file the fail2ban stage writes: its heredocs run by bash, put_file replaced by cat."""
    script = render_fail2ban_stage(inputs)
    body = script[script.index("{\n  cat <<JAIL"):script.index("} | put_file")] + "}"
    header = script[:script.index("echo \"== $STAGE")]
    run = subprocess.run(["bash", "-c", header + body], capture_output=True, text=True, check=True)
    return run.stdout


@pytest.mark.parametrize("webmail", [True, False])
def test_debian_fail2ban_takes_the_rendered_jails(webmail, tmp_path):
    """fail2ban-client -t on a copy of Debian's configuration with the stack's jail file added."""
    if shutil.which("fail2ban-client") is None:
        pytest.fail("fail2ban is not installed (tests/system-packages.txt; make test installs it as root)")
    confdir = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", confdir)
    for extra in (confdir / "jail.d").glob("*.local"):
        extra.unlink()
    jail = rendered_jail(replace(INSTALL, webmail=webmail), tmp_path)
    (confdir / "jail.d" / "ceres-mail.local").write_text(jail)
    tested = subprocess.run(["fail2ban-client", "-c", str(confdir), "-t"], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    dumped = subprocess.run(["fail2ban-client", "-c", str(confdir), "-d"], capture_output=True, text=True).stdout
    jails = set(re.findall(r"\['add', '([\w-]+)', 'systemd'\]", dumped))
    assert jails == {"sshd", "postfix-sasl", "dovecot", *({"roundcube-auth"} if webmail else ())}
    assert "['set', 'postfix-sasl', 'addjournalmatch', '_SYSTEMD_UNIT=postfix@-.service']" in dumped
    for jail in jails:
        assert f"['set', '{jail}', 'bantime', '60m']" in dumped and f"['set', '{jail}', 'maxretry', 5]" in dumped
        assert f"['set', '{jail}', 'addignoreip', '127.0.0.0/8', '::1', '198.51.100.0/28']" in dumped
        assert f"['set', '{jail}', 'banaction', 'nftables-allports']" in dumped or \
            f"['set', '{jail}', 'addaction', 'nftables-allports']" in dumped


@pytest.mark.parametrize("bad, key, words", [
    ({"ceres-mail:bruteForceMaxRetry": 0}, "bruteForceMaxRetry", "0 is out of range: write a whole number from 1 to 100"),
    ({"ceres-mail:bruteForceBanMinutes": 0}, "bruteForceBanMinutes", "0 is out of range: write a whole number from 1 to 10080"),
    ({"ceres-mail:clusterCidrs": ["0.0.0.0/0"]}, "clusterCidrs[0]", "whole internet"),
])
def test_bad_brute_force_settings_are_refused_naming_their_key(scratch_project, bad, key, words):
    """An out-of-range retry limit or ban time, or a cluster CIDR of the whole internet, is refused naming its key."""
    from components.settings import SettingsError

    with pytest.raises(SettingsError) as refused:
        settings_with(scratch_project, **bad)
    assert any(line.strip().startswith(f"ceres-mail:{key}:") and words in line for line in str(refused.value).splitlines())


def test_a_new_ban_time_re_runs_only_the_fail2ban_stage(scratch_project):
    """A new ban time changes only the fail2ban stage's inputs, so only that stage runs again."""
    runs = []
    for minutes in (60, 120):
        raw: dict = {}
        config = stack_config("prod", {"ceres-mail:bruteForceBanMinutes": minutes})
        record(scratch_project("prod", config), "prod", known_outputs=True,
               raw_inputs_hook=lambda urn, t, i: raw.__setitem__(urn, i),
               mock_overrides={name: {"result": "stays-the-same-24-chars!"} for name in (
                   "ceres-mail-backup-password", "ceres-mail-mailbox-password",
                   "ceres-mail-server-native-roundcube-des-key")})
        runs.append(raw)
    changed = sorted(urn.rsplit("::", 1)[1] for urn in runs[0] if runs[0][urn] != runs[1][urn])
    assert changed == ["ceres-mail-server-install-fail2ban"]
