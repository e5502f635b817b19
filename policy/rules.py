"""The policy rules: plain functions over a stack's resources (type, properties, options, URN).

Plain functions so that one definition runs in three places: the CrossGuard pack (`pack.py`, for
`pulumi preview --policy-pack policy`), `mailctl plan` / `mailctl policy` (over the offline plan) and the
tests. Each rule returns its violations as messages that say how to fix them. A value a rule cannot see
("[secret]" offline, "(known after apply)") is never a violation: the engine judges it when it is known.
Offline, a secret input is the marker "[secret]"; under CrossGuard it arrives wrapped (pulumi_policy.Secret)
for the rules that ask for secret marks (`needs_secret_marks`), and is unwrapped here.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from components.builders.ceres_env import STACK_OUTPUT as CERES_OUTPUT
from components.builders.dns_records import (
    DKIM_PUBLISHED_WHY,
    DKIM_SIGNING_OUTPUT,
    SPF_MAX_LOOKUPS,
    TLSA_PUBLISHED_WHY,
    dkim_selector_of,
    spf_term_looks_up,
    txt_value,
)
from components.builders.gateway import COMPONENT_TYPE as GATEWAY, SSH_FROM
from components.builders.ports import LDAP_PLAIN_PORT, LDAPS, submission_problem
from policy.markers import SECRET, UNKNOWN_TEXT as UNKNOWN

DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
ZONE_DNSSEC = "cloudflare:index/zoneDnssec:ZoneDnssec"
REALM = "keycloak:index/realm:Realm"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
FIREWALL_RULES = "proxmoxve:firewall/rulesLegacy:RulesLegacy"
COMMAND = "command:remote:Command"
USER_FEDERATION = "keycloak:ldap/userFederation:UserFederation"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
K8S_SECRET = "kubernetes:core/v1:Secret"
STACK = "pulumi:pulumi:Stack"  #: its props are the stack's outputs
OPAQUE = (SECRET, UNKNOWN)  # values a rule cannot see: the offline plan's markers
SECRET_INPUT_NAMES = ("password", "token", "apitoken", "privatekey", "clientsecret", "kubeconfig", "secret")


@dataclass(frozen=True)
class Resource:
    type: str
    props: Mapping[str, Any]
    options: Mapping[str, Any]
    urn: str
    #: days since the engine created it, from the state's `created` time (`mailctl policy --state`); None
    #: where no state is at hand: offline plans, and CrossGuard, which shows no resource its creation time
    age_days: float | None = None

    @property
    def stack(self) -> str:
        return self.urn.split("::", 1)[0].removeprefix("urn:pulumi:")


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds, also in the pack's PolicyConfigSchema (`pulumi preview --policy-pack-config`)."""

    min_dkim_bits: int = 2048
    protected_stacks: tuple[str, ...] = ("prod",)


@dataclass(frozen=True)
class Rule:
    name: str  #: kebab-case policy name
    description: str
    level: str  #: "mandatory" fails a plan/preview, "advisory" only reports
    check: Callable[[Resource, PolicyConfig], Iterable[str]] | None = None  #: one resource at a time
    check_stack: Callable[[list[Resource], PolicyConfig], Iterable[tuple[str, str]]] | None = field(default=None)
    #: judges whether values are secrets, so it needs inputs with their secret marks (see policy/pack.py)
    needs_secret_marks: bool = False
    #: judges what only the state knows (resource ages): it runs in `mailctl policy --state`, not CrossGuard
    needs_state: bool = False


def unwrap(value: Any) -> Any:
    """A CrossGuard secret's value (offline plans hold "[secret]" instead, which stays opaque)."""
    return getattr(value, "value", value) if type(value).__name__ == "Secret" else value


def _text(value: Any) -> str | None:
    value = unwrap(value)
    return value if isinstance(value, str) and value not in OPAQUE else None


def _txt(r: Resource) -> str | None:
    content = _text(r.props.get("content")) if r.type == DNS_RECORD and r.props.get("type") == "TXT" else None
    if content is None:
        return None
    return txt_value(content) if content.startswith('"') else content


# --- resource rules ---------------------------------------------------------------------------------


def dns_record_not_proxied(r: Resource, config: PolicyConfig) -> Iterable[str]:
    if r.type == DNS_RECORD and r.props.get("proxied") is True:
        yield (f"{r.props.get('type')} {r.props.get('name')} is proxied: Cloudflare's proxy carries HTTP only and "
               "hides the mail host's address; set proxied to false")


