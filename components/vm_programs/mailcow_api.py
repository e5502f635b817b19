"""Brings a running mailcow to the stack's desired state through mailcow's API.

This file is not imported by the Pulumi program: its text is shipped inside the mailcow `configure`
stage and run on the mail VM by the system's python3 (Debian 12: 3.11), so it uses the standard library
only. The tests run the same text against a local fake of the API.

Every step reads first, compares, and writes only what differs, so a second run makes no write call:
    domains        GET get/domain/<d>            -> add/domain, edit/domain
    mailbox        GET get/mailbox/<address>     -> add/mailbox, edit/mailbox (password checked by IMAP login)
    aliases        GET get/alias/all/<d>         -> add/alias, edit/alias
    DKIM           GET get/dkim/<d>              -> add/dkim_import (the signing selector and its key)
    MTA-STS        GET /.well-known/mta-sts.txt  -> add/mta-sts, edit/mta-sts (mailcow serves it)

Input: argv[1] is the desired state as JSON (no secrets); the secrets come in the environment
(MAILCOW_API_KEY, MAILBOX_PASSWORD, DKIM_PRIVATE_KEY, DKIM_PUBLIC_KEY). Nothing secret is ever printed:
mailcow echoes requests in its replies' `log`, so only `msg` is shown, and any secret value in a message
is masked.
"""

from __future__ import annotations

import imaplib
import ipaddress
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DOMAIN_LIMITS = {"mailboxes": 10, "aliases": 400, "quota": 10240, "maxquota": 10240, "defquota": 3072}
MANAGED = "managed by ceres-mail"


class ConfigureError(Exception):
    """A step failed; the message says which and why, without secrets."""


def is_absent(value: object) -> bool:
    """mailcow answers {} or [] (sometimes false) for an object that does not exist."""
    return value in (None, {}, [], False, "")


def loopback_context(url: str) -> ssl.SSLContext:
    """mailcow's certificate names the mail host, never 127.0.0.1: on loopback only, skip verification."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    context = ssl.create_default_context()
    if loopback:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Api:
    """mailcow's JSON API (`/api/v1/...`), authenticated by the X-API-Key header."""

    def __init__(self, base: str, key: str, secrets: list[str]):
        self.base = base.rstrip("/")
        self.key = key
        self.secrets = [s for s in secrets if s]
        self.context = loopback_context(base)
        self.writes: list[str] = []

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def _request(self, method: str, path: str, body: object = None, host: str = "") -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("X-API-Key", self.key)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if host:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as error:
            raise ConfigureError(f"{method} {path}: mailcow's API at {self.base} does not answer ({error})")

    def _checked(self, method: str, path: str, status: int, text: str) -> object:
        if status == 401:
            raise ConfigureError(f"{method} {path}: the API key was refused (401); check API_KEY and API_ALLOW_FROM in mailcow.conf")
        if status != 200:
            raise ConfigureError(f"{method} {path}: HTTP {status}: {self.mask(text[:200])}")
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            raise ConfigureError(f"{method} {path}: not JSON: {self.mask(text[:200])}")

    def get(self, path: str) -> object:
        status, text = self._request("GET", "/api/v1/get/" + path)
        return self._checked("GET", "/api/v1/get/" + path, status, text)

    def post(self, action: str, body: object, what: str) -> None:
        """POST /api/v1/<action>; mailcow reports refusals in the body (type danger/error), not the status."""
        path = "/api/v1/" + action
        status, text = self._request("POST", path, body)
        reply = self._checked("POST", path, status, text)
        entries = reply if isinstance(reply, list) else [reply]
        for entry in entries:
            if isinstance(entry, dict) and entry.get("type") in ("danger", "error"):
                message = entry.get("msg")
                message = " ".join(str(m) for m in message) if isinstance(message, list) else str(message)
                raise ConfigureError(f"mailcow refused {action} for {what}: {self.mask(message)}")
        self.writes.append(f"{action} {what}")
        print(f"  {action}: {what}")

    def page(self, path: str, host: str) -> tuple[int, str]:
        """A plain web page of mailcow's nginx, for the given virtual host."""
        return self._request("GET", path, host=host)


def flag(value: object) -> int:
    return 1 if str(value) in ("1", "true", "True") else 0


def converge_domains(api: Api, domains: list[str]) -> None:
    for domain in domains:
        current = api.get(f"domain/{domain}")
        if is_absent(current):
            api.post("add/domain", {"domain": domain, "description": MANAGED, "active": 1, "backupmx": 0,
                                    "relay_all_recipients": 0, "restart_sogo": 1, **DOMAIN_LIMITS}, domain)
        elif flag(current.get("active")) != 1:
            api.post("edit/domain", {"items": [domain], "attr": {"active": 1}}, domain)


def converge_mailbox(api: Api, mailbox: dict, password: str, password_works) -> None:
    address = mailbox["address"]
    local_part, domain = address.rsplit("@", 1)
    current = api.get(f"mailbox/{address}")
    if is_absent(current):
        api.post("add/mailbox", {"local_part": local_part, "domain": domain, "name": mailbox["name"],
                                 "password": password, "password2": password, "quota": mailbox["quota_mib"],
                                 "active": 1, "force_pw_update": 0, "tls_enforce_in": 0, "tls_enforce_out": 0},
                 address)
        return
    change: dict = {}
    if flag(current.get("active")) != 1:
        change["active"] = 1
    if current.get("name") != mailbox["name"]:
        change["name"] = mailbox["name"]
    if int(current.get("quota") or 0) != mailbox["quota_mib"] * 1024 * 1024:
        change["quota"] = mailbox["quota_mib"]
    if not password_works(address, password):
        change.update(password=password, password2=password)
    if change:
        api.post("edit/mailbox", {"items": [address], "attr": change}, f"{address} ({', '.join(sorted(k for k in change if k != 'password2'))})")


