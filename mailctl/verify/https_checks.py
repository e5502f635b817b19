"""HTTPS 443 on the MTA-STS host of every mail domain (`mta-sts.<domain>`): the certificate for that name,
the policy against the stack's (version, mode, mx, max_age), and the DNS id that tells senders when to fetch
the policy again (RFC 8461). With the webmail: https://<mail host>/, its certificate and its login page."""

from __future__ import annotations

import http.client
import re
import ssl

from components.builders.dns_records import mta_sts_id
from components.builders.ports import HTTPS
from mailctl.verify.model import FAIL, OK, WARN, Result, Target
from mailctl.verify.net import connection_failure, open_connection
from mailctl.verify.tls_util import certificate_result, context, tls_failure

POLICY_PATH = "/.well-known/mta-sts.txt"
POLICY_KEYS = ("version", "mode", "mx", "max_age")  #: every field of a policy (RFC 8461 3.2)
MODES = ("enforce", "testing", "none")
MAX_AGE_LIMIT = 31557600  #: RFC 8461 3.2: at most about a year
POLICY_ID = re.compile(r"[A-Za-z0-9]{1,32}")  #: RFC 8461 3.1


class _PolicyConnection(http.client.HTTPSConnection):
    """HTTPS to the MTA-STS host at an address the operator's resolver gives (net.open_connection), SNI and
    verification against the host name, as a sending MTA fetches the policy."""

    def __init__(self, target: Target, host: str):
        self._target, self._tls = target, context(target.cafile)
        super().__init__(host, HTTPS.port, timeout=target.timeout, context=self._tls)

    def connect(self):
        sock = open_connection(self._target, self.host, self.port)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


#: what only Roundcube's login page has: its user name field
WEBMAIL_LOGIN_FIELD = 'id="rcmloginuser"'


def check_webmail(target: Target) -> list[Result]:
    """https://<mail host>/ as a person's browser opens it: the certificate for the host, a login page, HSTS."""
    if not target.webmail:
        return []
    check = f"https {HTTPS.port}"
    connection = _PolicyConnection(target, target.host)
    try:
        connection.connect()
        results = [certificate_result(f"{check} certificate {target.host}", connection.sock, target.host)]
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    except (ssl.SSLError, ssl.CertificateError) as error:
        return [tls_failure(f"{check} certificate {target.host}", error, target.host)]
    except (OSError, http.client.HTTPException) as error:
        return [connection_failure(f"webmail {target.host}", error, f"check that port {HTTPS.port} is open and nginx "
                                   "runs", "run pulumi up: the webmail stage serves it")]
    finally:
        connection.close()
    if response.status != 200 or WEBMAIL_LOGIN_FIELD not in body:
        return results + [Result(f"webmail {target.host}", FAIL, f"HTTP {response.status} {response.reason}, no login page",
                                 "check the webmail stage's output and `journalctl -u php8.2-fpm` on the host")]
    hsts = response.getheader("Strict-Transport-Security")
    if not hsts:
        return results + [Result(f"webmail {target.host}", FAIL, "login page served without HSTS",
                                 "run pulumi up: the webmail stage adds Strict-Transport-Security")]
    return results + [Result(f"webmail {target.host}", OK, f"login page served, HSTS {hsts}")]


def check_mta_sts(target: Target) -> list[Result]:
    """Every mail domain's policy host: the stack publishes `mta-sts.<domain>` (CNAME to the mail host) and
    `_mta-sts.<domain>` TXT for each one, and a sender of mail to a domain fetches that domain's policy, so
    each domain gets its rows (certificate, policy, id), like DKIM."""
    return [result for domain in target.mail_domains for result in check_mta_sts_domain(target, domain)]


def check_mta_sts_domain(target: Target, domain: str) -> list[Result]:
    """One domain's policy as a sender fetches it from `mta-sts.<domain>`, and the DNS record that announces it."""
    host = f"mta-sts.{domain}"
    results, policy = _fetch_policy(target, domain, host)
    if policy is not None:
        results += [_policy_result(target, domain, host, policy), _mode_result(domain, policy)]
    return results + [_policy_id_result(target, domain)]


def _mode_result(domain: str, text: str) -> Result:
    """What the served policy asks of senders: enforce refuses a downgrade, testing only reports it (RFC 8461 5)."""
    check, mode = f"mta-sts mode {domain}", _shown(policy_fields(text), "mode")
    if mode == "enforce":
        return Result(check, OK, "enforce: senders that fetch the policy deliver only over TLS to a valid MX certificate")
    return Result(check, WARN, f"{mode}: senders only report a failed TLS connection (TLS-RPT), they still deliver",
                  "once the TLS reports are clean, set mtaStsMode to enforce (with dane, the policy advisory asks for it)")