def spf_is_strict_and_resolvable(r: Resource, config: PolicyConfig) -> Iterable[str]:
    value = _txt(r)
    if not value or not value.startswith("v=spf1"):
        return
    terms = value.split()[1:]
    if terms[-1] not in ("-all", "~all"):
        yield f"SPF of {r.props.get('name')} ends with {terms[-1]!r}: anyone could send as the domain; end it with -all (RFC 7208 5.1)"
    lookups = sum(spf_term_looks_up(t) for t in terms)
    if lookups > SPF_MAX_LOOKUPS:
        yield f"SPF of {r.props.get('name')} needs {lookups} DNS lookups; receivers permerror past {SPF_MAX_LOOKUPS} (RFC 7208 4.6.4)"


def dkim_key_is_strong(r: Resource, config: PolicyConfig) -> Iterable[str]:
    if r.type != PRIVATE_KEY or "dkim" not in r.urn.rsplit("::", 1)[-1]:
        return
    algorithm = r.props.get("algorithm")
    bits = r.props.get("rsaBits", 2048)
    if algorithm == "RSA" and isinstance(bits, int) and bits < config.min_dkim_bits:
        yield f"the DKIM key has {bits} bits; use at least {config.min_dkim_bits} (RFC 8301; dkimKeyBits)"
    elif algorithm not in ("RSA", None):
        yield f"the DKIM key is {algorithm}; receivers need an RSA key (Ed25519 only as a second, RSA-companioned key)"


def _is_dkim_record(r: Resource) -> bool:
    return r.type == DNS_RECORD and r.props.get("type") == "TXT" and "._domainkey." in str(r.props.get("name", ""))


def dkim_published_says_why(r: Resource, config: PolicyConfig) -> Iterable[str]:
    """A key that is published but signs nothing is either half of a rotation or forgotten; the reason
    (dkimPublishedSelectors' {selector, reason}) tells which, and until when."""
    if _is_dkim_record(r) and r.props.get("comment") == DKIM_PUBLISHED_WHY:
        selector = dkim_selector_of(str(r.props["name"]))
        yield (f"{r.props['name']} is published but does not sign, and no reason is given: write it as "
               f"{{selector: {selector}, reason: ...}} in dkimPublishedSelectors (the next key, or the previous one "
               "and when it goes), or retire it once mail signed with it can no longer arrive (mailctl dkim rotate)")


def tls_published_says_why(r: Resource, config: PolicyConfig) -> Iterable[str]:
    """A TLS key published (TLSA) but not served is half of a rollover or forgotten: its reason says which. Judged
    on its SMTP record alone, so a key is named once, not once per port."""
    unexplained = TLSA_PUBLISHED_WHY.format(service="smtp (25)")
    if r.type == DNS_RECORD and r.props.get("type") == "TLSA" and r.props.get("comment") == unexplained:
        key = r.urn.rsplit("-", 1)[-1]
        yield (f"the TLS key {key} is published (TLSA at {r.props.get('name')}) but not served, and no reason is "
               f"given: write it as {{selector: {key}, reason: ...}} in tlsPublishedKeys (the next key, or the "
               "previous one and when it goes), or retire it (mailctl tls rotate)")


def dkim_key_not_too_old(resources: list[Resource], config: PolicyConfig) -> Iterable[tuple[str, str]]:
    """The signing key's age against the stack's dkimMaxAgeDays, both from the stack output dkimSigning; the
    age is known where the state says when the engine made the key (`<name>-dkim-key-<selector>`)."""
    signing = next((r.props.get(DKIM_SIGNING_OUTPUT) for r in resources if r.type == STACK), None)
    if not isinstance(signing, Mapping) or not isinstance(signing.get("maxAgeDays"), int):
        return
    selector, limit = signing.get("selector"), signing["maxAgeDays"]
    for r in resources:
        if r.type == PRIVATE_KEY and r.urn.endswith(f"-dkim-key-{selector}") and r.age_days is not None and r.age_days > limit:
            yield (r.urn, f"the DKIM key of selector {selector} has signed for {int(r.age_days)} days, more than "
                          f"dkimMaxAgeDays ({limit}): rotate it (mailctl dkim rotate --stack {r.stack} --to <new selector>)")


