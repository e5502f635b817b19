"""Helpers the booted-world tests share (tests/test_mail_host.py, test_directory_host.py, test_gateway_host.py):
the stack's secrets as the install stages read them from stdin, a secret written to a file on the operator's
side, the remote MTA's verdict on a message, LDAP probes of the mail host's directory, submission as a person,
and what a re-run must leave as it was (the native stack's services and config files). Here, not in a test
module, so that no test module imports another.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from tests.mailnet.scenario import ADDRESSES, PREFIX
from tests.testnet import linux

LDAP_PROBE = Path(__file__).resolve().parent / "ldap_probe.py"
MAIL = ADDRESSES["mail"]
BASE = "dc=example,dc=com"
PEOPLE = f"ou=people,{BASE}"
#: the stack as prod's, with a directory on the mail host; LDAPS open to the test's client network
LDAP_CONFIG = {"ceres-mail:ldapMode": "local",
               "ceres-mail:ldapClientCidrs": [f"{ADDRESSES['client'].rsplit('.', 1)[0]}.0/{PREFIX}"]}

#: what a re-run must leave as it was: the native stack's services and config files
SERVICES = ("postfix", "dovecot", "rspamd", "redis-server", "nginx")
CONFIG_FILES = (
    "/etc/postfix/main.cf",
    "/etc/postfix/master.cf",
    "/etc/postfix/ceres-aliases",
    "/etc/postfix/ceres-mailboxes",
    "/etc/dovecot/conf.d/99-ceres-mail.conf",
    "/etc/rspamd/local.d/dkim_signing.conf",
    "/var/lib/rspamd/dkim/ceres.key",
    "/etc/nginx/sites-available/ceres-mail",
    "/var/www/mta-sts/.well-known/mta-sts.txt",
)


def stdin_secrets(net, suffix: str) -> dict[str, str]:
    """What the graph gives the stage `*<suffix>` on its standard input, decoded."""
    command = next(c for c in net.deployment.commands if c.name.endswith(suffix))
    return {name: base64.b64decode(value).decode() for name, value in (l.split("=", 1) for l in command.stdin.splitlines())}


def secret_file(net, name: str, value: str) -> str:
    """A 0600 file holding `value`, for a probe's --password-file."""
    path = net.workdir / f"secret-{name}"
    path.write_text(value)
    path.chmod(0o600)
    return str(path)


def ldap_probe(net, ca_file: str, name: str, *args: str, as_dn: str = "", password: str = "") -> dict:
    """An ldap_probe.py run from the client namespace over LDAPS (bound as `as_dn`, or not at all)."""
    auth = ("--dn", as_dn, "--password-file", secret_file(net, "bind", password)) if as_dn else ()
    result = net.client.run([sys.executable, str(LDAP_PROBE), name, "--host", MAIL, "--cafile", ca_file, *auth, *args],
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def person_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def submit(net, user: str, password: str, sender: str, to: str, subject: str) -> dict:
    return net.probe("submit", "--host", MAIL, "--port", "587", "--user", user, "--password-file",
                     secret_file(net, "submit", password), "--sender", sender, "--to", to, "--subject", subject)


def verdict(net, subject: str, timeout: float = 60) -> dict:
    """What the remote MTA decided about the message with `subject`, once it arrived."""
    linux.wait_until(lambda: any(v["subject"] == subject for v in net.verdicts()), timeout, f"mail {subject!r}", every=1)
    return next(v for v in net.verdicts() if v["subject"] == subject)
