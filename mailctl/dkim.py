"""`mailctl dkim rotate --stack S --to NEW`: the next safe step of a DKIM key rotation, for where S stands.

A rotation is three stack changes, each safe on its own (docs/dns.md, DKIM key rotation): publish the new
selector, switch signing to it once its record is served everywhere, retire the old one after mail signed
with it can no longer arrive. Which step is next follows from the stack's `dkimSelector` and
`dkimPublishedSelectors` alone, so the command reads the stack file and nothing else. Each selector it
publishes carries its reason, with the day: what it is for and when it may go, for whoever reads the
stack file or the DNS record next (the policy advises on a published selector without one).
"""

from __future__ import annotations

import datetime
import re
import shlex
from dataclasses import dataclass

from components.settings.values import PublishedSelector
from mailctl.config_reference import yaml_scalar

RETIRE_AFTER_DAYS = 7  #: receivers retry for up to 5 days (RFC 5321 4.5.4.1); reports and forwards come later


@dataclass(frozen=True)
class Step:
    """The next step: what it does, the config values it sets, and what must hold before it is taken."""

    title: str
    config: dict[str, object]  #: key (without namespace) -> the value to set
    before: tuple[str, ...] = ()  #: what to wait for and what `mailctl verify` must show, before the up
    done: bool = False


def as_config(entry: PublishedSelector) -> str | dict[str, str]:
    """A published selector as the stack file holds it: the bare selector, or {selector, reason}."""
    return {"selector": entry.selector, "reason": entry.reason} if entry.reason else entry.selector


#: how steps 1 and 2 mark the selectors they publish, in their reasons (and the day the old key may go)
NEXT_KEY, PREVIOUS_KEY = "next key", "previous key"
_RETIRE_ON = re.compile(r"retire on (\d{4}-\d{2}-\d{2})")


class RotationUnderWay(ValueError):
    """A new rotation asked for while another is not finished."""


def retire_on(entry: PublishedSelector) -> datetime.date | None:
    """The day step 2 wrote into a previous key's reason, from which it may be retired."""
    found = _RETIRE_ON.search(entry.reason)
    return datetime.date.fromisoformat(found[1]) if found else None


def next_step(signing: str, published: tuple[PublishedSelector, ...], new: str, ttl: int,
              today: datetime.date) -> Step:
    """The step that follows from the stack's signing and published selectors, for a rotation to `new`.
    Raises RotationUnderWay for a new rotation while the last one has a step to go."""
    names = tuple(entry.selector for entry in published)
    if signing == new:
        # step 3 retires the rotation's old keys; a selector published for another reason stays
        retired = [e for e in published if not e.reason or e.reason.startswith(PREVIOUS_KEY)]
        if not retired:
            return Step(f"{new} signs and no old key of its rotation is published: the rotation is complete", {},
                        done=True)
        due = max((day for day in map(retire_on, retired) if day), default=None)
        when = ("" if due is None else f", due on {due} (in {(due - today).days} days)" if due > today
                else f", due since {due}")
        return Step(
            f"step 3 of 3: retire {', '.join(e.selector for e in retired)} ({new} signs){when}",
            {"dkimPublishedSelectors": [as_config(e) for e in published if e not in retired]},
            (f"at least {RETIRE_AFTER_DAYS} days since {new} started signing"
             + (f" ({due} or later)" if due else "")
             + ": mail signed with the old key may be queued or retried until then, and it fails DKIM once the "
               "old record is gone",
             f"mailctl verify: dkim {new}._domainkey.<each domain> (signs) ok"),
        )
    if unfinished := [e for e in published if e.selector != new and e.reason.startswith((NEXT_KEY, PREVIOUS_KEY))]:
        entry = unfinished[0]
        if entry.reason.startswith(PREVIOUS_KEY):
            due = retire_on(entry)
            raise RotationUnderWay(
                f"the rotation to {signing} is not finished: step 3 still retires {entry.selector}"
                + (f" (due on {due})" if due else "") + f"; finish it first with `mailctl dkim rotate --to {signing}`")
        raise RotationUnderWay(
            f"a rotation to {entry.selector} is under way (published, not signing yet); finish it first with "
            f"`mailctl dkim rotate --to {entry.selector}`, or remove {entry.selector} from dkimPublishedSelectors "
            "to give it up")
    others = [as_config(entry) for entry in published if entry.selector != new]
    if new in names:
        retire_day = today + datetime.timedelta(days=RETIRE_AFTER_DAYS)
        previous = {"selector": signing,
                    "reason": f"{PREVIOUS_KEY}, signed until {today}; retire on {retire_day} or later"}
        return Step(
            f"step 2 of 3: {new} signs, {signing} stays published",
            {"dkimSelector": new, "dkimPublishedSelectors": [previous, *others]},
            (f"at least the record's TTL ({ttl} s) since the up that published {new}, so resolvers everywhere "
             "have it",
             f"mailctl verify: dkim {new}._domainkey.<each domain> (published, not signing) ok"),
        )
    upcoming = {"selector": new, "reason": f"{NEXT_KEY}, published {today}; signs from step 2 of the rotation"}
    return Step(f"step 1 of 3: publish {new} beside {signing} (it does not sign yet)",
                {"dkimPublishedSelectors": [*others, upcoming]})


def render_step(step: Step, stack: str, retired_keys: tuple[str, ...] = ()) -> str:
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
        lines += [f"  {command}" for command in config_commands(stack, f"ceres-mail:{key}", value)]
    lines += [f"  pulumi up --stack {stack}", "  mailctl dkim rotate again for the next step"]
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