def converge_aliases(api: Api, aliases: dict[str, str]) -> None:
    by_domain: dict[str, dict[str, str]] = {}
    for address, goto in aliases.items():
        by_domain.setdefault(address.rsplit("@", 1)[1], {})[address] = goto
    for domain, wanted in sorted(by_domain.items()):
        current = api.get(f"alias/all/{domain}")
        existing = {a["address"]: a for a in (current if isinstance(current, list) else [])}
        for address, goto in sorted(wanted.items()):
            alias = existing.get(address)
            if alias is None:
                api.post("add/alias", {"address": address, "goto": goto, "active": 1}, address)
            elif alias.get("goto") != goto or flag(alias.get("active")) != 1:
                api.post("edit/alias", {"items": [str(alias["id"])], "attr": {"goto": goto, "active": 1}}, address)


def converge_dkim(api: Api, domains: list[str], selector: str, private_pem: str, public_b64: str) -> None:
    """The signing selector's key for every domain: what DNS publishes is what mailcow signs with.

    mailcow keeps one key per domain (an import replaces the domain's key, private part included), so a
    key that is only published (the next one, or the previous one kept for mail in flight) lives in DNS
    and the stack's state alone: receivers need its public half, and nothing on the host signs with it.
    Switching the signing selector is therefore one overwriting import per domain.
    """
    for domain in domains:
        current = api.get(f"dkim/{domain}")
        if is_absent(current) or current.get("pubkey") != public_b64 or current.get("dkim_selector") != selector:
            api.post("add/dkim_import", {"domain": domain, "dkim_selector": selector,
                                         "private_key_file": private_pem, "overwrite_existing": 1},
                     f"{selector}._domainkey.{domain}")


def policy_fields(text: str) -> list[tuple[str, str]]:
    """An MTA-STS policy as sorted key/value pairs (RFC 8461 3.2: order and line ends do not matter)."""
    pairs = []
    for line in text.replace("\r\n", "\n").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            pairs.append((key.strip().lower(), value.strip()))
    return sorted(pairs)


def converge_mta_sts(api: Api, domains: list[str], mta_sts: dict) -> None:
    """mailcow serves each domain's policy from its database; the served text is what gets compared."""
    wanted = {"version": "STSv1", "mode": mta_sts["mode"], "mx": ",".join(mta_sts["mx"]),
              "max_age": mta_sts["max_age"], "active": 1}
    expected = policy_fields(
        f"version: STSv1\nmode: {mta_sts['mode']}\n" + "".join(f"mx: {mx}\n" for mx in mta_sts["mx"])
        + f"max_age: {mta_sts['max_age']}\n"
    )
    for domain in domains:
        status, text = api.page("/.well-known/mta-sts.txt", host=f"mta-sts.{domain}")
        if status == 404:
            api.post("add/mta-sts", {"domain": domain, **wanted}, f"mta-sts.{domain}")
        elif status != 200:
            raise ConfigureError(f"GET https://mta-sts.{domain}/.well-known/mta-sts.txt: HTTP {status}")
        elif policy_fields(text) != expected:
            api.post("edit/mta-sts", {"items": [domain], "attr": wanted}, f"mta-sts.{domain}")


def imap_login_check(endpoint: str, wait_seconds: float = 120):
    """Whether a password is current, asked of mailcow's Dovecot: the API never returns passwords."""
    host, port = endpoint.rsplit(":", 1)

    def works(user: str, password: str) -> bool:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                connection = imaplib.IMAP4_SSL(host, int(port), ssl_context=loopback_context(f"imaps://{host}"), timeout=15)
                break
            except (OSError, socket.timeout, imaplib.IMAP4.error) as error:
                if time.monotonic() > deadline:
                    raise ConfigureError(f"IMAPS at {endpoint} does not answer ({error}); cannot check the mailbox password")
                time.sleep(3)
        try:
            connection.login(user, password)
            return True
        except imaplib.IMAP4.error:
            return False
        finally:
            try:
                connection.logout()
            except (OSError, imaplib.IMAP4.error):
                pass

    return works


def converge(desired: dict, environ: dict, password_works=None) -> list[str]:
    """Every step, in dependency order (a mailbox needs its domain). Returns the writes made."""
    secrets = [environ[n] for n in ("MAILCOW_API_KEY", "MAILBOX_PASSWORD", "DKIM_PRIVATE_KEY")]
    api = Api(desired["api"], environ["MAILCOW_API_KEY"], secrets)
    password_works = password_works or imap_login_check(desired["imap"])
    print(f"mailcow API {desired['api']}: domains, mailbox, aliases, DKIM, MTA-STS")
    converge_domains(api, desired["domains"])
    converge_mailbox(api, desired["mailbox"], environ["MAILBOX_PASSWORD"], password_works)
    converge_aliases(api, desired["aliases"])
    converge_dkim(api, desired["domains"], desired["dkim_selector"], environ["DKIM_PRIVATE_KEY"], environ["DKIM_PUBLIC_KEY"])
    converge_mta_sts(api, desired["domains"], desired["mta_sts"])
    print(f"mailcow: {len(api.writes)} change(s)" if api.writes else "mailcow: already as declared, nothing written")
    return api.writes


def main(argv: list[str], environ: dict) -> int:
    try:
        converge(json.loads(argv[1]), environ)
    except ConfigureError as error:
        print(f"mailcow configuration failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv, dict(os.environ)))
