"""What the checks share: the target under test, its DNS as the operator's resolver gives it, and the
result of one check."""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.rdata
import dns.resolver

from components.builders.dns_records import Record

OK, WARN, FAIL = "ok", "warn", "fail"

#: what a lookup may end in that means "nothing published (that we can see)"
LOOKUP_ERRORS = (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout)


@dataclass(frozen=True)
class Result:
    check: str  #: e.g. "dns MX example.com", "smtp 25 relay"
    status: str  #: ok | warn | fail
    detail: str  #: what was seen
    fix: str = ""  #: the next step when not ok

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass
class Target:
    """The mail server to check, and what it should look like."""

    domain: str  #: the primary mail domain
    host: str
    resolver: dns.resolver.Resolver
    timeout: float = 10.0
    expected: list[Record] = field(default_factory=list)  #: records the stack declares ([] without --stack)
    extra_domains: tuple[str, ...] = ()  #: the stack's other mail domains (the same DKIM key, each its MTA-STS host)
    dkim_selector: str = "ceres"  #: the selector that signs
    dkim_txt: str = ""  #: the stack's DKIM value (v=DKIM1; k=rsa; p=...), "" when not known
    #: selectors published without signing (a rotation's next or previous key) -> the stack's value, "" when not known
    dkim_published: dict[str, str] = field(default_factory=dict)
    mta_sts_policy: str = ""  #: the MTA-STS policy text the stack serves, "" without a stack
    mailbox: str = ""  #: the no-reply user
    password: str = ""  #: its password ("" skips the logins)
    cafile: str | None = None  #: CA to trust for TLS (the system store when None)
    ldap_url: str = ""  #: the directory (ldapMode local or external), "" for none
    ldap_base_dn: str = ""  #: where an anonymous search must find nothing
    webmail: bool = False  #: the stack serves Roundcube on https://<host>/
    dnssec: bool = False  #: the stack signs its zones (`dnssec`): the dnssec and ds rows are due
    #: SSH to the mail host (mailctl.backup.HostAccess), given with --ssh-key/--ssh-user: the backup is checked
    backup_access: object | None = None

    @property
    def mail_domains(self) -> tuple[str, ...]:
        """The primary domain first, then the extra ones (what the stack publishes records for)."""
        return (self.domain, *(d for d in self.extra_domains if d != self.domain))

    def lookup(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """`name`'s records of `rdtype` from the operator's resolver; [] when there are none to see."""
        return self.lookup_validated(name, rdtype)[0]

    def lookup_validated(self, name: str, rdtype: str) -> tuple[list[dns.rdata.Rdata], bool]:
        """`name`'s records of `rdtype`, and whether the resolver validated them with DNSSEC (the AD bit of its
        answer: trust it only from a resolver you trust, such as your own validating one)."""
        try:
            answer = self.resolver.resolve(name, rdtype, lifetime=self.timeout)
        except LOOKUP_ERRORS:
            return [], False
        response = getattr(answer, "response", None)
        return list(answer), bool(response is not None and response.flags & dns.flags.AD)

    def addresses(self, name: str | None = None) -> list[str]:
        """The A, then AAAA, addresses of `name` (the mail host by default) as the operator's resolver gives
        them: the checks connect where the operator's DNS points, never where this machine's resolver does."""
        return [r.to_text() for rdtype in ("A", "AAAA") for r in self.lookup(name or self.host, rdtype)]
