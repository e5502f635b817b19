"""The host's TLS key, owned by the stack (`dane` with `tlsMode: acme`), as the DKIM keys are.

A TLSA record pins the key the host serves, so the key must exist before the certificate that uses it is
served: the stack makes it (ECDSA P-256, kept encrypted in its state, protected with the stack), MailDns
publishes its TLSA from the public half, and the tls stage, which waits for those records, gets the
private half on its standard input and asks the ACME server to certify it. A renewal certifies the same
key, so the TLSA stays right; a new `tlsKeySelector` is a new key.

A rollover (docs/dns.md, TLS key rollover) adds keys that are published but not served (`tlsPublishedKeys`):
each is a key of its own with its TLSA, made or removed without touching another key, and only the served
one reaches the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi_tls as tls

from components.builders.dns_records import STACK_KEY_INFIX, TLS_KEYS_OUTPUT
from components.builders.native import TLS_SECRETS
from components.features.base import Contribution, Feature, Site

if TYPE_CHECKING:
    from components.settings import Settings


@dataclass(frozen=True)
class StackTlsKey(Feature):
    """The keys named `selectors`: the first is served, the others are only published."""

    selectors: tuple[str, ...]

    @classmethod
    def chosen(cls, settings: Settings) -> StackTlsKey | None:
        return cls(settings.tls_keys) if settings.tls_keys else None

    def contribute(self, site: Site) -> Contribution:
        """One key per name: the served one's private half for the tls stage, every public half for the TLSA
        records and the outputs."""
        keys = {selector: tls.PrivateKey(f"{site.name}{STACK_KEY_INFIX}{selector}", algorithm="ECDSA",
                                         ecdsa_curve="P256", opts=site.keep)
                for selector in self.selectors}
        public = {selector: key.public_key_pem for selector, key in keys.items()}
        (secret,) = TLS_SECRETS
        return Contribution(secrets={secret: keys[self.selectors[0]].private_key_pem},
                            tls_public_keys=public, outputs={TLS_KEYS_OUTPUT: public})
