"""`mailctl dkim rotate` and `mailctl tls rotate --stack S --to NEW`: the next safe step of a key rotation,
for where S stands.

A rotation is three stack changes, each safe on its own: publish the new key's records, switch to it once
they are served everywhere, retire the old one's once nothing needs them (docs/dns.md, DKIM key rotation
and TLS key rollover). For DKIM the key in use signs and the old record stays for mail signed with it;
for TLS the key in use is the one the host serves, each key's TLSA pins it, and the old TLSA stays so the
host can switch back at once. Which step is next follows from the stack's key in use and its published
keys alone, so the command reads the stack file and nothing else. Each key it publishes carries its
reason, with the day: what it is for and when it may go, for whoever reads the stack file or the DNS
records next.
"""

from __future__ import annotations

import datetime
import re
import shlex
from dataclasses import dataclass

from components.builders.dns_records import STACK_KEY_INFIX
from components.settings.values import PublishedSelector
from mailctl.config_reference import yaml_scalar


@dataclass(frozen=True)
class Kind:
    """One kind of key a stack rotates: its config keys, its resources and the words its steps say."""

    command: str  #: `mailctl <command> rotate`
    in_use: str  #: the config key naming the key in use
    published: str  #: the config key listing the keys published without being in use
    key_infix: str  #: a key is the resource `<platform><key_infix><name>`
    uses: str  #: what the key in use does ("signs")
    used_until: str  #: how a previous key's reason says until when it was in use ("signed until")
    from_step_2: str  #: how a next key's reason says when it comes into use
    not_yet: str  #: what a published key does not do yet ("not signing yet")
    retire_after_days: int  #: how long after the switch step 3 is due
    switch_waits: tuple[str, ...]  #: what must hold before step 2: templates of {new}, {ttl}, {host}
    retire_waits: tuple[str, ...]  #: what must hold before step 3: templates of {new}, {days}, {due}


#: receivers retry for up to 5 days (RFC 5321 4.5.4.1); reports and forwards come later
RETIRE_AFTER_DAYS = 7
DKIM = Kind(
    "dkim", "dkimSelector", "dkimPublishedSelectors", "-dkim-key-", "signs", "signed until",
    "signs from step 2 of the rotation", "not signing yet", RETIRE_AFTER_DAYS,
    ("at least the record's TTL ({ttl} s) since the up that published {new}, so resolvers everywhere have it",
     "mailctl verify: dkim {new}._domainkey.<each domain> (published, not signing) ok"),
    ("at least {days} days since {new} started signing{due}: mail signed with the old key may be queued or "
     "retried until then, and it fails DKIM once the old record is gone",
     "mailctl verify: dkim {new}._domainkey.<each domain> (signs) ok"),
)
#: nothing needs the old TLSA once the host serves the new key; for a day it lets the host switch back at once
TLS = Kind(
    "tls", "tlsKeySelector", "tlsPublishedKeys", STACK_KEY_INFIX, "is served", "served until",
    "served from step 2 of the rollover", "not served yet", 1,
    ("at least the records' TTL ({ttl} s) since the up that published {new}, so resolvers everywhere have "
     "its TLSA",
     "mailctl verify, given `pulumi stack output --json` (--dkim-public-key -): dns TLSA _<port>._tcp.{host} ok "
     "for {new}'s key as for the served one, on each port"),
    ("a day since {new} was first served{due}: until then the old TLSA lets the host go back to the old key at "
     "once, should the new one fail",
     "mailctl verify: each dane <port> tlsa row ok (the host serves {new}'s key, which its TLSA pins)"),
)


@dataclass(frozen=True)
class Step:
    """The next step: what it does, the config values it sets, and what must hold before it is taken."""

    title: str
    config: dict[str, object]  #: key (without namespace) -> the value to set
    before: tuple[str, ...] = ()  #: what to wait for and what `mailctl verify` must show, before the up
    done: bool = False


def as_config(entry: PublishedSelector) -> str | dict[str, str]:
    """A published key as the stack file holds it: the bare name, or {selector, reason}."""
    return {"selector": entry.selector, "reason": entry.reason} if entry.reason else entry.selector


