"""The DKIM key rotation of the README ("DKIM key rotation"), through three real `pulumi up`s on the one host.

`ceres` signs after the first up; the rotation to `ceres2026` is:

    1. dkimPublishedSelectors: [ceres2026]                      the new key made and published; ceres signs
    2. dkimSelector: ceres2026, dkimPublishedSelectors: [ceres]  the new key signs; the old record stays
    3. dkimPublishedSelectors: []                               the old record and key go

After each up, mail from the mail host arrives at the other domain with DKIM pass under the selector that
should sign, and each step touches only what it must on the host (step 2 restarts rspamd, nothing else;
steps 1 and 3 run no install stage). A message the host signed with the old key before the switch (as a
receiver holds it: queued, retried, forwarded) is judged again after each step with dkimpy against the test
internet's DNS: it still verifies after step 2, and fails after step 3 because its record is gone. That is
why step 3 waits (7 days in the README) and why step 2 keeps the old record.

Where it runs: by name this module would run first, before test_mail_host.py and test_up.py judge the host
as the first up built it (signed with `ceres`, the stages the first up ran). tests/e2e/conftest.py
(pytest_collection_modifyitems) moves it into test_up.py's scenario instead: after the consumers sent
through the first up's host, just before "a second up changes nothing", which then also proves the rotated
stack is at rest. It leaves `ceres2026` signing and no other selector published; the rest of the scenario
(password rotation, VM replacement: the fresh host gets the ceres2026 key, interrupted up, destroy) does
not depend on the selector.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass

import dkim
import dns.rdata
import pytest
from cryptography.hazmat.primitives import serialization
from pulumi.automation import ConfigValue

from tests.e2e.conftest import ADDRESSES, DOMAIN, host_state, mailctl_verify, stages_started_since
from tests.engine.harness import EngineRun
from tests.mailnet.scenario import REMOTE_DOMAIN
from tests.testnet import SystemHost

pytestmark = pytest.mark.slow

OLD, NEW = "ceres", "ceres2026"  #: the selector the first up signs with (the default), the one rotated to
KEYS_ON_HOST = "/var/lib/rspamd/dkim"  #: rspamd's keys, <selector>.key (components/builders/shell/native/mail.sh)
MAIL_STAGE = "ceres-mail-server-install-mail"
PUBLISHED, STACK_KEY = "published, not signing", ("ok", "RSA 2048 bits, the stack's key")  #: mailctl verify's words


def key_name(selector: str) -> str:
    return f"ceres-mail-dkim-key-{selector}"


def record_name(selector: str) -> str:
    return f"ceres-mail-dns-txt-{selector}._domainkey.{DOMAIN}"


@dataclass
class Step:
    """One up of the rotation: what the engine changed, the install stages it ran, what changed on the host."""

    run: EngineRun
    stages: list[str]
    host_changes: set[str]  #: the config files whose bytes and the services whose start time changed

    @property
    def resources(self) -> dict[str, tuple[str, ...]]:
        """Resource name -> the engine's steps, for the resources the up changed."""
        return {urn.rsplit("::", 1)[-1]: steps for urn, steps in self.run.changed().items()}


def rotation_up(e2e, config: dict[str, str | list[str]]) -> Step:
    """Set the step's keys as `mailctl dkim rotate` prints them (a list key removed, then set item by item
    with --path: the CLI types it as a list), then `pulumi up`."""
    for key, value in config.items():
        if isinstance(value, list):
            e2e.stack.remove_config(f"ceres-mail:{key}")
            for index, item in enumerate(value):
                e2e.stack.set_config(f"ceres-mail:{key}[{index}]", ConfigValue(item), path=True)
        else:
            e2e.stack.set_config(f"ceres-mail:{key}", ConfigValue(value))
    before, started = host_state(e2e), time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-4000:]
    after = host_state(e2e)
    return Step(run, stages_started_since(e2e, started), {key for key in before if before[key] != after[key]})


