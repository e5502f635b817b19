"""What the checks share: the target under test and the result of one check."""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.resolver

from components.builders.dns_records import Record

OK, WARN, FAIL = "ok", "warn", "fail"


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

    domain: str
    host: str
    resolver: dns.resolver.Resolver
    timeout: float = 10.0
    expected: list[Record] = field(default_factory=list)  #: records the stack declares ([] without --stack)
    dkim_selector: str = "ceres"
    dkim_txt: str = ""  #: the stack's DKIM value (v=DKIM1; k=rsa; p=...), "" when not known
    mailbox: str = ""  #: the no-reply user
    password: str = ""  #: its password ("" skips the logins)
    cafile: str | None = None  #: CA to trust for TLS (the system store when None)

    def connect_address(self, fallback: str | None = None) -> str:
        """Where to connect: the host's first address as the resolver gives it, else a name to resolve."""
        addresses = self.addresses()
        return addresses[0] if addresses else (fallback or self.host)

    def addresses(self) -> list[str]:
        found = []
        for rdtype in ("A", "AAAA"):
            try:
                found += [r.to_text() for r in self.resolver.resolve(self.host, rdtype, lifetime=self.timeout)]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
                pass
        return found
