"""`mailctl verify` checks against canned answers: DNS through a fake resolver, SMTP through a fake
server (patched at the module boundary); the real-daemon side is tests/test_verify_live.py."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest

from components.builders.dns_records import Record, dkim_value
from mailctl.verify import dns_checks, smtp_checks
from mailctl.verify.model import Target
from tests.dns_fixtures import dkim_key_pair


class FakeResolver:
    """Answers from a dict {(name, type): [rdata text, ...]}; anything else is NXDOMAIN."""

    def __init__(self, answers: dict[tuple[str, str], list[str]]):
        self.answers = answers

    def resolve(self, name, rdtype, lifetime=None):
        key = (str(name).rstrip("."), rdtype)
        if key not in self.answers:
            raise dns.resolver.NXDOMAIN()
        return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text) for text in self.answers[key]]


def target(answers, **kwargs) -> Target:
    return Target(domain="example.com", host="mail.example.com", resolver=FakeResolver(answers), **kwargs)


HOST = {("mail.example.com", "A"): ["203.0.113.25"], ("25.113.0.203.in-addr.arpa", "PTR"): ["mail.example.com."]}


def status(results, check):
    return next(r for r in results if r.check == check)


def test_declared_record_missing_or_different_is_red_with_the_record_to_publish():
    expected = [Record("example.com", "example.com", "MX", "10 mail.example.com.", 3600, "why"),
                Record("example.com", "example.com", "TXT", '"v=spf1 mx -all"', 3600, "why")]
    results = dns_checks.check_declared_records(target({("example.com", "TXT"): ['"v=spf1 +all"']}, expected=expected))
    assert status(results, "dns MX example.com").status == "fail"
    assert "publish example.com MX '10 mail.example.com.'" in status(results, "dns MX example.com").fix
    assert status(results, "dns TXT example.com").detail == "published: v=spf1 +all"


def test_declared_records_published_are_green():
    expected = [Record("example.com", "example.com", "MX", "10 mail.example.com.", 3600, "why")]
    [result] = dns_checks.check_declared_records(target({("example.com", "MX"): ["10 mail.example.com."]}, expected=expected))
    assert result.status == "ok"


@pytest.fixture(scope="module")
def keys():
    return dkim_key_pair(), dkim_key_pair()


def test_dkim_missing_different_and_right(keys):
    (_, mine), (_, other) = keys
    name = ("ceres._domainkey.example.com", "TXT")
    assert dns_checks.check_dkim(target({}))[0].status == "fail"
    published = f'"{dkim_value(other)[:200]}" "{dkim_value(other)[200:]}"'
    different = dns_checks.check_dkim(target({name: [published]}, dkim_txt=dkim_value(mine)))[0]
    assert different.status == "fail" and different.detail == "a different key is published"
    right = f'"{dkim_value(mine)[:200]}" "{dkim_value(mine)[200:]}"'
    assert dns_checks.check_dkim(target({name: [right]}, dkim_txt=dkim_value(mine)))[0].status == "ok"


def test_ptr_must_name_the_host_and_resolve_back():
    assert dns_checks.check_reverse_dns(target(HOST))[0].status == "ok"
    wrong = {**HOST, ("25.113.0.203.in-addr.arpa", "PTR"): ["host25.provider.example."]}
    result = dns_checks.check_reverse_dns(target(wrong))[0]
    assert result.status == "fail" and "set the PTR of 203.0.113.25 to mail.example.com" in result.fix
    assert dns_checks.check_reverse_dns(target({}))[0].check == "dns A mail.example.com"


class FakeSMTP:
    """A server that offers STARTTLS and answers RCPT with `rcpt_code`; records nothing it is sent."""

    rcpt_code = 554

    def __init__(self, *args, **kwargs):
        self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def ehlo(self, name):
        return 250, b"mail.example.com\nSTARTTLS"

    def has_extn(self, name):
        return name == "starttls"

    def starttls(self, context):
        return 220, b"go ahead"

    def mail(self, sender):
        return 250, b"ok"

    def rcpt(self, recipient):
        return self.rcpt_code, b"5.7.1 Relay access denied" if self.rcpt_code >= 500 else b"ok"

    def rset(self):
        return 250, b"ok"


@pytest.mark.parametrize("code, expected", [(554, "ok"), (250, "fail")])
def test_relay_is_judged_by_the_answer_to_rcpt(monkeypatch, code, expected):
    monkeypatch.setattr(smtp_checks, "_NamedSMTP", type("S", (FakeSMTP,), {"rcpt_code": code}))
    monkeypatch.setattr(smtp_checks, "certificate_result",
                        lambda check, sock, host: smtp_checks.Result(check, "ok", "fake certificate"))
    results = smtp_checks.check_smtp(target(HOST))
    relay = status(results, "smtp 25 relay")
    assert relay.status == expected
    assert status(results, "smtp 25 banner").status == "ok"


def test_a_dead_resolver_is_reported_as_such_at_once_not_as_missing_records():
    """Nothing listens on the resolver's port: one red row naming the resolver, no record blamed."""
    import socket
    import time

    from mailctl.verify.runner import exit_code, run_checks

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free again once closed: nothing answers there
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], port
    started = time.monotonic()
    results = run_checks(Target(domain="example.com", host="mail.example.com", resolver=resolver, timeout=3))
    assert [(r.check, r.status) for r in results] == [("dns resolver", "fail")]
    assert "not your records" in results[0].fix and "127.0.0.1" in results[0].detail
    assert exit_code(results) == 1
    assert time.monotonic() - started < 10


def test_a_resolver_that_answers_no_such_name_works():
    assert dns_checks.check_resolver(target({}))[0].status == "ok"