def protected_where_it_matters(r: Resource, config: PolicyConfig) -> Iterable[str]:
    """CERES's realm is never deleted by this stack (retainOnDelete; CrossGuard does not show that option,
    the offline plan does) and cannot be destroyed at all in protected stacks; nor can their VM, nor a
    zone's DNSSEC (deleted while the registrar holds its DS, the domain fails validation everywhere)."""
    if r.type == REALM and r.options.get("retainOnDelete") is False:
        yield (f"realm {r.props.get('realm')} belongs to CERES: a destroy would delete it; declare it with "
               "retain_on_delete=True")
    if r.type == REALM and r.stack in config.protected_stacks and not r.options.get("protect"):
        yield f"realm {r.props.get('realm')} of protected stack {r.stack} is not protected: declare it with protect=True"
    if r.type == VM and r.stack in config.protected_stacks and not r.options.get("protect"):
        yield f"the mail VM of stack {r.stack} is not protected: set protect: true (its mailboxes live on it)"
    if r.type == ZONE_DNSSEC and r.stack in config.protected_stacks and not r.options.get("protect"):
        yield (f"the DNSSEC of zone {r.props.get('zoneId')} in protected stack {r.stack} is not protected: set "
               "protect: true (deleted while the registrar still holds its DS, the domain stops resolving for "
               "every validating resolver; docs/dns.md says the safe order to turn it off)")


def secret_inputs_are_secret(r: Resource, config: PolicyConfig) -> Iterable[str]:
    """Passwords, tokens, private keys and kubeconfigs must reach the engine as secrets."""

    def walk(value: Any, path: str) -> Iterable[str]:
        if type(value).__name__ == "Secret" or value in OPAQUE:
            return
        if isinstance(value, Mapping):
            for key, item in value.items():
                yield from walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, f"{path}[{index}]")
        elif isinstance(value, str) and value and path.rsplit(".", 1)[-1].replace("_", "").lower() in SECRET_INPUT_NAMES:
            yield f"{path} is plain text: pass it as a Pulumi secret (config get_secret, Output.secret)"

    # a Kubernetes Secret is secret as a whole (its keys are CERES_* names, not "password")
    if r.type != K8S_SECRET:
        yield from walk(dict(r.props), "")


def ssh_connection_pins_host_key(r: Resource, config: PolicyConfig) -> Iterable[str]:
    connection = unwrap(r.props.get("connection")) if r.type == COMMAND else None
    # a host key not known yet (generated in the same preview) is there; only a missing one is not
    if isinstance(connection, Mapping) and not unwrap(connection.get("hostKey")):
        yield "the SSH connection has no hostKey: pin the host key the stack planted (trust on first use is not)"


def _everyone(cidr: str) -> bool:
    """Whether a source network is the whole internet (0.0.0.0/0, ::/0)."""
    return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0


def _opened_to_everyone(r: Resource, port: int) -> bool:
    """Whether a firewall resource accepts inbound `port` from any address (no source, or a /0 one)."""
    if r.type != FIREWALL_RULES:
        return False
    for rule in r.props.get("rules") or []:
        ports = str(rule.get("dport", ""))
        opens = rule.get("action") == "ACCEPT" and rule.get("type", "in") == "in" and str(port) in ports.split(",")
        source = rule.get("source") or ""
        everyone = not source or any(_everyone(s) for s in source.split(","))
        if opens and everyone:
            return True
    return False


def _gateway_ssh_problems(sources: Any) -> Iterable[str]:
    """What is wrong with the networks the gateway's component says its VPS lets reach SSH (`sshFrom`)."""
    if sources in OPAQUE:
        return
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        # a component without the value would leave the VPS unjudged: say so rather than pass it
        yield (f"the gateway component registers no {SSH_FROM} list, so the networks that reach the VPS's SSH "
               "cannot be judged: register it (components/gateway.py, component_props)")
    elif any(_everyone(source) for source in sources if source not in OPAQUE):
        yield "the gateway VPS opens SSH (22) to the whole internet: restrict it to adminCidrs"


