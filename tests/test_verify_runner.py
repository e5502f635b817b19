"""`mailctl verify`'s runner (mailctl/verify/runner.py): the checks run side by side, so an operator with
the host down waits about one timeout rather than one per check, and the report still reads in the fixed
order of CHECKS. The checks here are stand-ins that only synchronise; what each real check sees is in
tests/test_verify_checks.py."""

from __future__ import annotations

import threading

import pytest

from mailctl.verify import dns_checks, runner
from mailctl.verify.model import FAIL, OK, Result, Target

WAIT = 10.0  # seconds a stand-in check waits for its peers before the test calls it sequential


def target(**kwargs) -> Target:
    return Target(domain="example.com", host="mail.example.com", resolver=None, **kwargs)


@pytest.fixture
def resolver_ok(monkeypatch):
    monkeypatch.setattr(dns_checks, "check_resolver", lambda t: [Result("dns resolver", OK, "answers")])


def named(name: str, body):
    body.__name__ = f"check_{name}"
    return body


def test_every_check_is_running_at_the_same_time(monkeypatch, resolver_ok):
    """No check waits for another to finish: all of them are in flight at once (a barrier that only
    opens when every check has reached it; run one after another, the first would wait out WAIT)."""
    count = len(runner.CHECKS)
    barrier = threading.Barrier(count, timeout=WAIT)

    def check(index):
        def body(t):
            barrier.wait()
            return [Result(f"check {index}", OK, "")]
        return named(f"n{index}", body)

    monkeypatch.setattr(runner, "CHECKS", tuple(check(i) for i in range(count)))
    results = runner.run_checks(target())
    assert [r.check for r in results] == ["dns resolver", *(f"check {i}" for i in range(count))]


def test_results_keep_the_order_of_checks_whatever_order_they_finish_in(monkeypatch, resolver_ok):
    """The last check finishes first and the first last; the report still lists them first to last,
    each with all of its rows, and the progress lines name them in the order they finished. (Each check
    waits until the runner has reported the next one as finished, so the order is the runner's own.)"""
    count = 5
    reported = [threading.Event() for _ in range(count)]

    def check(index):
        def body(t):
            if index + 1 < count:
                assert reported[index + 1].wait(WAIT), f"check {index + 1} was never reported finished"
            return [Result(f"check {index} a", OK, ""), Result(f"check {index} b", FAIL, "", "fix it")]
        return named(f"n{index}", body)

    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("n"):
            reported[int(line[1:].split(" ", 1)[0])].set()

    monkeypatch.setattr(runner, "CHECKS", tuple(check(i) for i in range(count)))
    results = runner.run_checks(target(), progress=progress)
    assert [r.check for r in results] == ["dns resolver",
                                          *(f"check {i} {part}" for i in range(count) for part in "ab")]
    assert lines == ["resolver", *(f"n{i} ({count - i}/{count})" for i in reversed(range(count)))]
    assert runner.exit_code(results) == 1


def test_a_dead_resolver_stops_before_any_other_check(monkeypatch):
    """With no DNS, every other check would only repeat the resolver's failure after its own timeout."""
    monkeypatch.setattr(dns_checks, "check_resolver", lambda t: [Result("dns resolver", FAIL, "no answer", "fix")])
    monkeypatch.setattr(runner, "CHECKS", (named("never", lambda t: pytest.fail("ran a check without DNS")),))
    assert [r.check for r in runner.run_checks(target())] == ["dns resolver"]


def test_the_minimum_records_check_runs_only_without_declared_records():
    """The stack's declared records say more than the minimum every mail domain needs."""
    declared = target(expected=[object()])
    assert dns_checks.check_mail_records not in runner.checks_for(declared)
    assert dns_checks.check_mail_records in runner.checks_for(target())
    assert dns_checks.check_declared_records in runner.checks_for(declared)
