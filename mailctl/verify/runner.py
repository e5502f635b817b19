"""Runs every check against a target and renders the results (a table, or JSON).

The checks are independent of each other (each asks DNS or opens its own connections), so they run side by
side in a thread pool: with the host down, an operator waits about one timeout, not one per check. The
results keep the order of CHECKS, whatever order the checks finish in, so the report reads the same on
every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from mailctl.verify import (
    backup_checks,
    dane_checks,
    dns_checks,
    dnssec_checks,
    https_checks,
    imap_checks,
    ldap_checks,
    smtp_checks,
)
from mailctl.verify.model import FAIL, Result, Target

CHECKS: tuple[Callable[[Target], list[Result]], ...] = (
    dns_checks.check_declared_records,
    dns_checks.check_mail_records,
    dns_checks.check_dkim,
    dns_checks.check_reverse_dns,
    dnssec_checks.check_dnssec,
    smtp_checks.check_smtp,
    smtp_checks.check_submission,
    imap_checks.check_imaps,
    dane_checks.check_dane,
    https_checks.check_mta_sts,
    https_checks.check_webmail,
    ldap_checks.check_directory,
    backup_checks.check_backup,
)


def check_name(check: Callable[[Target], list[Result]]) -> str:
    """What the progress line calls a check: `check_imaps` is "imaps"."""
    return check.__name__.removeprefix("check_")


def checks_for(target: Target) -> tuple[Callable[[Target], list[Result]], ...]:
    """The checks that apply: the declared records say more than the minimum every mail domain needs."""
    return tuple(c for c in CHECKS if not (c is dns_checks.check_mail_records and target.expected))


def run_checks(target: Target, progress: Callable[[str], None] = lambda line: None) -> list[Result]:
    """Every check's results, in the order of CHECKS. `progress` gets a line as each check finishes."""
    results = dns_checks.check_resolver(target)
    progress("resolver")
    if results[0].status == FAIL:
        return results  # fail fast: with no DNS every other check would only repeat it, slowly
    checks = checks_for(target)
    done: dict[int, list[Result]] = {}
    with ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="verify") as pool:
        futures = {pool.submit(check, target): index for index, check in enumerate(checks)}
        for finished, future in enumerate(as_completed(futures), start=1):
            index = futures[future]
            done[index] = future.result()
            progress(f"{check_name(checks[index])} ({finished}/{len(checks)})")
    for index in range(len(checks)):
        results += done[index]
    return results


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def render_json(target: Target, results: list[Result]) -> str:
    return json.dumps({"domain": target.domain, "host": target.host, "ok": exit_code(results) == 0,
                       "results": [r.as_dict() for r in results]}, indent=2, sort_keys=True) + "\n"


def render_table(target: Target, results: list[Result]) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mailctl verify {target.domain} ({target.host})", show_lines=False)
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for r in results:
        table.add_row(r.check, f"[{styles[r.status]}]{r.status}[/]", r.detail, r.fix)
    console = Console(width=160, record=True, force_terminal=False, color_system=None)
    with console.capture() as capture:
        console.print(table)
        failed = sum(r.status == FAIL for r in results)
        console.print(f"{len(results)} checks, {failed} failed" + ("" if failed else ": all good"))
    return capture.get()
