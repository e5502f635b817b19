"""The test internet of `gatewayMode: wireguard` (docs/gateway.md): the mail VM at home
behind a NAT, its public address on a VPS.

    internet (203.0.113.0/24)   dns, acme, remote, client as in tests/mailnet/fixtures.py, and
                                vps       203.0.113.25: the stack's gatewayHost and gatewayPublicIpv4 (the
                                          address the plan's A record and PTR name), a booted Debian with
                                          /dev/net/tun, root's SSH key the stack's gatewaySshPrivateKey, its
                                          host key the stack's gatewayHostKey
    home (192.168.77.0/24)      router    192.168.77.1 inside, 203.0.113.77 outside (masquerade)
                                mail      192.168.77.25: the VM, first-booted by cloud-init as ever, /dev/net/tun
                                operator  192.168.77.200: where every install command runs (`pulumi up` at
                                          home): SSH to the VM directly, to the VPS through the NAT, so from
                                          203.0.113.77, which adminCidrs lets in

One `open_mailnet` builds it (its `place_mail` hook adds the home network and the VPS); the stack's
recording carries the VPS's command and its connection (scenario.GatewayDeployment).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.mailnet.fixtures import COMMAND_TIMEOUT, MailNet, Placement, open_mailnet
from tests.mailnet.scenario import ADDRESSES, PREFIX, Deployment
from tests.testnet import AptProxy, NetnsHost, SystemHost, TestNet

log = logging.getLogger(__name__)

HOME = "home"
HOME_ROUTER_INSIDE = "192.168.77.1"
HOME_ROUTER_OUTSIDE = "203.0.113.77"  #: the home line's public address: SSH to the VPS comes from it
VM_HOME = "192.168.77.25"
OPERATOR = "192.168.77.200"
VPS = ADDRESSES["mail"]  #: the VPS holds the address the stack's mail host is published at
TUNNEL = "10.254.25.0/30"  #: the stack's default gatewayTunnelCidr
SPARE_TUNNEL = "172.31.254.0/30"  #: when the apt proxy's /24 (also of 10.254.0.0/16) happens to hold TUNNEL
TUN = ("net/tun",)  #: userspace WireGuard (wireguard-go): this kernel has no wireguard module


def ed25519_pair() -> tuple[str, str]:
    """(OpenSSH private key, its public line) of a new ed25519 key."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


def gateway_config(gateway_key: str, vps_host_key: str, tunnel: str) -> dict:
    """The stack's keys for the VM at home and the VPS (on top of scenario.stack_file's). The VPS's login key
    goes to the recorder as a decrypted secret, as scenario.deploy does for every secret key."""
    return {
        "ceres-mail:gatewayMode": "wireguard",
        "ceres-mail:ipv4Address": f"{VM_HOME}/24",
        "ceres-mail:ipv4Gateway": HOME_ROUTER_INSIDE,
        "ceres-mail:adminCidrs": ["192.168.77.0/24", f"{HOME_ROUTER_OUTSIDE}/32"],
        "ceres-mail:gatewayHost": VPS,
        "ceres-mail:gatewayHostKey": vps_host_key,
        "ceres-mail:gatewaySshPrivateKey": gateway_key,
        "ceres-mail:gatewayPublicIpv4": VPS,
        "ceres-mail:gatewayTunnelCidr": tunnel,
    }


@dataclass
class GatewayNet:
    """The mail net (its client, remote, DNS, ACME, VM and helpers) plus the home network and the VPS."""

    mailnet: MailNet
    vps: SystemHost
    router: NetnsHost
    operator: NetnsHost
    tunnel: str  #: the stack's gatewayTunnelCidr

    @property
    def deployment(self) -> Deployment:
        return self.mailnet.deployment

    def vps_ssh(self, remote_command: str, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT,
                extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """A command on the VPS over the connection the graph declares for it: its user, the gateway key,
        only the VPS's host key trusted; from the operator (so through the home NAT)."""
        gateway = self.deployment.gateway
        return self.mailnet.ssh(remote_command, stdin, timeout, extra, key="gateway_key",
                                known_hosts="gateway_known_hosts", login=f"{gateway.user}@{gateway.host}")

    def install_vps(self) -> subprocess.CompletedProcess:
        command = self.deployment.gateway.command
        started = time.monotonic()
        result = self.vps_ssh(command.create, command.stdin)
        log.info("%s: exit %d in %.0f s", command.name, result.returncode, time.monotonic() - started)
        return result

    def install(self) -> list[subprocess.CompletedProcess]:
        """The VPS's command, then the VM's chain, as the graph orders them; stops at the first failure."""
        vps = self.install_vps()
        return [vps] if vps.returncode != 0 else [vps, *self.mailnet.install()]


@contextlib.contextmanager
def open_gateway_net(workdir: Path, apt_proxy: AptProxy) -> Iterator[GatewayNet]:
    """The world above, everything booted, nothing installed yet."""
    gateway_key, gateway_public = ed25519_pair()
    host_key, host_public = ed25519_pair()
    tunnel = TUNNEL
    if apt_proxy.network is not None and apt_proxy.network.overlaps(ipaddress.ip_network(TUNNEL)):
        tunnel = SPARE_TUNNEL
    made: dict[str, object] = {}

    def home_and_vps(net: TestNet, deployment: Deployment) -> Placement:
        net.add_segment(HOME)
        made["router"] = net.add_router("router", (HOME, f"{HOME_ROUTER_INSIDE}/24"),
                                        (None, f"{HOME_ROUTER_OUTSIDE}/{PREFIX}"))
        made["operator"] = net.add_netns_host("operator", f"{OPERATOR}/24", segment=HOME,
                                              gateway=HOME_ROUTER_INSIDE)
        made["vps"] = net.add_system_host("vps", f"{VPS}/{PREFIX}", nameserver=ADDRESSES["dns"], devices=TUN, files={
            "/root/.ssh/authorized_keys": (gateway_public + "\n", 0o600, 0, 0),
            "/etc/ssh/ssh_host_ed25519_key": (host_key, 0o600, 0, 0),
            "/etc/ssh/ssh_host_ed25519_key.pub": host_public + "\n",
        })
        return Placement(f"{VM_HOME}/24", {"segment": HOME, "gateway": HOME_ROUTER_INSIDE, "devices": TUN},
                         made["operator"])

    config = gateway_config(gateway_key, host_public, tunnel)
    with open_mailnet(workdir, apt_proxy, config, place_mail=home_and_vps, installed_base=True) as mailnet:
        gateway = mailnet.deployment.gateway
        assert gateway is not None and gateway.host == VPS and gateway.host_key == host_public
        (workdir / "gateway_key").write_text(gateway.private_key)
        (workdir / "gateway_key").chmod(0o600)
        (workdir / "gateway_known_hosts").write_text(f"{gateway.host} {gateway.host_key}\n")
        made["vps"].wait_running(timeout=300)
        yield GatewayNet(mailnet, made["vps"], made["router"], made["operator"], tunnel)