def served_txt(e2e, name: str) -> bytes | None:
    """`name`'s TXT as the test internet's DNS server serves it (asked from the operator's machine), its
    strings joined as a DKIM verifier reads a key record; None when there is none."""
    answer = e2e.probe("dns", "--host", ADDRESSES["dns"], "--name", name, "--subject", "TXT")
    assert "exception" not in answer, answer
    fields = [line.split(None, 4) for rrset in answer["answer"] for line in rrset.splitlines()]
    return b"".join(b"".join(dns.rdata.from_text("IN", "TXT", rdata).strings)
                    for _, _, _, rdtype, rdata in fields if rdtype == "TXT") or None


class Reasons(logging.Handler):
    """What dkimpy logs as an error: why a signature did not verify."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def judge_dkim(e2e, message: bytes) -> str:
    """A receiver's DKIM verdict on `message` now, with dkimpy resolving through the test internet's DNS:
    "pass", or "fail: " and dkimpy's reason ("missing public key: ..." when the record is not served)."""
    reasons = Reasons()
    logger = logging.Logger("dkim-judge", logging.ERROR)  # not dkimpy's shared logger: this verdict's reasons only
    logger.addHandler(reasons)
    if dkim.verify(message, logger=logger, dnsfunc=lambda name, timeout=5: served_txt(e2e, name.decode().rstrip("."))):
        return "pass"
    return "fail: " + "; ".join(reasons.messages)


def sent_from_the_mail_host(e2e, subject: str) -> tuple[dict, bytes]:
    """CERES sends `subject` through the mail host to the other domain: the remote MTA's verdict, and the
    message as it arrived there (signature included)."""
    sent = e2e.ceres_send(f"rotation@{REMOTE_DOMAIN}", subject)
    assert sent["sent"] is True, sent
    verdict = e2e.verdict(lambda verdict: verdict["subject"] == subject)
    [judged] = [path for path in e2e.inbox.glob("*.json") if json.loads(path.read_text())["subject"] == subject]
    return verdict, judged.with_suffix(".eml").read_bytes()


def signature_of(verdict: dict) -> tuple[str, str, bool]:
    return verdict["dkim"], verdict["dkim_selector"], verdict["dmarc_aligned"]


def dkim_row(selector: str, role: str) -> str:
    """A DKIM row of `mailctl verify` (mailctl/verify/dns_checks.py)."""
    return f"dkim {selector}._domainkey.{DOMAIN} ({role})"


def keys_on_host(host: SystemHost) -> list[str]:
    return sorted(path.name for path in host.path(KEYS_ON_HOST).glob("*.key"))


def dkim_checks(e2e, shown: list[str]) -> dict[str, tuple[str, str]]:
    """`mailctl verify --stack` as the operator runs it between steps, green as a whole: its DKIM rows,
    check -> (status, detail). What it printed joins `shown`."""
    verify = mailctl_verify(e2e)
    shown.append(verify.stdout + verify.stderr)
    assert verify.returncode == 0, verify.stdout[-6000:] + verify.stderr[-2000:]
    return {result["check"]: (result["status"], result["detail"])
            for result in json.loads(verify.stdout)["results"] if result["check"].startswith("dkim ")}


def private_lines(pem: str) -> list[str]:
    """The lines of a private key's PEM that would show it: not those holding its modulus, which the public
    key (published in DNS and the stack's outputs) holds too, nor a short last line."""
    public_key = serialization.load_pem_private_key(pem.encode(), None).public_key()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    public = base64.b64encode(der).decode()
    return [line for line in pem.splitlines() if len(line) >= 32 and not line.startswith("-----") and line not in public]


def leaked(secrets: dict[str, list[str]], shown: list[str]) -> list[str]:
    """The names of the secrets something in `shown` contains (any of each one's fragments)."""
    assert all(secrets.values()), "every secret has something to look for"
    return sorted(name for name, fragments in secrets.items()
                  if any(fragment in text for fragment in fragments for text in shown))