#: how steps 1 and 2 mark the keys they publish, in their reasons (and the day the old key may go)
NEXT_KEY, PREVIOUS_KEY = "next key", "previous key"
_RETIRE_ON = re.compile(r"retire on (\d{4}-\d{2}-\d{2})")


class RotationUnderWay(ValueError):
    """A new rotation asked for while another is not finished."""


def retire_on(entry: PublishedSelector) -> datetime.date | None:
    """The day step 2 wrote into a previous key's reason, from which it may be retired."""
    found = _RETIRE_ON.search(entry.reason)
    return datetime.date.fromisoformat(found[1]) if found else None


@dataclass(frozen=True)
class Stand:
    """Where a stack stands in a rotation of `kind` to `new`, and what its steps' words are made of."""

    kind: Kind
    in_use: str  #: the key in use now
    published: tuple[PublishedSelector, ...]
    new: str  #: the key that is to be in use
    ttl: int  #: the records' TTL
    today: datetime.date
    host: str = "<mailHost>"  #: the mail host, for the names a step asks to look up


def next_step(stand: Stand) -> Step:
    """The step that follows from where the stack stands. Raises RotationUnderWay for a new rotation while
    the last one has a step to go."""
    kind, in_use, published, new = stand.kind, stand.in_use, stand.published, stand.new
    if in_use == new:
        return _retirement(stand)
    _refuse_a_second_rotation(stand)
    others = [as_config(entry) for entry in published if entry.selector != new]
    if new in (entry.selector for entry in published):
        retire_day = stand.today + datetime.timedelta(days=kind.retire_after_days)
        previous = {"selector": in_use,
                    "reason": f"{PREVIOUS_KEY}, {kind.used_until} {stand.today}; retire on {retire_day} or later"}
        return Step(
            f"step 2 of 3: {new} {kind.uses}, {in_use} stays published",
            {kind.in_use: new, kind.published: [previous, *others]},
            tuple(wait.format(new=new, ttl=stand.ttl, host=stand.host) for wait in kind.switch_waits),
        )
    upcoming = {"selector": new, "reason": f"{NEXT_KEY}, published {stand.today}; {kind.from_step_2}"}
    return Step(f"step 1 of 3: publish {new} beside {in_use} ({kind.not_yet})",
                {kind.published: [*others, upcoming]})


def _retirement(stand: Stand) -> Step:
    """Step 3, with the new key in use: retire the rotation's old keys (a key published for another reason
    stays), or say the rotation is complete."""
    kind, new, published = stand.kind, stand.new, stand.published
    retired = [e for e in published if not e.reason or e.reason.startswith(PREVIOUS_KEY)]
    if not retired:
        return Step(f"{new} {kind.uses} and no old key of its rotation is published: the rotation is complete", {},
                    done=True)
    due = max((day for day in map(retire_on, retired) if day), default=None)
    left = (due - stand.today).days if due else 0
    when = ("" if due is None else f", due on {due} (in {left} day{'s' if left > 1 else ''})" if left > 0
            else f", due since {due}")
    return Step(
        f"step 3 of 3: retire {', '.join(e.selector for e in retired)} ({new} {kind.uses}){when}",
        {kind.published: [as_config(e) for e in published if e not in retired]},
        tuple(wait.format(new=new, days=kind.retire_after_days, due=f" ({due} or later)" if due else "")
              for wait in kind.retire_waits),
    )


def _refuse_a_second_rotation(stand: Stand) -> None:
    """A rotation to another key while one is half done would leave three keys and two rotations."""
    kind, in_use = stand.kind, stand.in_use
    unfinished = [e for e in stand.published if e.selector != stand.new and e.reason.startswith((NEXT_KEY, PREVIOUS_KEY))]
    if not unfinished:
        return
    entry = unfinished[0]
    if entry.reason.startswith(PREVIOUS_KEY):
        due = retire_on(entry)
        raise RotationUnderWay(
            f"the rotation to {in_use} is not finished: step 3 still retires {entry.selector}"
            + (f" (due on {due})" if due else "") + f"; finish it first with `mailctl {kind.command} rotate --to {in_use}`")
    raise RotationUnderWay(
        f"a rotation to {entry.selector} is under way (published, {kind.not_yet}); finish it first with "
        f"`mailctl {kind.command} rotate --to {entry.selector}`, or remove {entry.selector} from {kind.published} "
        "to give it up")


