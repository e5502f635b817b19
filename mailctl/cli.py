"""`mailctl`: the operator's commands (see README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from components.builders.dns_records import DKIM_OUTPUT
from components.settings import SettingsError, mail_host_of
from mailctl.stackfile import StackFileError

if TYPE_CHECKING:
    from components.settings import Settings
    from mailctl.backup import HostAccess

#: What --dkim-public-key takes, in `mailctl zone` and `mailctl verify` alike (mailctl.zone.read_dkim_public_key)
DKIM_KEY_SOURCES = f"a PEM file, - for stdin, or the JSON of `pulumi stack output --json` holding {DKIM_OUTPUT}"


def _project_dir(value: str) -> Path:
    path = Path(value).resolve()
    if not (path / "Pulumi.yaml").is_file():
        raise argparse.ArgumentTypeError(f"{value} has no Pulumi.yaml")
    return path


def _default_project_dir() -> str:
    """The project next to this package (an editable install), else the working directory."""
    here = Path(__file__).resolve().parent.parent
    return str(here if (here / "Pulumi.yaml").is_file() else Path.cwd())


_Commands = argparse._SubParsersAction  #: what add_subparsers returns: each command adds its parser to it


def build_parser() -> argparse.ArgumentParser:
    """Every command and option of mailctl; `make docs` writes the README's synopsis from it."""
    parser = argparse.ArgumentParser(prog="mailctl", description="Operator commands of ceres-mail.")
    parser.add_argument("-C", "--project-dir", type=_project_dir, default=_default_project_dir(),
                        help="directory with Pulumi.yaml (default: this project)")
    commands = parser.add_subparsers(dest="command", required=True)
    _plan_command(commands)
    _zone_command(commands)
    _verify_command(commands)
    _policy_command(commands)
    _rotate_commands(commands)
    _backup_command(commands)
    _docs_command(commands)
    return parser


def _plan_command(commands: _Commands) -> None:
    """mailctl plan: the offline plan, and its diff against a saved one."""
    plan = commands.add_parser("plan", help="offline plan of a stack: no cloud, credentials or Pulumi CLI")
    plan.add_argument("--stack", default="prod", help="stack name, reads Pulumi.<stack>.yaml (default: prod)")
    form = plan.add_mutually_exclusive_group()  # --json also applies to --diff
    form.add_argument("--json", action="store_true", help="the plan as JSON (the documented contract)")
    form.add_argument("--mermaid", action="store_true", help="the dependency graph as a Mermaid flowchart")
    plan.add_argument("--diff", type=Path, metavar="BASE.json",
                      help="what changes against a saved plan (`mailctl plan --json > BASE.json`)")
    plan.add_argument("--by-name", action="store_true",
                      help="with --diff: match resources by name, to compare two stacks (their URNs differ)")
    plan.add_argument("--allow-other-stack", action="store_true",
                      help="with --diff: match by URN even though BASE.json is another stack's plan (every "
                           "resource then shows as removed and added)")


def _zone_command(commands: _Commands) -> None:
    """mailctl zone: the stack's records as zone files."""
    zone = commands.add_parser("zone", help="the stack's DNS records as BIND zone files (dnspython)")
    zone.add_argument("--stack", default="prod", help="stack name, reads Pulumi.<stack>.yaml (default: prod)")
    zone.add_argument("--domain", help="only this mail domain's zone")
    instead = zone.add_mutually_exclusive_group()
    instead.add_argument("--reverse", action="store_true", help="the PTR records for the IP provider instead")
    instead.add_argument("--ds", metavar="OUTPUTS.json",
                         help="with dnssec, each mail domain's DS record for its registrar instead, from the JSON of "
                              "`pulumi stack output --json` (a file, or - for stdin)")
    zone.add_argument("--dkim-public-key", metavar="PEM",
                      help=f"include the DKIM records of the stack's keys: {DKIM_KEY_SOURCES}; the JSON gives "
                           f"every published selector's key (`pulumi stack output --json | mailctl zone "
                           f"--dkim-public-key -`), a PEM the signing selector's")
    zone.add_argument("--out", type=Path, metavar="DIR",
                      help="write one <domain>.zone file per mail domain (each one zone named-checkzone accepts)")


