"""`mailctl zone`: the stack's DNS records as BIND zone files, offline.

The settings come from the stack file exactly as `mailctl plan` reads them; the DKIM key exists only in
the stack's state, so its records are included when the operator passes the public key: the PEM that
`pulumi stack output dkimPublicKeyPem` prints (a file, or - for stdin), or the whole
`pulumi stack output --json`, which also carries the TLS keys the stack owns with `dane` (their TLSA
records). With `dnssec`, the DS records for the registrars come from that JSON too
(`dsRecords`), known once a `pulumi up` has signed the zones.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from components.builders.dns_records import (
    DKIM_KEYS_OUTPUT,
    DKIM_OUTPUT,
    TLS_KEYS_OUTPUT,
    DnsInputs,
    Record,
    build_records,
    dkim_record_name,
    dkim_records,
    dkim_selector_of,
    external_authorizations,
    reverse_records,
    stack_key_tlsa_records,
)
from components.builders.dnssec import DS_OUTPUT, DsRecord, ds_record
from components.builders.zone_file import render_rrsets, render_zone
from components.settings import Settings, clear_secrets, validate
from mailctl.stackfile import StackFileError, load_stack


def stack_settings(project_dir: Path, stack: str, secrets: Mapping[str, str] | None = None) -> Settings:
    """Validated settings of a stack without running the program (secrets stay unread placeholders, or are
    `secrets` as decrypted values: see StackConfig.with_secrets). A secret the stack file holds in clear is
    refused as the program refuses it."""
    config = load_stack(project_dir, stack).with_secrets(secrets or {})
    prefix = f"{config.project}:"
    raw = {key[len(prefix):]: value for key, value in config.values.items() if key.startswith(prefix)}
    for key in config.stack_keys:
        raw.setdefault(key, None)
    in_clear = clear_secrets(raw.get, lambda key: f"{prefix}{key}" in config.secret_keys)
    return validate(raw, in_clear=in_clear, stack_file=f"Pulumi.{stack}.yaml")


def read_stack_keys(source: str, signing_selector: str) -> tuple[dict[str, str], dict[str, str]]:
    """(selector -> DKIM public key, TLS key name -> its public key), read once from a file or stdin ("-"):
    the JSON of `pulumi stack output --json` gives both (dkimPublicKeys, tlsPublicKeys); a PEM alone is the
    signing DKIM selector's key."""
    text = _read(source)
    tls_keys = {}
    if text.lstrip().startswith("{"):
        with contextlib.suppress(ValueError):
            outputs = json.loads(text)
            tls_keys = dict(outputs[TLS_KEYS_OUTPUT]) if isinstance(outputs.get(TLS_KEYS_OUTPUT), dict) else {}
    return read_dkim_public_keys(source, signing_selector, text), tls_keys


def read_dkim_public_keys(source: str, signing_selector: str, text: str | None = None) -> dict[str, str]:
    """Selector -> DKIM public key PEM from a file or stdin ("-"): the JSON of `pulumi stack output --json`
    gives every published selector's key (dkimPublicKeys); a PEM alone is the signing selector's."""
    text = _read(source) if text is None else text
    if text.lstrip().startswith("{"):
        try:
            outputs = json.loads(text)
        except ValueError:
            raise StackFileError(f"{source} is neither JSON of `pulumi stack output --json` nor a PEM") from None
        if isinstance(outputs.get(DKIM_KEYS_OUTPUT), dict):
            return dict(outputs[DKIM_KEYS_OUTPUT])
    return {signing_selector: read_dkim_public_key(source, text)}


def _read(source: str) -> str:
    try:
        return sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as error:
        raise StackFileError(f"cannot read {source}: {error.strerror}") from None


def read_dkim_public_key(source: str, text: str | None = None) -> str:
    """The DKIM public key PEM from a file or stdin ("-"), holding either the PEM itself or the JSON of
    `pulumi stack output --json` (the signing selector's key, dkimPublicKeyPem)."""
    text = _read(source) if text is None else text
    if text.lstrip().startswith("{"):
        try:
            text = json.loads(text)[DKIM_OUTPUT]
        except (ValueError, KeyError):
            raise StackFileError(f"{source} holds no {DKIM_OUTPUT}: give `pulumi stack output --json` of the "
                                 "stack, or the PEM itself") from None
    if "BEGIN PUBLIC KEY" not in text:
        raise StackFileError(f"{source} is not a PEM public key (`pulumi stack output {DKIM_OUTPUT}`)")
    return text


