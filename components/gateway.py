"""MailGateway: the VPS end of the WireGuard gateway (gatewayMode wireguard), and both ends' keys.

Each end's private key is 32 random bytes made by the stack (`random.RandomBytes`, a secret in its state,
protected where the stack is); the public keys are derived here (components/builders/gateway.py), so neither
end ever sends its key anywhere. The VPS's stage runs over a connection of its own: the operator's key for
the VPS (gatewaySshPrivateKey, a secret) and the VPS's host key pinned. Its keys travel on the stage's stdin.
The VM's end is a stage of MailServer, which waits for `installed`: the VM dials a VPS that listens.
The component itself is registered with one plain input, `sshFrom`: the networks the VPS's SSH answers,
which the policy pack judges (CrossGuard sees a component's inputs before any of its children exist).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_random as random

from components.builders.gateway import (
    COMPONENT_TYPE,
    KEY_BYTES,
    GatewayInputs,
    component_props,
    vps_stage,
    wireguard_public_key,
)
from components.builders.shell_script import render_install_command, render_secrets_stdin


@dataclass(frozen=True)
class MailGatewayArgs:
    """What the gateway is built from."""

    gateway: GatewayInputs  #: the VPS, its public addresses and the tunnel (settings)
    ssh_private_key: pulumi.Input[str]  #: secret: the key that logs in to the VPS as gateway.user
    protect: bool  #: protect the keys (a replaced key is a tunnel down until both ends ran again)


class MailGateway(pulumi.ComponentResource):
    """The VPS holding the mail host's public address, forwarding the mail ports to the VM at home."""

    vm_private_key: pulumi.Output[str]  #: secret: the VM's WireGuard key, for its own stage
    vps_public_key: pulumi.Output[str]  #: the VPS's public key, which the VM's end trusts
    installed: command.remote.Command  #: the VPS's stage: the VM's end waits for it

    def __init__(self, name: str, args: MailGatewayArgs, opts: pulumi.ResourceOptions | None = None):
        # Registered with the networks SSH on the VPS answers, a plain value the policy pack reads
        # (ssh-not-open-to-the-world): the VPS stage below is rendered from the same adminCidrs
        super().__init__(COMPONENT_TYPE, name, component_props(args.gateway), opts)
        keep = pulumi.ResourceOptions(parent=self, protect=args.protect)

        # One key per end, 32 random bytes each, kept encrypted in the state
        vm_key, vps_key = (random.RandomBytes(f"{name}-{end}-key", length=KEY_BYTES, opts=keep) for end in ("vm", "vps"))
        self.vm_private_key = pulumi.Output.secret(vm_key.base64)
        vm_public_key = vm_key.base64.apply(wireguard_public_key)
        self.vps_public_key = vps_key.base64.apply(wireguard_public_key)

        # The VPS's stage: WireGuard and its nftables table, over the VPS's own pinned connection
        stage = vps_stage(args.gateway)
        self.installed = command.remote.Command(
            f"{name}-install-vps",
            connection=command.remote.ConnectionArgs(
                host=args.gateway.host,
                user=args.gateway.user,
                private_key=args.ssh_private_key,
                host_key=args.gateway.host_key,
                dial_error_limit=10,
                per_dial_timeout=15,
            ),
            create=render_install_command(stage.script, stage.name, args.gateway.user),
            stdin=pulumi.Output.secret(pulumi.Output.all(vps_key.base64, vm_public_key).apply(
                lambda keys: render_secrets_stdin(dict(zip(stage.secrets, keys))))),
            logging=command.remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"vps_public_key": self.vps_public_key, "installed": self.installed.stdout})