def test_a_dkim_key_rotation_in_three_ups_keeps_mail_verifiable_and_restarts_only_rspamd(e2e, deployed):
    host = e2e.cloud.vm_host()
    assert keys_on_host(host) == [f"{OLD}.key"], "the first up signs with the default selector"
    # what would show a secret, never printed: only their names are reported if something shows them
    secrets = {"the mailbox password": [e2e.ceres_secret_env()["CERES_SMTP_PASS"]],
               f"the {OLD} DKIM key": private_lines(host.path(f"{KEYS_ON_HOST}/{OLD}.key").read_text()),
               **{key: [value] for key, value in e2e.project.secret_values.items() if "\n" not in value.strip()}}
    shown: list[str] = []  # what the ups and mailctl printed

    # --- step 1: the new key is made and published; `ceres` still signs and nothing on the host changes
    step = rotation_up(e2e, {"dkimPublishedSelectors": [NEW]})
    shown.append(step.run.output)
    assert step.resources == {key_name(NEW): ("create",), record_name(NEW): ("create",)}
    assert step.stages == [] and step.host_changes == set(), "no install stage ran, no file or service changed"
    assert keys_on_host(host) == [f"{OLD}.key"], "the new key is not on the host while it does not sign"
    assert dkim_checks(e2e, shown) == {dkim_row(OLD, "signs"): STACK_KEY, dkim_row(NEW, PUBLISHED): STACK_KEY}
    verdict, signed_before_switch = sent_from_the_mail_host(e2e, "dkim rotation: step 1")
    assert signature_of(verdict) == ("pass", OLD, True), verdict
    assert judge_dkim(e2e, signed_before_switch) == "pass", "the test's verifier agrees with the receiver's"
    records = {selector: served_txt(e2e, f"{selector}._domainkey.{DOMAIN}") for selector in (OLD, NEW)}

    # --- step 2: the new key signs (rspamd alone restarts); the old record stays for mail in flight
    step = rotation_up(e2e, {"dkimSelector": NEW, "dkimPublishedSelectors": [OLD]})
    shown.append(step.run.output)
    # the two records change only their comment (which one signs): the keys they serve stay
    assert step.resources == {MAIL_STAGE: ("update",), record_name(OLD): ("update",), record_name(NEW): ("update",)}
    assert {selector: served_txt(e2e, f"{selector}._domainkey.{DOMAIN}") for selector in (OLD, NEW)} == records
    assert step.stages == [MAIL_STAGE]
    assert step.host_changes == {"/etc/rspamd/local.d/dkim_signing.conf", "rspamd"}, "rspamd restarted, nothing else"
    assert keys_on_host(host) == [f"{NEW}.key"], "only the signing key is on the host"
    assert dkim_checks(e2e, shown) == {dkim_row(NEW, "signs"): STACK_KEY, dkim_row(OLD, PUBLISHED): STACK_KEY}
    secrets[f"the {NEW} DKIM key"] = private_lines(host.path(f"{KEYS_ON_HOST}/{NEW}.key").read_text())
    verdict, _ = sent_from_the_mail_host(e2e, "dkim rotation: step 2")
    assert signature_of(verdict) == ("pass", NEW, True), verdict
    assert judge_dkim(e2e, signed_before_switch) == "pass", "mail signed before the switch still verifies"

    # --- step 3: the old record and key go; nothing on the host changes
    step = rotation_up(e2e, {"dkimPublishedSelectors": []})
    shown.append(step.run.output)
    assert step.resources == {key_name(OLD): ("delete",), record_name(OLD): ("delete",)}
    assert step.stages == [] and step.host_changes == set(), "no install stage ran, no file or service changed"
    assert served_txt(e2e, f"{OLD}._domainkey.{DOMAIN}") is None, "the old record is gone"
    assert dkim_checks(e2e, shown) == {dkim_row(NEW, "signs"): STACK_KEY}
    verdict, _ = sent_from_the_mail_host(e2e, "dkim rotation: step 3")
    assert signature_of(verdict) == ("pass", NEW, True), verdict
    judged = judge_dkim(e2e, signed_before_switch)  # mail signed with the old key no longer verifies: no record
    assert judged.startswith("fail: missing public key") and f"{OLD}._domainkey.{DOMAIN}" in judged, judged

    assert leaked(secrets, shown) == [], "a secret is in what the ups or mailctl printed"
