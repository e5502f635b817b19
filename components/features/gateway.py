"""The WireGuard gateway (`gatewayMode: wireguard`), as the platform makes it: the VPS's end (MailGateway,
components/gateway.py) before the server, whose own tunnel stage reads both keys and waits for the VPS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi

from components.builders.gateway import SECRETS, VPS_STAGE, GatewayInputs, summary
from components.features.base import Contribution, Feature, Site
from components.gateway import MailGateway, MailGatewayArgs

if TYPE_CHECKING:
    from components.settings import Settings


@dataclass(frozen=True)
class Gateway(Feature):
    """The VPS and the tunnel, the operator's key for the VPS, and the VM's home address (for the output)."""

    gateway: GatewayInputs
    ssh_private_key: pulumi.Input[str]  #: secret: gatewaySshPrivateKey
    vm_address: str  #: the VM's own IPv4 address at home

    @classmethod
    def chosen(cls, settings: Settings) -> Gateway | None:
        gateway = settings.gateway_inputs
        return cls(gateway, settings.gateway_ssh_private_key, settings.ipv4) if gateway else None

    def contribute(self, site: Site) -> Contribution:
        """The VPS's end first; the VM's stage reads its own key and the VPS's public one, and waits for it."""
        vps = MailGateway(
            f"{site.name}-gateway",
            MailGatewayArgs(gateway=self.gateway, ssh_private_key=self.ssh_private_key, protect=site.protect),
            opts=site.child,
        )
        return Contribution(
            secrets=dict(zip(SECRETS, (vps.vm_private_key, vps.vps_public_key), strict=True)),
            waits_on={VPS_STAGE: vps.installed},
            outputs={"gateway": summary(self.gateway, self.vm_address)},
        )
