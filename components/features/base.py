"""What every feature of the platform is: a typed choice of the settings that brings its own part of the graph.

A feature is made in two steps, around the mail server:
- `contribute`, before it: the resources the feature owns (generated passwords and keys, the gateway's VPS),
  the secrets its stages read (name -> value), the resources outside the server a stage of it waits for
  (`Stage.after` names), the public keys its DNS records pin, and its stack outputs;
- `follow`, after it: what needs the server installed or the Keycloak realm (the directory's federation).
Its stages themselves come with its plain inputs (`StageSource.placed_stages`) through the settings'
`server_inputs`, so the plan of the mail server needs no Pulumi at all. MailPlatform and MailServer loop
over the features and name none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pulumi

if TYPE_CHECKING:
    from components.keycloak import KeycloakSmtp
    from components.providers import Providers
    from components.server import MailServer
    from components.settings import Settings


@dataclass(frozen=True)
class Site:
    """Where a feature's resources go: the platform's name prefix, parent and protection."""

    name: str  #: the platform's name, the prefix of every resource name
    parent: pulumi.Resource  #: the platform
    protect: bool  #: the stack's `protect`

    @property
    def keep(self) -> pulumi.ResourceOptions:
        """Options of a resource whose loss would lose data: a child of the platform, protected with the stack."""
        return pulumi.ResourceOptions(parent=self.parent, protect=self.protect)

    @property
    def child(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self.parent)


@dataclass(frozen=True)
class Contribution:
    """What one feature brings to the mail server and to the stack's outputs."""

    #: the secrets its stages read from standard input, by the name they read them under
    secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    #: the resources outside the server its stages wait for, by the name a stage's `after` gives
    waits_on: Mapping[str, pulumi.Resource] = field(default_factory=dict)
    #: the keys the host serves that its TLSA records pin (MailDns), by name (`tlsKeySelector`): public PEM
    tls_public_keys: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    #: the stack outputs it adds, by output name
    outputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Installed:
    """What exists once the mail server is declared, for what a feature adds after it."""

    server: MailServer
    realm: KeycloakSmtp  #: the CERES realm's SMTP settings; its id is the realm's
    providers: Providers


class Feature:
    """One optional part of the platform, made from its typed choice in the settings."""

    @classmethod
    def chosen(cls, settings: Settings) -> Feature | None:
        """The feature as the stack's settings choose it, or None when the stack leaves it off."""
        raise NotImplementedError

    def contribute(self, site: Site) -> Contribution:
        """Its resources made before the mail server, and what the server and the outputs get of them."""
        return Contribution()

    def follow(self, site: Site, installed: Installed, own: Contribution) -> None:
        """What it adds once the server is declared (`own` is what `contribute` returned); most add nothing."""