def zone_files(settings: Settings, stack: str, domain: str | None = None,
               dkim_public_keys: Mapping[str, str] | None = None,
               tls_public_keys: Mapping[str, str] | None = None) -> dict[str, str]:
    """Mail domain -> its zone file, each a single zone that named-checkzone accepts. `dkim_public_keys`
    (selector -> PEM) adds the DKIM record of every selector the stack publishes whose key is given: the
    signing one and, mid-rotation, those kept for mail in flight, as the stack itself publishes them;
    `tls_public_keys` (name -> PEM) the TLSA records of the TLS keys the stack owns (dane), served or published."""
    inputs = settings.dns_inputs
    keys = {selector: pem for selector, pem in (dkim_public_keys or {}).items() if pem}
    records = build_records(inputs) + [r for r in dkim_records(inputs, keys) if dkim_selector_of(r.name) in keys]
    records += owned_tlsa_records(inputs, tls_public_keys or {})
    missing = [selector for selector in inputs.dkim_selectors if selector not in keys]
    missing_tls = [name for name in inputs.tlsa_stack_keys if not (tls_public_keys or {}).get(name)]
    files = {}
    for origin in [domain] if domain else list(inputs.mail_domains):
        header = [f"zone {origin} of stack {stack}, rendered by ceres-mail (mailctl zone)"]
        if missing:
            names = ", ".join(f"{dkim_record_name(selector, origin)} TXT" for selector in missing)
            header.append(f"DKIM: {names} hold{'s' if len(missing) == 1 else ''} the stack's own keys; add them "
                          f"with `pulumi stack output --json | mailctl zone --dkim-public-key -`")
        if missing_tls and origin == inputs.domain:
            header.append("TLSA: the records pinning the TLS key the stack owns need its public key; add them with "
                          "`pulumi stack output --json | mailctl zone --dkim-public-key -`")
        files[origin] = render_zone(origin, records, tuple(settings.zone_nameservers), inputs.ttl, "\n".join(header))
    return files


def owned_tlsa_records(inputs: DnsInputs, tls_public_keys: Mapping[str, str]) -> list[Record]:
    """The TLSA records of the TLS keys the stack owns whose public key is given, as MailDns publishes them."""
    given = tuple(name for name in inputs.tlsa_stack_keys if tls_public_keys.get(name))
    return stack_key_tlsa_records(inputs, tls_public_keys, names=given)


def render_stack_zones(settings: Settings, stack: str, domain: str | None = None,
                       dkim_public_keys: Mapping[str, str] | None = None,
                       tls_public_keys: Mapping[str, str] | None = None) -> str:
    inputs = settings.dns_inputs
    out = list(zone_files(settings, stack, domain, dkim_public_keys, tls_public_keys).values())
    external = external_authorizations(inputs)
    if external and not domain:
        out.append("; Publish these in zones this stack does not manage (RFC 7489 7.1):\n"
                   + "".join(f"; {line}\n" for line in render_rrsets(external).splitlines()))
    return "\n".join(out)


def render_reverse(settings: Settings) -> str:
    """The PTR records to set at the IP provider, as zone-file lines."""
    return render_rrsets(reverse_records(settings.dns_inputs))


def read_ds_records(settings: Settings, stack: str, source: str, domain: str | None = None) -> list[DsRecord]:
    """The DS record of every mail domain (or of `domain`), in the stack's order, from the JSON of
    `pulumi stack output --json` in a file or stdin ("-")."""
    if not settings.dnssec:
        raise StackFileError(f"stack {stack} has dnssec off: its zones are unsigned, so there is no DS to give a "
                             f"registrar; turn it on with `pulumi config set dnssec true --stack {stack}`, then "
                             "`pulumi up`")
    text = _read(source)
    try:
        outputs = json.loads(text)
    except ValueError:
        outputs = None
    entries = outputs.get(DS_OUTPUT) if isinstance(outputs, dict) else None
    if not isinstance(entries, dict):
        raise StackFileError(f"{source} holds no {DS_OUTPUT}: give the JSON of `pulumi stack output --json --stack "
                             f"{stack}`, after a `pulumi up` with dnssec on")
    records = []
    for name in [domain] if domain else settings.mail_domains:
        if name not in entries:
            raise StackFileError(f"{DS_OUTPUT} in {source} has no DS for {name}: `pulumi up --stack {stack}` "
                                 "signs its zone and exports it")
        try:
            records.append(ds_record(name, entries[name]))
        except ValueError as error:
            raise StackFileError(f"{DS_OUTPUT} in {source}: {error}") from None
    return records


def render_ds_records(records: list[DsRecord], stack: str) -> str:
    """The DS records as a registrar's form asks for them, field by field, then as zone-file lines (the
    parent's own TTL applies, so none is given)."""
    width = len("Digest type") + 2
    out = [f"DS records of stack {stack}, one per mail domain: enter each at the domain's registrar, which puts it",
           "in the parent zone; the zone validates from then on. (Cloudflare Registrar publishes it by itself.)", ""]
    for record in records:
        out += [record.domain,
                f"  {'Key tag':<{width}}{record.key_tag}",
                f"  {'Algorithm':<{width}}{record.algorithm} ({record.algorithm_name})",
                f"  {'Digest type':<{width}}{record.digest_type} ({record.digest_name})",
                f"  {'Digest':<{width}}{record.digest}", ""]
    out += ["The same as zone-file lines:"]
    out += [f"{record.domain}. IN DS {record.rdata}" for record in records]
    return "\n".join(out) + "\n"
