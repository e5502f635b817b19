"""`mailctl plan --diff BASE.json`: what a change does, between a saved plan and the current one.

Resources are matched by URN. A resource is `replaced` when an input its provider cannot change in place
differs; offline we cannot ask the provider, so the rule is conservative and explicit: a change of any
input listed in REPLACING_INPUTS for its type (names and identities), or of its parent, is a replacement.
A remote command that changes in place `re-runs`: with no `update` command, pulumi-command runs `create`
again on any change, which for an install stage means the stage runs on the host again. A changed
multi-line value (a stage's script) is shown as a unified diff of its lines.
Secrets stay "[secret]" on both sides: a rotated secret shows as unchanged, which is the price of never
decrypting anything offline.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from components.builders.dns_records import DKIM_WHY, STACK_KEY_INFIX, dkim_selector_of, tlsa_pin, tlsa_serves
from mailctl.plan import Plan
from policy.rules import COMMAND, DNS_RECORD, PRIVATE_KEY

# Inputs whose change the providers implement as delete-and-create.
REPLACING_INPUTS: dict[str, tuple[str, ...]] = {
    "cloudflare:index/dnsRecord:DnsRecord": ("zoneId",),
    "proxmoxve:index/vmLegacy:VmLegacy": ("nodeName", "vmId"),
    "proxmoxve:download/file:File": ("nodeName", "datastoreId", "url", "fileName", "contentType"),
    "proxmoxve:index/fileLegacy:FileLegacy": ("nodeName", "datastoreId", "sourceRaw", "contentType"),
    "tls:index/privateKey:PrivateKey": ("algorithm", "rsaBits", "ecdsaCurve"),
    "random:index/randomPassword:RandomPassword": ("length", "special"),
    "kubernetes:core/v1:Secret": ("metadata",),
    "keycloak:index/realm:Realm": ("realm",),
}


@dataclass
class Change:
    urn: str
    type: str
    name: str
    action: str  #: added | removed | changed | re-runs | replaced
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  #: input -> {"before", "after"}


_MISSING = None


def _leaf_changes(before: Any, after: Any, path: str, out: dict[str, dict[str, Any]]) -> None:
    """The changed leaves, by path (`disks[1].size`), so a reviewer sees what changed, not a whole block."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after)):
            _leaf_changes(before.get(key, _MISSING), after.get(key, _MISSING), f"{path}.{key}" if path else key, out)
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (b, a) in enumerate(zip(before, after)):
            _leaf_changes(b, a, f"{path}[{index}]", out)
    elif before != after:
        out[path] = {"before": before, "after": after}


def _changed_inputs(before: dict, after: dict) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    _leaf_changes(before, after, "", out)
    return out


def _stackless(urn: str | None) -> str | None:
    """A URN without its stack (`urn:pulumi:prod::…` -> `…`): the same resource in two stacks compares equal."""
    return urn.split("::", 1)[1] if urn else urn


def _stackless_options(options: dict[str, Any]) -> dict[str, Any]:
    return {**options, "provider": _stackless(options.get("provider"))}


def diff_plans(base: Plan, head: Plan, by_name: bool = False) -> list[Change]:
    """The changes from `base` to `head`, resources matched by URN, or with `by_name` by their name (two
    stacks of the project name their resources alike, while each URN names its stack)."""
    if by_name:
        old = {r.name: r for r in base.resources}
        new = {r.name: r for r in head.resources}
    else:
        old, new = base.by_urn(), head.by_urn()
    changes = []
    for key in sorted(set(old) | set(new)):
        urn = new[key].urn if key in new else old[key].urn
        if key not in old:
            r = new[key]
            changes.append(Change(urn, r.type, r.name, "added"))
        elif key not in new:
            r = old[key]
            changes.append(Change(urn, r.type, r.name, "removed"))
        else:
            before, after = old[key], new[key]
            inputs = _changed_inputs(before.inputs, after.inputs)
            options = _changed_inputs(_stackless_options(before.options), _stackless_options(after.options))
            if not inputs and not options:
                continue
            top_level = {path.split(".", 1)[0].split("[", 1)[0] for path in inputs}
            replacing = set(REPLACING_INPUTS.get(after.type, ())) & top_level
            moved = _stackless(before.parent) != _stackless(after.parent)
            action = "replaced" if replacing or moved else "changed"
            if action == "changed" and after.type == COMMAND and inputs:
                action = "re-runs"
            changes.append(Change(urn, after.type, after.name, action,
                                  {**inputs, **{f"options.{k}": v for k, v in options.items()}}))
    return changes