def _fetch_policy(target: Target, domain: str, host: str) -> tuple[list[Result], str | None]:
    """The certificate row, and the body of a 200 (senders follow no redirect, RFC 8461 3.3), else None."""
    check = f"https {HTTPS.port}"
    connection = _PolicyConnection(target, host)
    try:
        connection.connect()
        results = [certificate_result(f"{check} certificate {host}", connection.sock, host)]
        connection.request("GET", POLICY_PATH)
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    except (ssl.SSLError, ssl.CertificateError) as error:
        return [tls_failure(f"{check} certificate {host}", error, host)], None
    except (OSError, http.client.HTTPException) as error:
        return [connection_failure(f"{check} {host}", error, f"check that port {HTTPS.port} is open and nginx runs",
                                   f"{host} CNAME {target.host}.")], None
    finally:
        connection.close()
    if response.status != 200:
        return results + [Result(f"mta-sts policy {domain}", FAIL,
                                 f"HTTP {response.status} {response.reason} for {POLICY_PATH}",
                                 _serve_policy(target, host))], None
    return results, body


def policy_fields(text: str) -> dict[str, list[str]]:
    """A policy's `key: value` lines (RFC 8461 3.2), each key's values in order (`mx` repeats)."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    return fields


def _shown(fields: dict[str, list[str]], key: str) -> str:
    return ", ".join(fields.get(key, [])) or "missing"


def _policy_result(target: Target, domain: str, host: str, text: str) -> Result:
    check, served = f"mta-sts policy {domain}", policy_fields(text)
    detail = ", ".join(f"{key} {_shown(served, key)}" for key in ("mode", "max_age", "mx"))
    wrong = _stack_differences(target, served) if target.mta_sts_policy else _rfc_problems(target, served)
    if not wrong:
        return Result(check, OK, detail + (", as the stack declares" if target.mta_sts_policy else ""))
    return Result(check, FAIL, f"{detail}: {'; '.join(wrong)}", _serve_policy(target, host))


def _stack_differences(target: Target, served: dict[str, list[str]]) -> list[str]:
    """Each field that differs from the stack's policy: a sender applies what is served, so a mode or
    max_age the stack changed has no effect until the server serves it."""
    declared = policy_fields(target.mta_sts_policy)
    return [f"{key} {_shown(served, key)}, the stack declares {_shown(declared, key)}"
            for key in POLICY_KEYS if _compared(served, key) != _compared(declared, key)]


def _compared(fields: dict[str, list[str]], key: str) -> list[str]:
    """A field's values as senders compare them: in any order (mx), case aside."""
    return sorted(v.lower() for v in fields.get(key, []))


def _mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: an mx pattern is the host itself, or `*.` and the host's parent (one label)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    return pattern == host or (pattern.startswith("*.") and host.partition(".")[2] == pattern[2:])


def _rfc_problems(target: Target, served: dict[str, list[str]]) -> list[str]:
    """Without a stack to compare with: what RFC 8461 3.2 requires, and the mail host among the mx."""
    problems = []
    if served.get("version") != ["STSv1"]:
        problems.append(f"version {_shown(served, 'version')}, must be STSv1")
    if len(served.get("mode", [])) != 1 or served["mode"][0] not in MODES:
        problems.append(f"mode {_shown(served, 'mode')}, must be one of {', '.join(MODES)}")
    age = served.get("max_age", [])
    if len(age) != 1 or not age[0].isdigit() or int(age[0]) > MAX_AGE_LIMIT:
        problems.append(f"max_age {_shown(served, 'max_age')}, must be seconds up to {MAX_AGE_LIMIT}")
    if not any(_mx_matches(pattern, target.host) for pattern in served.get("mx", [])):
        problems.append(f"no mx matches {target.host}")
    return problems


def _serve_policy(target: Target, host: str) -> str:
    if target.mta_sts_policy:
        return f"serve the stack's policy (pulumi stack output mtaStsPolicy) at https://{host}{POLICY_PATH}"
    return f"serve a policy (RFC 8461 3.2: version STSv1, mode, mx {target.host}, max_age) at https://{host}{POLICY_PATH}"


def _policy_id_result(target: Target, domain: str) -> Result:
    """`_mta-sts.<domain>` TXT: one v=STSv1 record (senders ignore several, RFC 8461 3.1) whose id is the one
    the stack derives from its policy. Senders keep a cached policy until the id changes, so a stale id
    keeps them on the old mode and mx for up to max_age."""
    name, check = f"_mta-sts.{domain}", f"mta-sts id {domain}"
    wanted = mta_sts_id(target.mta_sts_policy) if target.mta_sts_policy else ""
    publish = f'publish {name} TXT "v=STSv1; id={wanted or "<a new id each time the policy changes>"}"'
    values = [b"".join(r.strings).decode(errors="replace") for r in target.lookup(name, "TXT")]
    records = [v for v in values if v.startswith("v=STSv1")]
    if not records:
        return Result(check, FAIL, f"no v=STSv1 TXT at {name}: senders see no MTA-STS policy", publish)
    if len(records) > 1:
        return Result(check, FAIL, f"{len(records)} v=STSv1 TXT at {name}: senders ignore them all", f"keep one: {publish}")
    tags = dict(part.strip().partition("=")[::2] for part in records[0].split(";") if "=" in part)
    published = tags.get("id", "").strip()
    if not POLICY_ID.fullmatch(published):
        return Result(check, FAIL, f"id {published or 'missing'}: not 1 to 32 letters and digits (RFC 8461 3.1)", publish)
    if wanted and published != wanted:
        return Result(check, FAIL, f"id {published}, the stack's policy has id {wanted}",
                      f"{publish}: senders fetch the policy again only when the id changes")
    return Result(check, OK, f"id {published}" + (", the stack's policy" if wanted else ""))
