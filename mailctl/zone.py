"""`mailctl zone`: the stack's DNS records as BIND zone files, offline.

The settings come from the stack file exactly as `mailctl plan` reads them; the DKIM key exists only in
the stack's state, so its record is included when the operator passes the public key
(`pulumi stack output dkimTxt` gives the value; `--dkim-public-key` takes the PEM).
"""

from __future__ import annotations

from pathlib import Path

from components.builders.dns_records import (
    build_records,
    dkim_record_name,
    dkim_records,
    external_authorizations,
    reverse_records,
)
from components.builders.zone_file import render_rrsets, render_zone
from components.settings import Settings, validate
from mailctl.stackfile import load_stack


def stack_settings(project_dir: Path, stack: str) -> Settings:
    """Validated settings of a stack without running the program (secrets stay unread placeholders)."""
    config = load_stack(project_dir, stack)
    prefix = f"{config.project}:"
    raw = {key[len(prefix):]: value for key, value in config.values.items() if key.startswith(prefix)}
    for key in config.stack_keys:
        raw.setdefault(key, None)
    return validate(raw)


def render_stack_zones(settings: Settings, stack: str, domain: str | None = None, dkim_public_key_pem: str = "") -> str:
    inputs = settings.dns_inputs
    records = build_records(inputs)
    if dkim_public_key_pem:
        records += dkim_records(inputs, dkim_public_key_pem)
    zones = [domain] if domain else list(inputs.mail_domains)
    out = []
    for origin in zones:
        header = [f"zone {origin} of stack {stack}, rendered by ceres-mail (mailctl zone)"]
        if not dkim_public_key_pem:
            header.append(
                f"DKIM: {dkim_record_name(inputs.dkim_selector, origin)} TXT is the stack's own key; "
                "add it with --dkim-public-key (see `pulumi stack output dkimTxt`)"
            )
        out.append(render_zone(origin, records, tuple(settings.zone_nameservers), inputs.ttl, "\n".join(header)))
    external = external_authorizations(inputs)
    if external and not domain:
        out.append("; Publish these in zones this stack does not manage (RFC 7489 7.1):\n"
                   + "".join(f"; {line}\n" for line in render_rrsets(external).splitlines()))
    return "\n".join(out)


def render_reverse(settings: Settings) -> str:
    """The PTR records to set at the IP provider, as zone-file lines."""
    return render_rrsets(reverse_records(settings.dns_inputs))
