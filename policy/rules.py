"""The policy rules: plain functions over (resource type, properties, options).

Plain functions so that one definition runs in three places: the CrossGuard pack (`__main__.py`, for
`pulumi preview --policy-pack policy`), `mailctl plan` (over the offline plan) and the tests. Each rule
returns the violations it finds as messages that say how to fix them. A value a rule cannot see yet
("[secret]", "(known after apply)") is never a violation: the engine judges it once it is known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
REALM = "keycloak:index/realm:Realm"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
OPAQUE = ("[secret]", "(known after apply)")


@dataclass(frozen=True)
class Rule:
    name: str  #: kebab-case policy name
    description: str
    level: str  #: "mandatory" fails a plan/preview, "advisory" only reports
    check: Callable[[str, Mapping[str, Any], Mapping[str, Any]], Iterable[str]]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value not in OPAQUE else None


def dns_record_not_proxied(type_: str, props: Mapping[str, Any], options: Mapping[str, Any]) -> Iterable[str]:
    if type_ == DNS_RECORD and props.get("proxied") is True:
        yield (f"{props.get('type')} {props.get('name')} is proxied: Cloudflare's proxy carries HTTP only and "
               "hides the mail host's address; set proxied to false")


def dns_record_says_why(type_: str, props: Mapping[str, Any], options: Mapping[str, Any]) -> Iterable[str]:
    if type_ == DNS_RECORD and not props.get("comment"):
        yield f"{props.get('type')} {props.get('name')} has no comment; say why the record exists (the builder's reason)"


def spf_refuses_other_senders(type_: str, props: Mapping[str, Any], options: Mapping[str, Any]) -> Iterable[str]:
    content = _text(props.get("content")) if type_ == DNS_RECORD and props.get("type") == "TXT" else None
    if content and content.startswith("v=spf1"):
        last = content.split()[-1]
        if last not in ("-all", "~all"):
            yield (f"SPF of {props.get('name')} ends with {last!r}: anyone could send as the domain; "
                   "end it with -all (RFC 7208 5.1)")


def dmarc_sends_reports(type_: str, props: Mapping[str, Any], options: Mapping[str, Any]) -> Iterable[str]:
    content = _text(props.get("content")) if type_ == DNS_RECORD and props.get("type") == "TXT" else None
    if content and content.startswith("v=DMARC1") and "rua=mailto:" not in content:
        yield f"DMARC of {props.get('name')} has no rua: without aggregate reports p=none observes nothing"


def keycloak_realm_is_protected(type_: str, props: Mapping[str, Any], options: Mapping[str, Any]) -> Iterable[str]:
    if type_ == REALM and not options.get("protect"):
        yield (f"realm {props.get('realm')} belongs to CERES and is not protected: a destroy would delete it; "
               "declare it with protect=True")


def mail_vm_starts_on_boot(type_: str, props: Mapping[str, Any], options: Mapping[str, Any]) -> Iterable[str]:
    if type_ == VM and props.get("onBoot") is not True:
        yield f"VM {props.get('name')} does not start on boot: mail stops after a node reboot; set on_boot"


RULES: tuple[Rule, ...] = (
    Rule("dns-record-not-proxied", "Mail DNS records are never proxied by Cloudflare.", "mandatory", dns_record_not_proxied),
    Rule("spf-refuses-other-senders", "SPF ends with -all or ~all.", "mandatory", spf_refuses_other_senders),
    Rule("keycloak-realm-protected", "The CERES realm cannot be deleted by this stack.", "mandatory", keycloak_realm_is_protected),
    Rule("dns-record-says-why", "Every DNS record carries its reason as a comment.", "advisory", dns_record_says_why),
    Rule("dmarc-sends-reports", "DMARC asks for aggregate reports.", "advisory", dmarc_sends_reports),
    Rule("mail-vm-starts-on-boot", "The mail VM starts with its node.", "advisory", mail_vm_starts_on_boot),
)


def evaluate(resources: Iterable[Any]) -> list[dict[str, str]]:
    """Every rule over resources with `.type`, `.inputs`, `.options`, `.urn` (a Plan's resources)."""
    violations = []
    for resource in resources:
        for rule in RULES:
            for message in rule.check(resource.type, resource.inputs, resource.options):
                violations.append({"policy": rule.name, "level": rule.level, "urn": resource.urn, "message": message})
    return violations