def ssh_not_open_to_the_world(r: Resource, config: PolicyConfig) -> Iterable[str]:
    """The VM's Proxmox firewall, and the gateway VPS: its component's plain `sshFrom` input, the adminCidrs
    its stage writes into the VPS's nftables table."""
    if _opened_to_everyone(r, 22):
        yield "the firewall opens SSH (22) to the whole internet: restrict it to adminCidrs"
    if r.type == GATEWAY:
        yield from _gateway_ssh_problems(unwrap(r.props.get(SSH_FROM)))


def directory_not_open_to_the_world(r: Resource, config: PolicyConfig) -> Iterable[str]:
    """The directory holds every user's password hash: only Keycloak's networks may reach it."""
    for port, name in ((LDAP_PLAIN_PORT, "LDAP"), (LDAPS.port, "LDAPS")):
        if _opened_to_everyone(r, port):
            yield f"the firewall opens {name} ({port}) to the whole internet: restrict it to ldapClientCidrs"


def directory_over_tls(r: Resource, config: PolicyConfig) -> Iterable[str]:
    """Keycloak binds with the service account's password and sends users' passwords: never in clear."""
    if r.type != USER_FEDERATION:
        return
    url = _text(r.props.get("connectionUrl"))
    if url and url.lower().startswith("ldap://") and r.props.get("startTls") is not True:
        yield (f"the LDAP federation connects to {url} without StartTLS: passwords would cross the network in "
               "clear; use ldaps:// or set start_tls")


def _submission_clients(resources: list[Resource]) -> Iterable[tuple[str, str, Mapping[str, str]]]:
    """(urn, who, {host, port, starttls, tls}) of each SMTP client the stack configures, where visible.

    CERES's Secret is secret as a whole offline (the kubernetes SDK wraps stringData), so CERES is read
    from the stack's `ceresSmtp` output too (the same values, minus the password); Keycloak's realm
    keeps everything but the password in clear."""
    for r in resources:
        if r.type == K8S_SECRET:
            data = unwrap(r.props.get("stringData"))
            env = {k: unwrap(v) for k, v in data.items()} if isinstance(data, Mapping) else {}
            who = "CERES's Secret"
        elif r.type == STACK:
            env = r.props.get(CERES_OUTPUT) if isinstance(r.props.get(CERES_OUTPUT), Mapping) else {}
            who = f"CERES (stack output {CERES_OUTPUT})"
        elif r.type == REALM and isinstance(unwrap(r.props.get("smtpServer")), Mapping):
            smtp = unwrap(r.props["smtpServer"])
            env = {"CERES_SMTP_HOST": smtp.get("host"), "CERES_SMTP_PORT": smtp.get("port"),
                   "CERES_SMTP_STARTTLS": smtp.get("starttls"), "CERES_SMTP_TLS": smtp.get("ssl")}
            who = f"Keycloak realm {r.props.get('realm')}"
        else:
            continue
        client = {key: unwrap(env.get(f"CERES_SMTP_{key.upper()}")) for key in ("host", "port", "starttls", "tls")}
        if all(isinstance(value, (str, int, bool)) and value not in OPAQUE for value in client.values()):
            yield r.urn, who, {key: str(value).lower() for key, value in client.items()}


def ceres_secret_is_consistent(resources: list[Resource], config: PolicyConfig) -> Iterable[tuple[str, str]]:
    """CERES and Keycloak submit to the mail host's address record, on a port the host serves with the TLS
    that port speaks (`components.builders.ports`), and both the same way."""
    hosts = {r.props.get("name") for r in resources if r.type == DNS_RECORD and r.props.get("type") in ("A", "AAAA")}
    seen: dict[tuple[str, ...], tuple[str, str]] = {}
    for urn, who, client in _submission_clients(resources):
        if hosts and client["host"] not in hosts:
            yield urn, f"{who} submits to {client['host']}, which is not the mail host's address record ({', '.join(sorted(hosts))})"
        port = int(client["port"]) if client["port"].isdigit() else 0
        if problem := submission_problem(port, client["starttls"] == "true", client["tls"] == "true"):
            yield urn, f"{who}: {problem}"
        seen.setdefault(tuple(client.values()), (urn, who))
    if len(seen) > 1:
        described = "; ".join(f"{who}: {host}:{port} starttls={starttls} tls={tls}"
                              for (host, port, starttls, tls), (_, who) in sorted(seen.items()))
        yield max(urn for urn, _ in seen.values()), f"CERES and Keycloak submit differently ({described}): both read smtpPort/smtpStarttls/smtpTls"