def _verify_command(commands: _Commands) -> None:
    """mailctl verify: the live checks from outside."""
    verify = commands.add_parser("verify", help="live checks of the mail server from outside: DNS, PTR, SMTP, submission, IMAPS, MTA-STS")
    where = verify.add_mutually_exclusive_group()
    where.add_argument("--stack", help="check what this stack declares (Pulumi.<stack>.yaml)")
    where.add_argument("--domain", help="check a mail domain without a stack (with --host)")
    verify.add_argument("--host", help="the mail host (default: the stack's, or mail.<domain>)")
    verify.add_argument("--resolver", action="append", default=[], metavar="IP", help="DNS server to ask (repeatable)")
    verify.add_argument("--timeout", type=float, default=10.0, help="seconds for each network wait (default 10)")
    verify.add_argument("--ca-file", help="CA to trust for TLS (default: the system's store)")
    verify.add_argument("--password-file", type=Path, help="the no-reply mailbox password, to test logins")
    verify.add_argument("--user", help="the mailbox to log in as (default: the stack's no-reply)")
    verify.add_argument("--dkim-public-key", metavar="PEM",
                        help=f"the stack's DKIM key, to compare with every mail domain's record: {DKIM_KEY_SOURCES}")
    verify.add_argument("--json", action="store_true", help="results as JSON")
    _ssh_arguments(verify, "with --stack, also check the backups over SSH: ")
    verify.add_argument("--ssh-host", help="where to SSH for the backup check (default: --host, or the stack's mailHost)")


def _policy_command(commands: _Commands) -> None:
    """mailctl policy: the pack over a saved plan."""
    policy = commands.add_parser("policy", help="run the policy pack over a saved plan (mailctl plan --json)")
    policy.add_argument("plan_file", type=Path, metavar="PLAN.json")
    policy.add_argument("--state", metavar="EXPORT.json",
                        help="the stack's `pulumi stack export` ('-' for stdin): resource ages, for dkim-key-not-too-old")


#: mailctl <command> rotate, per kind of key: (its help, rotate's help, what --to names, its example)
_ROTATIONS = {
    "dkim": ("DKIM keys: the next safe step of a key rotation",
             "print the next step of a rotation to a new selector (docs/dns.md, DKIM key rotation)",
             "the selector that is to sign", "ceres2026"),
    "tls": ("the TLS key the stack owns (dane with tlsMode acme): the next safe step of a key rollover",
            "print the next step of a rollover to a new key (docs/dns.md, TLS key rollover)",
            "the key the host is to serve", "tls2"),
}


def _rotate_commands(commands: _Commands) -> None:
    """mailctl dkim rotate and mailctl tls rotate: the next step of a key rotation."""
    for command, (about, rotate_help, to_help, example) in _ROTATIONS.items():
        kind = commands.add_parser(command, help=about)
        kind_commands = kind.add_subparsers(dest=f"{command}_command", required=True)
        rotate = kind_commands.add_parser("rotate", help=rotate_help)
        rotate.add_argument("--stack", default="prod", help="stack name, reads Pulumi.<stack>.yaml (default: prod)")
        rotate.add_argument("--to", required=True, metavar="SELECTOR", help=f"{to_help}, e.g. {example}")
        rotate.add_argument("--write", action="store_true", help="also set the step's config in Pulumi.<stack>.yaml")


def _backup_command(commands: _Commands) -> None:
    """mailctl backup status and restore, over SSH."""
    backup = commands.add_parser("backup", help="the mail host's backups (restic), over SSH as the admin user")
    backup_commands = backup.add_subparsers(dest="backup_command", required=True, metavar="{status,restore}")
    status = backup_commands.add_parser("status", help="the last backup's age and size; exit 1 if older than 26 h or failed")
    restore = backup_commands.add_parser("restore", help="a snapshot back onto the stack's host (docs/backups.md)")
    restore.add_argument("--snapshot", default="latest", type=_snapshot_id, help="a snapshot id (default: the latest)")
    restore.add_argument("--password-file", metavar="FILE",
                         help="the repository password to use instead of the stack's (a file, or - for stdin)")
    for command in (status, restore):
        command.add_argument("--stack", default="prod", help="stack name, reads Pulumi.<stack>.yaml (default: prod)")
        command.add_argument("--host", help="address or name to reach the mail host at (default: the stack's mailHost)")
        _ssh_arguments(command, "")
    status.add_argument("--json", action="store_true", help="the host's report and the verdict as JSON")


