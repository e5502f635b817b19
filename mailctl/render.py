"""Human forms of a Plan: an indented resource tree with key inputs, and a Mermaid graph for PRs."""

from __future__ import annotations

import json
from typing import Any

from mailctl.plan import Plan, PlannedResource

# The inputs worth a line in the tree, per resource type; the JSON form has them all.
KEY_INPUTS: dict[str, tuple[str, ...]] = {
    "proxmoxve:download/file:File": ("nodeName", "datastoreId", "url", "checksum"),
    "proxmoxve:index/fileLegacy:FileLegacy": ("nodeName", "datastoreId", "contentType", "sourceRaw"),
    "proxmoxve:index/vmLegacy:VmLegacy": ("name", "nodeName", "vmId", "cpu", "memory", "disks", "networkDevices", "initialization", "onBoot", "protection"),
    "proxmoxve:firewall/optionsLegacy:OptionsLegacy": ("enabled", "inputPolicy", "outputPolicy"),
    "proxmoxve:firewall/rulesLegacy:RulesLegacy": ("rules",),
    "cloudflare:index/dnsRecord:DnsRecord": ("type", "name", "content", "priority", "data", "ttl", "proxied"),
    "command:remote:Command": ("create", "connection", "stdin"),
    "kubernetes:core/v1:Secret": ("metadata", "stringData"),
    "kubernetes:apps/v1:DeploymentPatch": ("metadata", "spec"),
    "keycloak:index/realm:Realm": ("realm", "smtpServer"),
    "keycloak:ldap/userFederation:UserFederation": ("connectionUrl", "startTls", "usersDn", "bindDn", "bindCredential",
                                                    "editMode", "usePasswordModifyExtendedOp"),
    "tls:index/privateKey:PrivateKey": ("algorithm", "rsaBits"),
    "random:index/randomPassword:RandomPassword": ("length",),
    "pulumi:providers:proxmoxve": ("endpoint", "apiToken", "insecure"),
    "pulumi:providers:cloudflare": ("apiToken",),
    "pulumi:providers:kubernetes": ("context", "namespace", "kubeconfig"),
    "pulumi:providers:keycloak": ("url", "realm", "clientId", "clientSecret"),
}


def _short(value: Any, limit: int = 110) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _item(value: Any) -> str:
    """A list item on one line: `key=value …` with a comment last, so the facts come first."""
    if not isinstance(value, dict):
        return _short(value)
    facts = " ".join(f"{k}={_short(v, 60)}" for k, v in sorted(value.items()) if k != "comment")
    return _short(facts + (f"  # {value['comment']}" if "comment" in value else ""), 160)


def _leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    """(path, value) of every scalar in a nested value, in key order: `ipConfigs[0].ipv6.gateway`."""
    if isinstance(value, dict) and value:
        return [leaf for key in sorted(value) for leaf in _leaves(value[key], f"{path}.{key}" if path else key)]
    if isinstance(value, list) and value:
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, f"{path}[{index}]")]
    return [(path, value)]


def _flags(resource: PlannedResource) -> str:
    options = resource.options
    flags = [name for name in ("protect", "retainOnDelete") if options.get(name)]
    if options.get("importId"):
        flags.append(f"import={options['importId']}")
    if options.get("ignoreChanges"):
        flags.append(f"ignoreChanges={len(options['ignoreChanges'])} fields")
    if options.get("deleteBeforeReplace"):
        flags.append("deleteBeforeReplace")
    if options.get("replaceWith"):
        flags.append("replaced with " + ", ".join(urn.rsplit("::", 1)[-1] for urn in options["replaceWith"]))
    return f"  [{', '.join(flags)}]" if flags else ""


def render_text(plan: Plan) -> str:
    """The resource tree by component, key inputs under each resource, then edges, outputs, policy."""
    by_urn = plan.by_urn()
    lines = [f"ceres-mail plan: project {plan.project}, stack {plan.stack}", ""]

    def walk(resource: PlannedResource, depth: int) -> None:
        pad = "  " * depth
        kind = "" if resource.custom else " (component)"
        lines.append(f"{pad}+ {resource.name}  {resource.type}{kind}{_flags(resource)}")
        for key in KEY_INPUTS.get(resource.type, ()):
            if key not in resource.inputs:
                continue
            value = resource.inputs[key]
            if isinstance(value, list) and len(value) > 1:
                # one line per item (disks, firewall rules): a reviewer reads them one by one
                lines.append(f"{pad}    {key}:")
                lines.extend(f"{pad}      - {_item(item)}" for item in value)
            elif isinstance(value, dict) and len(_short(value, 10_000)) > 110:
                # a long block (initialization, smtpServer, a patch's spec): one line per value, by its path,
                # so nothing an operator checks (an IPv6 gateway deep in ipConfigs) is cut off
                lines.append(f"{pad}    {key}:")
                lines.extend(f"{pad}      {path}: {_short(leaf)}" for path, leaf in _leaves(value, ""))
            else:
                lines.append(f"{pad}    {key}: {_short(value)}")
        for child in plan.children(resource.urn):
            walk(child, depth + 1)

    for root in plan.children(None):
        walk(root, 0)

    lines += ["", "dependencies (waits for):"]
    for resource in sorted(plan.resources, key=lambda r: r.name):
        names = sorted(by_urn[d].name for d in resource.dependencies if d in by_urn)
        if names:
            lines.append(f"  {resource.name} <- {', '.join(names)}")
    lines += ["", "outputs:"]
    for key, value in sorted(plan.outputs.items()):
        if isinstance(value, dict):
            lines.append(f"  {key}:")
            lines += [f"    {inner}: {_short(item)}" for inner, item in sorted(value.items())]
        else:
            lines.append(f"  {key}: {_short(value)}")
    lines += ["", f"resources: {sum(r.custom for r in plan.resources)} custom, "
              f"{sum(not r.custom for r in plan.resources)} components"]
    mandatory = sum(v["level"] == "mandatory" for v in plan.policy)
    lines += ["", f"policy: {len(plan.policy)} violation(s), {mandatory} mandatory"]
    lines += [f"  [{v['level']}] {v['policy']}: {v['message']} ({v['urn']})" for v in plan.policy]
    return "\n".join(lines) + "\n"


def _node_id(index: int) -> str:
    return f"r{index}"


def render_mermaid(plan: Plan) -> str:
    """A Mermaid flowchart: components as subgraphs, resources as nodes, dependencies as arrows."""
    ordered = sorted(plan.resources, key=lambda r: r.urn)
    by_urn = plan.by_urn()
    ids = {resource.urn: _node_id(i) for i, resource in enumerate(ordered)}
    lines = ["flowchart LR"]

    def emit(resource: PlannedResource, depth: int) -> None:
        pad = "  " * depth
        label = f"{resource.name}<br/>{resource.type}"
        children = plan.children(resource.urn)
        if resource.custom or not children:
            lines.append(f'{pad}{ids[resource.urn]}["{label}"]')
            return
        lines.append(f'{pad}subgraph {ids[resource.urn]}["{resource.name}"]')
        for child in children:
            emit(child, depth + 1)
        lines.append(f"{pad}end")

    for root in plan.children(None):
        emit(root, 1)
    for resource in ordered:
        for dependency in resource.dependencies:
            if dependency in ids and by_urn[dependency].custom:
                lines.append(f"  {ids[dependency]} --> {ids[resource.urn]}")
    return "\n".join(lines) + "\n"