def dmarc_for_every_mail_domain(resources: list[Resource], config: PolicyConfig) -> Iterable[tuple[str, str]]:
    dmarc = {r.props.get("name") for r in resources if (_txt(r) or "").startswith("v=DMARC1")}
    for r in resources:
        if r.type == DNS_RECORD and r.props.get("type") == "MX" and f"_dmarc.{r.props.get('name')}" not in dmarc:
            yield r.urn, f"{r.props.get('name')} receives mail but publishes no DMARC record (_dmarc.{r.props.get('name')})"


# --- advisory ---------------------------------------------------------------------------------------


def dmarc_moves_past_none(r: Resource, config: PolicyConfig) -> Iterable[str]:
    value = _txt(r) or ""
    if value.startswith("v=DMARC1") and "p=none" in value.replace(" ", "") and r.stack in config.protected_stacks:
        yield (f"DMARC of {r.props.get('name')} only observes (p=none, the observation start): once the aggregate reports "
               "show all your mail passing for 2-4 weeks, set dmarcPolicy to quarantine, later reject")


def dns_says_why(r: Resource, config: PolicyConfig) -> Iterable[str]:
    if r.type == DNS_RECORD and not r.props.get("comment"):
        yield f"{r.props.get('type')} {r.props.get('name')} has no comment; say why the record exists (the builder's reason)"


def mail_vm_starts_on_boot(r: Resource, config: PolicyConfig) -> Iterable[str]:
    if r.type == VM and r.props.get("onBoot") is not True:
        yield f"VM {r.props.get('name')} does not start on boot: mail stops after a node reboot; set on_boot"


def transport_security_published(resources: list[Resource], config: PolicyConfig) -> Iterable[tuple[str, str]]:
    names = {r.props.get("name") for r in resources if r.type == DNS_RECORD}
    for r in resources:
        if r.type == DNS_RECORD and r.props.get("type") == "MX":
            domain = r.props.get("name")
            missing = [n for n in (f"_mta-sts.{domain}", f"_smtp._tls.{domain}") if n not in names]
            if missing:
                yield r.urn, f"{domain} has no {' or '.join(missing)}: senders cannot require or report TLS (RFC 8461, RFC 8460)"


def ipv6_published(resources: list[Resource], config: PolicyConfig) -> Iterable[tuple[str, str]]:
    records = [r for r in resources if r.type == DNS_RECORD]
    hosts = [r for r in records if r.props.get("type") == "A"]
    if hosts and not any(r.props.get("type") == "AAAA" for r in records):
        yield hosts[0].urn, "the mail host has no AAAA record: IPv6-only senders cannot reach it (set ipv6Address)"


def mta_sts_enforced_with_dane(resources: list[Resource], config: PolicyConfig) -> Iterable[tuple[str, str]]:
    """Once DANE pins the key, MTA-STS still in testing only asks senders that do not validate DNSSEC to
    report a downgrade, not to refuse it: a protected stack enforces it."""
    if not any(r.type == DNS_RECORD and r.props.get("type") == "TLSA" for r in resources):
        return
    for r in resources:
        policy = r.props.get("mtaStsPolicy") if r.type == STACK else None
        if isinstance(policy, str) and "mode: testing" in policy and r.stack in config.protected_stacks:
            yield r.urn, ("DANE pins the mail host's key, but MTA-STS only tests (mode: testing): senders without "
                          "DNSSEC would still deliver over a stripped STARTTLS; set mtaStsMode to enforce")


def backups_configured(resources: list[Resource], config: PolicyConfig) -> Iterable[tuple[str, str]]:
    """A protected stack's mailboxes live on one VM: without backupTarget, losing it loses them."""
    vms = [r for r in resources if r.type == VM and r.stack in config.protected_stacks]
    backed_up = any(r.type == COMMAND and r.urn.endswith("-install-backup") for r in resources)
    if vms and not backed_up:
        yield vms[0].urn, (f"protected stack {vms[0].stack} has no backups: set backupTarget (docs/backups.md), "
                           "or its mailboxes and DKIM keys are lost with the VM")