def retired_key_urns(stand: Stand, step: Step, stack: str, project: str) -> tuple[str, ...]:
    """The URNs of the keys step 3 deletes (its config keeps the others published), which a protected stack
    must unprotect first."""
    if stand.in_use != stand.new or step.done:
        return ()
    kept = {e["selector"] if isinstance(e, dict) else e for e in step.config.get(stand.kind.published, ())}
    return tuple(f"urn:pulumi:{stack}::{project}::ceres-mail:index:Platform$tls:index/privateKey:PrivateKey"
                 f"::ceres-mail{stand.kind.key_infix}{entry.selector}"
                 for entry in stand.published if entry.selector not in kept)


def render_step(step: Step, stack: str, retired_keys: tuple[str, ...] = (), command: str = DKIM.command) -> str:
    """The step as the operator runs it; `retired_keys` are the URNs of protected keys step 3 deletes."""
    if step.done:
        return step.title + "\n"
    lines = [step.title]
    if step.before:
        lines.append("before it:")
        lines += [f"  - {condition}" for condition in step.before]
    lines.append("then:")
    lines += [f"  pulumi state unprotect --stack {stack} '{urn}'" for urn in retired_keys]
    for key, value in step.config.items():
        lines += [f"  {line}" for line in config_commands(stack, f"ceres-mail:{key}", value)]
    lines += [f"  pulumi up --stack {stack}", f"  mailctl {command} rotate again for the next step"]
    return "\n".join(lines) + "\n"


def config_commands(stack: str, key: str, value: object) -> list[str]:
    """The `pulumi config` lines that set `key` to `value`: a list item by item with --path (the CLI would
    store a JSON text as one string), an object item field by field, after removing the old list."""
    if not isinstance(value, list):
        return [f"pulumi config set --stack {stack} {key} {shlex.quote(str(value))}"]
    lines = [f"pulumi config rm --stack {stack} {key}"]
    for index, item in enumerate(value):
        fields = item.items() if isinstance(item, dict) else [(None, item)]
        for field, text in fields:
            path = f"{key}[{index}]" + (f".{field}" if field else "")
            lines.append(f"pulumi config set --stack {stack} --path {shlex.quote(path)} {shlex.quote(str(text))}")
    return lines


def with_config(text: str, project: str, values: dict[str, object]) -> str:
    """The stack file `text` with `values` set under `config:` (each key's old entry, with its nested lines,
    replaced in place, or added at the end), every other line and comment kept as it was."""
    lines = text.splitlines()
    if "config:" not in (line.rstrip() for line in lines):
        lines.append("config:")
    for key, value in values.items():
        entry = f"  {project}:{key}:"
        rendered = ([f"{entry} []"] if value == [] else [entry, *(line for item in value for line in _list_item(item))]
                    if isinstance(value, list) else [f"{entry} {yaml_scalar(value)}"])
        start = next((i for i, line in enumerate(lines) if line.startswith(entry)), None)
        if start is None:
            lines += rendered
            continue
        end = start + 1
        while end < len(lines) and (lines[end].startswith("    ") or lines[end].startswith("  - ")):
            end += 1
        lines[start:end] = rendered
    return "\n".join(lines) + "\n"


def _list_item(item: object) -> list[str]:
    """A list item's lines under a config key: a scalar, or an object with one field per line."""
    if not isinstance(item, dict):
        return [f"    - {yaml_scalar(item)}"]
    fields = [f"{field}: {yaml_scalar(value)}" for field, value in item.items()]
    return [f"    - {fields[0]}", *(f"      {line}" for line in fields[1:])]
