"""A provided certificate (`tlsMode: provided`): the operator's key, read by the stage that installs it.

The smallest feature: it owns no resource and waits for nothing; it only hands its secret, `tlsPrivateKey`,
to the stages that read it (the native `tls` stage, mailcow's), under the name they read it by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi

from components.builders.native import TLS_SECRETS
from components.features.base import Contribution, Feature, Site

if TYPE_CHECKING:
    from components.settings import Settings


@dataclass(frozen=True)
class ProvidedCertificate(Feature):
    """The certificate's private key, a secret of the stack's config."""

    private_key: pulumi.Input[str]

    @classmethod
    def chosen(cls, settings: Settings) -> ProvidedCertificate | None:
        """Only a provided certificate has a key in the config (the settings refuse one with ACME)."""
        return cls(settings.tls_private_key) if settings.tls_private_key is not None else None

    def contribute(self, site: Site) -> Contribution:
        (name,) = TLS_SECRETS
        return Contribution(secrets={name: self.private_key})