def render_diff(changes: list[Change]) -> str:
    if not changes:
        return "no changes\n"
    marks = {"added": "+", "removed": "-", "changed": "~", "re-runs": "~>", "replaced": "+-"}
    lines = []
    for change in changes:
        lines.append(f"{marks[change.action]} {change.name}  {change.type}  ({change.action})")
        for key, values in change.inputs.items():
            lines += _render_value_change(key, values["before"], values["after"])
    counts = {a: sum(c.action == a for c in changes) for a in ("added", "changed", "re-runs", "replaced", "removed")}
    lines.append("")
    lines.append(", ".join(f"{n} {a}" for a, n in counts.items()))
    return "\n".join(lines) + "\n"


def _render_value_change(key: str, before: Any, after: Any) -> list[str]:
    """One line `key: before => after`, or for text of several lines (a script) its unified diff."""
    if isinstance(before, str) and isinstance(after, str) and ("\n" in before or "\n" in after):
        hunks = difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", lineterm="", n=2)
        return [f"    {key}:"] + [f"      {line}" for line in hunks]
    return [f"    {key}: {json.dumps(before, sort_keys=True)} => {json.dumps(after, sort_keys=True)}"]


def diff_json(changes: list[Change]) -> str:
    return json.dumps([change.__dict__ for change in changes], indent=2, sort_keys=True) + "\n"


# --- changes that are unsafe as a step, whatever each side looks like on its own -----------------------


def dkim_selectors(plan: Plan) -> tuple[set[str], set[str]]:
    """(signing, published) selectors of a plan, read from its DKIM records (their comment says which signs)."""
    signing, published = set(), set()
    for record in plan.of_type(DNS_RECORD):
        name = str(record.inputs.get("name", ""))
        if record.inputs.get("type") == "TXT" and "._domainkey." in name:
            selector = dkim_selector_of(name)
            (signing if record.inputs.get("comment") == DKIM_WHY else published).add(selector)
    return signing, published


def tls_key_names(plan: Plan) -> tuple[set[str], set[str]]:
    """(served, published) names of the TLS keys the stack owns (`<platform>-tls-key-<name>`), read from their
    TLSA records (their comment says which key the host serves); a provided certificate's TLSA is left out."""
    owned = {key.name.rpartition(STACK_KEY_INFIX)[2] for key in plan.of_type(PRIVATE_KEY)
             if STACK_KEY_INFIX in key.name}
    served, published = set(), set()
    for record in plan.of_type(DNS_RECORD):
        if record.inputs.get("type") != "TLSA":
            continue
        if (pin := tlsa_pin(record.name, str(record.inputs.get("name")))) in owned:
            (served if tlsa_serves(str(record.inputs.get("comment", ""))) else published).add(pin)
    return served, published


@dataclass(frozen=True)
class _Switch:
    """A key in use that a step may switch only to one the base already published."""

    policy: str
    setting: str  #: the config key naming the key in use
    published_setting: str  #: the config key listing the keys published ahead
    keys: Callable[[Plan], tuple[set[str], set[str]]]  #: a plan's (in use, published) keys
    risk: str  #: what goes wrong when the switch comes too early


_SWITCHES = (
    _Switch("dkim-switch-after-publishing", "dkimSelector", "dkimPublishedSelectors", dkim_selectors,
            "its record may not be served everywhere yet"),
    _Switch("tls-switch-after-publishing", "tlsKeySelector", "tlsPublishedKeys", tls_key_names,
            "DANE-validating senders may still hold TLSA records without it and would refuse the key"),
)


def transition_problems(base: Plan, head: Plan) -> list[dict[str, str]]:
    """Mandatory problems of going from `base` to `head` in one step: a switch of the DKIM selector that signs
    (receivers would fail the new signatures; docs/dns.md, DKIM key rotation), or of the TLS key the host
    serves (DANE-validating senders would refuse it; TLS key rollover), to one whose records `base` did not
    already publish. A first key in use (a stack turning dane on) switches from none: nothing pinned it."""
    problems = []
    for switch in _SWITCHES:
        base_used, base_published = switch.keys(base)
        head_used, _ = switch.keys(head)
        problems += [
            {"policy": switch.policy, "level": "mandatory",
             "message": f"{switch.setting} switches to {key}, which {base.stack}'s base plan did not publish: "
                        f"{switch.risk}. First publish it ({switch.published_setting}: [{key}]), wait at least the "
                        "record's TTL until `mailctl verify` shows it, then switch"}
            for key in sorted(head_used - base_used - base_published) if base_used
        ]
    return problems


def render_problems(problems: list[dict[str, str]]) -> str:
    return "".join(f"[{p['level']}] {p['policy']}: {p['message']}\n" for p in problems)
