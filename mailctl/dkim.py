"""`mailctl dkim rotate --stack S --to NEW`: the next safe step of a DKIM key rotation, for where S stands.

A rotation is three stack changes, each safe on its own (README, DKIM key rotation): publish the new
selector, switch signing to it once its record is served everywhere, retire the old one after mail signed
with it can no longer arrive. Which step is next follows from the stack's `dkimSelector` and
`dkimPublishedSelectors` alone, so the command reads the stack file and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

RETIRE_AFTER_DAYS = 7  #: receivers retry for up to 5 days (RFC 5321 4.5.4.1); reports and forwards come later


@dataclass(frozen=True)
class Step:
    """The next step: what it does, the config values it sets, and what must hold before it is taken."""

    title: str
    config: dict[str, object]  #: key (without namespace) -> the value to set
    before: tuple[str, ...] = ()  #: what to wait for and what `mailctl verify` must show, before the up
    done: bool = False


def next_step(signing: str, published: tuple[str, ...], new: str, ttl: int) -> Step:
    """The step that follows from the stack's signing and published selectors, for a rotation to `new`."""
    if signing == new:
        if not published:
            return Step(f"{new} signs and no other selector is published: the rotation is complete", {}, done=True)
        return Step(
            f"step 3 of 3: retire {', '.join(published)} ({new} signs)",
            {"dkimPublishedSelectors": []},
            (f"at least {RETIRE_AFTER_DAYS} days since {new} started signing: mail signed with the old key may be "
             "queued or retried until then, and it fails DKIM once the old record is gone",
             f"mailctl verify: dkim {new}._domainkey.<each domain> (signs) ok"),
        )
    others = [selector for selector in published if selector != new]
    if new in published:
        return Step(
            f"step 2 of 3: {new} signs, {signing} stays published",
            {"dkimSelector": new, "dkimPublishedSelectors": [signing, *others]},
            (f"at least the record's TTL ({ttl} s) since the up that published {new}, so resolvers everywhere "
             "have it",
             f"mailctl verify: dkim {new}._domainkey.<each domain> (published, not signing) ok"),
        )
    return Step(f"step 1 of 3: publish {new} beside {signing} (it does not sign yet)",
                {"dkimPublishedSelectors": [*published, new]})


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
    """The `pulumi config` lines that set `key` to `value`. The CLI types a list key as array<string> (its
    declaration in Pulumi.yaml), so a list is set item by item with --path, after removing the old one."""
    if not isinstance(value, list):
        return [f"pulumi config set --stack {stack} {key} {value}"]
    return [f"pulumi config rm --stack {stack} {key}",
            *(f"pulumi config set --stack {stack} --path '{key}[{index}]' {item}" for index, item in enumerate(value))]


def with_config(text: str, project: str, values: dict[str, object]) -> str:
    """The stack file `text` with `values` set under `config:` (each key's old entry, with its nested lines,
    replaced in place, or added at the end), every other line and comment kept as it was."""
    lines = text.splitlines()
    if "config:" not in (line.rstrip() for line in lines):
        lines.append("config:")
    for key, value in values.items():
        entry = f"  {project}:{key}:"
        rendered = ([f"{entry} []"] if value == [] else [entry, *(f"    - {item}" for item in value)]
                    if isinstance(value, list) else [f"{entry} {value}"])
        start = next((i for i, line in enumerate(lines) if line.startswith(entry)), None)
        if start is None:
            lines += rendered
            continue
        end = start + 1
        while end < len(lines) and (lines[end].startswith("    ") or lines[end].startswith("  - ")):
            end += 1
        lines[start:end] = rendered
    return "\n".join(lines) + "\n"