def _docs_command(commands: _Commands) -> None:
    """mailctl config-reference: the generated parts of Pulumi.yaml and the README."""
    docs = commands.add_parser("config-reference", help="print the README's config reference (from the settings schema)")
    docs.add_argument("--write", action="store_true",
                      help="write Pulumi.yaml's config block and the README's reference instead (make docs)")


def _ssh_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    parser.add_argument("--ssh-key", type=Path, metavar="FILE",
                        help=f"{purpose}the private key to log in with (default: ssh-agent and ~/.ssh)")
    parser.add_argument("--ssh-user", help=f"{purpose}the user to log in as (default: the stack's adminUser)")
    parser.add_argument("--known-hosts", type=Path, metavar="FILE",
                        help="the known_hosts file that pins the mail host's key (default: ~/.ssh/known_hosts)")


def _snapshot_id(value: str) -> str:
    import re

    if value != "latest" and not re.fullmatch(r"[0-9a-f]{4,64}", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a snapshot id (hex, as `restic snapshots` shows it)")
    return value


def _host_access(args: argparse.Namespace, settings: Settings) -> HostAccess:
    from mailctl.backup import HostAccess

    return HostAccess(host=getattr(args, "ssh_host", None) or args.host or settings.mail_host_fqdn, user=args.ssh_user or settings.admin_user,
                      key_file=args.ssh_key, known_hosts=args.known_hosts)


def cmd_backup(args: argparse.Namespace) -> int:
    import json

    from mailctl.backup import HOST_EXIT, BackupCommandError, fetch_status, judge, render_status, restore
    from mailctl.verify.runner import exit_code
    from mailctl.zone import stack_settings

    settings = stack_settings(args.project_dir, args.stack)
    if settings.backup_inputs is None:
        raise StackFileError(f"stack {args.stack} has no backups: set backupTarget (docs/backups.md)")
    access = _host_access(args, settings)
    try:
        if args.backup_command == "status":
            status = fetch_status(access)
            results = judge(status)
            if args.json:
                print(json.dumps({"host": status, "results": [r.as_dict() for r in results],
                                  "ok": exit_code(results) == 0}, indent=2, sort_keys=True))
            else:
                sys.stdout.write(render_status(status, results))
            return exit_code(results)
        password = _read_secret(args.password_file) if args.password_file else None
        code = restore(access, args.snapshot, password)
    except BackupCommandError as error:
        print(f"mailctl backup {args.backup_command}: {error}", file=sys.stderr)
        return 1
    if code:
        print(f"mailctl backup restore: failed on the host ({HOST_EXIT.get(code, f'exit {code}')})", file=sys.stderr)
    return code


def _read_secret(source: str) -> str:
    try:
        text = sys.stdin.readline() if source == "-" else Path(source).read_text()
    except OSError as error:
        raise StackFileError(f"cannot read {error.filename}: {error.strerror}") from None
    return text.strip("\n")


def cmd_config_reference(args: argparse.Namespace) -> int:
    from mailctl.config_reference import render_config_reference, write

    if args.write:
        changed = write(args.project_dir)
        print(f"wrote {', '.join(path.name for path in changed)}" if changed else "Pulumi.yaml and README.md already up to date")
    else:
        print(render_config_reference())
    return 0


def _report_policy(violations: list[dict[str, str]]) -> int:
    """Print violations; the exit code is 1 when any is mandatory."""
    for v in violations:
        print(f"[{v['level']}] {v['policy']}: {v['message']} ({v['urn']})")
    mandatory = sum(v["level"] == "mandatory" for v in violations)
    print(f"policy: {len(violations)} violation(s), {mandatory} mandatory")
    return 1 if mandatory else 0


def cmd_policy(args: argparse.Namespace) -> int:
    import json

    from mailctl.plan import Plan
    from mailctl.state import StateError, created_times
    from policy.rules import evaluate

    try:
        plan = Plan.from_dict(json.loads(args.plan_file.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StackFileError(f"{args.plan_file} is not a plan from `mailctl plan --json` ({error})") from None
    created = {}
    if args.state:
        try:
            created = created_times(sys.stdin.read() if args.state == "-" else Path(args.state).read_text())
        except OSError as error:
            raise StackFileError(f"--state: cannot read {args.state}: {error.strerror}") from None
        except StateError as error:
            raise StackFileError(f"--state: {args.state} is {error}") from None
    return _report_policy(evaluate(plan.resources, outputs=(plan.stack_urn, plan.outputs), created=created))


def cmd_zone(args: argparse.Namespace) -> int:
    from mailctl.zone import (
        read_ds_records,
        read_stack_keys,
        render_ds_records,
        render_reverse,
        render_stack_zones,
        stack_settings,
        zone_files,
    )

    settings = stack_settings(args.project_dir, args.stack)
    if args.domain and args.domain not in settings.mail_domains:
        raise StackFileError(f"{args.domain} is not a mail domain of stack {args.stack} ({', '.join(settings.mail_domains)})")
    if args.reverse:
        sys.stdout.write(render_reverse(settings))
        return 0
    if args.ds:
        sys.stdout.write(render_ds_records(read_ds_records(settings, args.stack, args.ds, args.domain), args.stack))
        return 0
    keys, tls_keys = read_stack_keys(args.dkim_public_key, settings.dkim_selector) if args.dkim_public_key else ({}, {})
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for domain, text in zone_files(settings, args.stack, args.domain, keys, tls_keys).items():
            (args.out / f"{domain}.zone").write_text(text)
            print(f"mailctl: wrote {args.out / f'{domain}.zone'}", file=sys.stderr)
        return 0
    sys.stdout.write(render_stack_zones(settings, args.stack, args.domain, keys, tls_keys))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import dns.flags
    import dns.resolver

    from components.builders.dns_records import build_records, dkim_value, mta_sts_policy
    from mailctl.verify.model import Target
    from mailctl.verify.runner import exit_code, render_json, render_table, run_checks
    from mailctl.zone import owned_tlsa_records, read_dkim_public_key, read_stack_keys, stack_settings

    resolver = dns.resolver.Resolver(configure=not args.resolver)
    if args.resolver:
        resolver.nameservers = args.resolver
    resolver.flags = dns.flags.RD | dns.flags.AD  # asks a validating resolver to say whether it validated (RFC 6840 5.7)
    try:
        password = args.password_file.read_text().strip() if args.password_file else ""
    except OSError as error:
        raise StackFileError(f"cannot read {error.filename}: {error.strerror}") from None
    if args.domain:
        dkim_txt = dkim_value(read_dkim_public_key(args.dkim_public_key)) if args.dkim_public_key else ""
        target = Target(domain=args.domain, host=mail_host_of(args.domain, args.host or ""), resolver=resolver,
                        timeout=args.timeout, mailbox=args.user or f"no-reply@{args.domain}", password=password,
                        cafile=args.ca_file, dkim_txt=dkim_txt)
    else:
        settings = stack_settings(args.project_dir, args.stack or "prod")
        keys, tls_keys = (read_stack_keys(args.dkim_public_key, settings.dkim_selector) if args.dkim_public_key
                          else ({}, {}))
        txt = {selector: dkim_value(pem) for selector, pem in keys.items()}
        expected = build_records(settings.dns_inputs) + owned_tlsa_records(settings.dns_inputs, tls_keys)
        target = Target(domain=settings.domain, host=args.host or settings.mail_host_fqdn, resolver=resolver,
                        timeout=args.timeout, expected=expected,
                        extra_domains=settings.mail_domains[1:], mta_sts_policy=mta_sts_policy(settings.dns_inputs),
                        dkim_selector=settings.dkim_selector, dkim_txt=txt.get(settings.dkim_selector, ""),
                        dkim_published={s: txt.get(s, "") for s in settings.dns_inputs.dkim_published},
                        mailbox=args.user or settings.mailbox_address, password=password, cafile=args.ca_file,
                        ldap_url=settings.ldap_inputs.url if settings.ldap_inputs else "",
                        ldap_base_dn=settings.ldap_inputs.base_dn if settings.ldap_inputs else "",
                        webmail=settings.serves_webmail, dnssec=settings.dnssec,
                        backup_access=_host_access(args, settings)
                        if settings.backup_inputs and (args.ssh_key or args.ssh_user) else None)
    # the checks run side by side: each line says which one has finished, and how many of them have
    results = run_checks(target, progress=lambda line: print(f"checked {line}", file=sys.stderr, flush=True))
    sys.stdout.write(render_json(target, results) if args.json else render_table(target, results))
    return exit_code(results)


def cmd_rotate(args: argparse.Namespace) -> int:
    """`mailctl dkim rotate` and `mailctl tls rotate`: print (and with --write set) the next step."""
    import datetime

    from pydantic.alias_generators import to_snake

    from components.settings import values
    from mailctl import rotation
    from mailctl.stackfile import load_stack
    from mailctl.zone import stack_settings

    kind = {"dkim": rotation.DKIM, "tls": rotation.TLS}[args.command]
    try:
        values.dns_label(args.to)
    except ValueError as error:
        raise StackFileError(f"--to: {error}") from None
    settings = stack_settings(args.project_dir, args.stack)
    if kind is rotation.TLS and not settings.owns_tls_key:
        raise StackFileError(f"stack {args.stack} does not own its TLS key, so there is none to roll over: the stack "
                             "owns it with dane: true and tlsMode: acme (a provided certificate brings its own key)")
    in_use, published = (getattr(settings, to_snake(key)) for key in (kind.in_use, kind.published))
    stand = rotation.Stand(kind, in_use, tuple(published), args.to, settings.dns_ttl,
                           datetime.datetime.now(datetime.timezone.utc).date(), settings.mail_host_fqdn)
    try:
        step = rotation.next_step(stand)
    except rotation.RotationUnderWay as error:
        raise StackFileError(f"--to {args.to}: {error}") from None
    project = load_stack(args.project_dir, args.stack).project
    # step 3 deletes the keys it retires: protected ones must be unprotected first
    retired = rotation.retired_key_urns(stand, step, args.stack, project) if settings.protect else ()
    sys.stdout.write(rotation.render_step(step, args.stack, retired, kind.command))
    if args.write and step.config:
        path = args.project_dir / f"Pulumi.{args.stack}.yaml"
        path.write_text(rotation.with_config(path.read_text(), project, step.config))
        stack_settings(args.project_dir, args.stack)  # the edited file still validates
        print(f"mailctl: wrote {', '.join(step.config)} to {path}; review it, then pulumi up", file=sys.stderr)
    return 0


def _diff_base(args: argparse.Namespace):
    """The saved plan `--diff` compares with, refused up front when it is another stack's and resources are
    matched by URN: every URN names its stack, so each resource would show as removed and added."""
    import json

    from mailctl.plan import Plan

    try:
        base = Plan.from_dict(json.loads(args.diff.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StackFileError(f"{args.diff} is not a plan from `mailctl plan --json` ({error})") from None
    if base.stack != args.stack and not (args.by_name or args.allow_other_stack):
        raise StackFileError(f"{args.diff} is a plan of stack {base.stack!r}, not {args.stack!r}: resources are matched "
                             "by URN, which names the stack, so every one would show as removed and added; compare "
                             "the two stacks with --by-name (or diff by URN anyway with --allow-other-stack)")
    return base


def cmd_plan(args: argparse.Namespace) -> int:
    from mailctl.recorder import record
    from mailctl.render import render_mermaid, render_text

    base = _diff_base(args) if args.diff else None
    plan = record(args.project_dir, args.stack)
    if base is not None:
        from mailctl.diff import diff_json, diff_plans, render_diff, render_problems, transition_problems

        changes = diff_plans(base, plan, by_name=args.by_name)
        sys.stdout.write(diff_json(changes) if args.json else render_diff(changes))
        problems = transition_problems(base, plan)
        # on stderr with --json, which keeps its documented form (the list of changes)
        (sys.stderr if args.json else sys.stdout).write(render_problems(problems))
        return 1 if problems or any(v["level"] == "mandatory" for v in plan.policy) else 0
    if args.json:
        sys.stdout.write(plan.to_json())
    elif args.mermaid:
        sys.stdout.write(render_mermaid(plan))
    else:
        sys.stdout.write(render_text(plan))
    return 1 if any(v["level"] == "mandatory" for v in plan.policy) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {
            "plan": cmd_plan,
            "zone": cmd_zone,
            "verify": cmd_verify,
            "policy": cmd_policy,
            "config-reference": cmd_config_reference,
            "dkim": cmd_rotate,
            "tls": cmd_rotate,
            "backup": cmd_backup,
        }
        return commands[args.command](args)
    except SettingsError as error:
        print(f"mailctl: stack {getattr(args, 'stack', '?')}: {error}", file=sys.stderr)
        return 2
    except StackFileError as error:
        print(f"mailctl: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