RULES: tuple[Rule, ...] = (
    Rule("dns-record-not-proxied", "Mail DNS records are never proxied by Cloudflare.", "mandatory", dns_record_not_proxied),
    Rule("spf-strict-and-resolvable", "SPF ends with -all or ~all and needs at most 10 lookups.", "mandatory", spf_is_strict_and_resolvable),
    Rule("dkim-key-strong", "The DKIM key is RSA of at least minDkimBits.", "mandatory", dkim_key_is_strong),
    Rule("dkim-published-says-why", "A DKIM key that is published without signing says why.", "advisory", dkim_published_says_why),
    Rule("tls-published-says-why", "A TLS key that is published (TLSA) without being served says why.", "advisory",
         tls_published_says_why),
    Rule("dkim-key-not-too-old", "The signing DKIM key is younger than dkimMaxAgeDays (age from the state).", "advisory",
         check_stack=dkim_key_not_too_old, needs_state=True),
    Rule("protected-where-it-matters", "The CERES realm is never deleted; it, the VM and zone DNSSEC are protected in protected stacks.", "mandatory", protected_where_it_matters),
    Rule("secret-inputs-are-secret", "Passwords, tokens, keys and kubeconfigs are Pulumi secrets.", "mandatory", secret_inputs_are_secret,
         needs_secret_marks=True),
    Rule("ssh-pins-host-key", "Every SSH connection (the VM's, the gateway VPS's) pins the host key.", "mandatory",
         ssh_connection_pins_host_key),
    Rule("ssh-not-open-to-the-world", "The VM firewall and the gateway VPS open SSH to admin networks only.", "mandatory",
         ssh_not_open_to_the_world),
    Rule("directory-not-open-to-the-world", "The VM firewall opens LDAP/LDAPS to ldapClientCidrs only.", "mandatory",
         directory_not_open_to_the_world),
    Rule("directory-over-tls", "Keycloak's LDAP federation uses ldaps:// or StartTLS.", "mandatory", directory_over_tls),
    Rule("ceres-secret-consistent", "CERES and Keycloak submit to the mail host on a port it serves, with its TLS.", "mandatory", check_stack=ceres_secret_is_consistent),
    Rule("dmarc-for-every-mail-domain", "Every domain with an MX publishes DMARC.", "mandatory", check_stack=dmarc_for_every_mail_domain),
    Rule("dmarc-moves-past-none", "Protected stacks do not stay at p=none for ever.", "advisory", dmarc_moves_past_none),
    Rule("dns-record-says-why", "Every DNS record carries its reason as a comment.", "advisory", dns_says_why),
    Rule("mail-vm-starts-on-boot", "The mail VM starts with its node.", "advisory", mail_vm_starts_on_boot),
    Rule("transport-security-published", "MTA-STS and TLS-RPT for every mail domain.", "advisory", check_stack=transport_security_published),
    Rule("ipv6-published", "The mail host has an AAAA record.", "advisory", check_stack=ipv6_published),
    Rule("mta-sts-enforced-with-dane", "A protected stack with DANE enforces MTA-STS too.", "advisory",
         check_stack=mta_sts_enforced_with_dane),
    Rule("backups-configured", "A protected stack backs its mail host up (backupTarget).", "advisory",
         check_stack=backups_configured),
)


def evaluate(resources: Iterable[Any], config: PolicyConfig = PolicyConfig(),
             outputs: tuple[str, Mapping[str, Any]] | None = None,
             created: Mapping[str, datetime.datetime] | None = None, now: datetime.datetime | None = None,
             ) -> list[dict[str, str]]:
    """Every rule over a Plan's resources (`.type`, `.inputs`, `.options`, `.urn`), and the stack's
    outputs as `(stack urn, outputs)` when known: CrossGuard shows the rules the root Stack resource too.
    `created` maps a URN to when the engine created it (from `pulumi stack export`), for the age rules."""
    created = created or {}
    now = now or datetime.datetime.now(datetime.timezone.utc)
    subjects = [Resource(r.type, r.inputs, r.options, r.urn,
                         (now - created[r.urn]).total_seconds() / 86400 if r.urn in created else None)
                for r in resources]
    if outputs is not None:
        subjects.append(Resource(STACK, outputs[1], {}, outputs[0]))
    violations = []
    for rule in RULES:
        found: list[tuple[str, str]] = []
        if rule.check:
            found += [(r.urn, message) for r in subjects for message in rule.check(r, config)]
        if rule.check_stack:
            found += list(rule.check_stack(subjects, config))
        violations += [{"policy": rule.name, "level": rule.level, "urn": urn, "message": message} for urn, message in found]
    return violations
