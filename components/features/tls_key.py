"""The host's TLS key, owned by the stack (`dane` with `tlsMode: acme`), as the DKIM keys are.

A TLSA record pins the key the host serves, so the key must exist before the certificate that uses it is
served: the stack makes it (ECDSA P-256, kept encrypted in its state, protected with the stack), MailDns
publishes its TLSA from the public half, and the tls stage, which waits for those records, gets the
private half on its standard input and asks the ACME server to certify it. A renewal certifies the same
key, so the TLSA stays right; a new `tlsKeySelector` is a new key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi_tls as tls

from components.builders.dns_records import TLS_KEYS_OUTPUT
from components.builders.native import TLS_SECRETS
from components.features.base import Contribution, Feature, Site

if TYPE_CHECKING:
    from components.settings import Settings

@dataclass(frozen=True)
class StackTlsKey(Feature):
    """The key named `selector`."""

    selector: str

    @classmethod
    def chosen(cls, settings: Settings) -> StackTlsKey | None:
        return cls(settings.tls_key_selector) if settings.owns_tls_key else None

    def contribute(self, site: Site) -> Contribution:
        """The key; its private half for the tls stage, its public half for the TLSA records and the outputs."""
        key = tls.PrivateKey(f"{site.name}-tls-key-{self.selector}", algorithm="ECDSA", ecdsa_curve="P256",
                             opts=site.keep)
        (secret,) = TLS_SECRETS
        return Contribution(secrets={secret: key.private_key_pem},
                            tls_public_keys={self.selector: key.public_key_pem},
                            outputs={TLS_KEYS_OUTPUT: {self.selector: key.public_key_pem}})
