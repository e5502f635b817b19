"""The platform's optional features, each plugged in the same way (components/features/base.py).

A new feature is a module here with one `Feature` subclass, its typed choice in the settings, its stages
(if any) in its builder, and its name in `FEATURES`: MailPlatform and MailServer do not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.features.backups import Backups
from components.features.base import Contribution, Feature, Installed, Site
from components.features.certificate import ProvidedCertificate
from components.features.directory import Directory
from components.features.gateway import Gateway
from components.features.tls_key import StackTlsKey

if TYPE_CHECKING:
    from components.settings import Settings

#: every feature the platform knows, in the order they are made
FEATURES: tuple[type[Feature], ...] = (ProvidedCertificate, StackTlsKey, Directory, Backups, Gateway)


def chosen_features(settings: Settings) -> tuple[Feature, ...]:
    """The features the stack's settings turn on, each built from its typed choice."""
    return tuple(feature for kind in FEATURES if (feature := kind.chosen(settings)) is not None)


__all__ = ["FEATURES", "Contribution", "Feature", "Installed", "Site", "chosen_features"]
