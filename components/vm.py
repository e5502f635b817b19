"""MailVm: the mail server's virtual machine on Proxmox VE.

Deploys the Debian 12 cloud image into the node's storage, two cloud-init snippets (user-data: admin
user, deploy key, sshd hardening, unattended upgrades, time sync, swap, mail data disk; vendor-data:
the pinned SSH host key, a secret),
the VM itself (static public address, sized for the mail stack, qemu guest agent on, started on boot,
protected from deletion where asked) and its firewall: inbound DROP but the mail ports, SSH only from
the admin networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmoxve

from components.builders.cloud_init import CloudInitInputs, build_user_data, build_vendor_data
from components.builders.firewall import firewall_rules
from components.builders.inputs import VmInputs


@dataclass(frozen=True)
class MailVmArgs:
    """What the VM is built from."""

    vm: VmInputs  #: plain values from the settings
    deploy_public_key: pulumi.Input[str]  #: the stack's own key the install commands log in with
    host_key_private: pulumi.Input[str]  #: secret: the pinned ed25519 host key (vendor-data only)
    host_key_public: pulumi.Input[str]


class MailVm(pulumi.ComponentResource):
    """The Proxmox VE VM of the mail server."""

    vm_id: pulumi.Output[int]
    ssh_host: pulumi.Output[str]

    def __init__(self, name: str, args: MailVmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:mail:Vm", name, None, opts)
        image = self._image(name, args)
        user_data_file, vendor_data_file = self._snippets(name, args)
        self.vm = self._machine(name, args, image, user_data_file, vendor_data_file)
        self._firewall(name, args)

        self.vm_id = self.vm.vm_id
        # The address the install step dials. It is the static address from config, passed through the
        # VM's id so that the SSH commands carry a data edge to the VM (they wait for it to exist).
        self.ssh_host = self.vm.id.apply(lambda _: args.vm.ipv4_address.split("/", 1)[0])
        self.register_outputs({"vm_id": self.vm_id, "ssh_host": self.ssh_host})

    def _image(self, name: str, args: MailVmArgs) -> proxmoxve.download.File:
        """Debian 12's generic cloud image, downloaded by the node itself."""
        return proxmoxve.download.File(
            f"{name}-image",
            node_name=args.vm.node,
            datastore_id=args.vm.file_datastore,
            content_type="import",
            url=args.vm.image_url,
            file_name=args.vm.image_url.rsplit("/", 1)[1],
            checksum=args.vm.image_checksum or None,
            checksum_algorithm="sha512" if args.vm.image_checksum else None,
            overwrite=False,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _snippets(self, name: str, args: MailVmArgs) -> tuple[proxmoxve.FileLegacy, proxmoxve.FileLegacy]:
        """cloud-init's user-data (everything reviewable, no secret, so a preview shows it) and vendor-data
        (only the SSH host key pair, a secret), as snippets on the node."""
        hostname = _hostname(args)
        user_data = pulumi.Output.from_input(args.deploy_public_key).apply(
            lambda deploy_key: build_user_data(
                CloudInitInputs(
                    hostname=hostname,
                    fqdn=args.vm.fqdn,
                    admin_user=args.vm.admin_user,
                    admin_ssh_keys=args.vm.admin_ssh_keys,
                    deploy_public_key=deploy_key,
                    memory_mib=args.vm.size.memory_mib,
                )
            )
        )
        vendor_data = pulumi.Output.all(args.host_key_private, args.host_key_public).apply(
            lambda keys: build_vendor_data(*keys)
        )
        return tuple(
            proxmoxve.FileLegacy(
                f"{name}-{kind}",
                node_name=args.vm.node,
                datastore_id=args.vm.file_datastore,
                content_type="snippets",
                source_raw=proxmoxve.FileLegacySourceRawArgs(data=data, file_name=f"{hostname}-{kind}.yaml"),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for kind, data in (("user-data", user_data), ("vendor-data", pulumi.Output.secret(vendor_data)))
        )

    def _machine(self, name: str, args: MailVmArgs, image: proxmoxve.download.File,
                 user_data_file: proxmoxve.FileLegacy, vendor_data_file: proxmoxve.FileLegacy) -> proxmoxve.VmLegacy:
        """The VM: the system disk imported from the image, mail data on a disk of its own."""
        return proxmoxve.VmLegacy(
            f"{name}-vm",
            name=_hostname(args),
            node_name=args.vm.node,
            vm_id=args.vm.vm_id or None,
            description=f"ceres-mail: mail server {args.vm.fqdn}",
            tags=["ceres-mail", "mail"],
            on_boot=True,
            started=True,
            protection=args.vm.protect,
            agent=proxmoxve.VmLegacyAgentArgs(enabled=True),
            operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
            cpu=proxmoxve.VmLegacyCpuArgs(cores=args.vm.size.cores, type="x86-64-v2-AES"),
            memory=proxmoxve.VmLegacyMemoryArgs(dedicated=args.vm.size.memory_mib),
            scsi_hardware="virtio-scsi-single",
            disks=_disks(args, image),
            network_devices=[proxmoxve.VmLegacyNetworkDeviceArgs(bridge=args.vm.bridge, model="virtio", firewall=True)],
            initialization=proxmoxve.VmLegacyInitializationArgs(
                datastore_id=args.vm.datastore,
                ip_configs=[_ip_config(args)],
                dns=proxmoxve.VmLegacyInitializationDnsArgs(
                    domain=args.vm.fqdn.split(".", 1)[1], servers=list(args.vm.dns_resolvers)
                ),
                user_data_file_id=user_data_file.id,
                vendor_data_file_id=vendor_data_file.id,
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=args.vm.protect,
                # a protected VM is also left in place if it ever leaves the program
                retain_on_delete=args.vm.protect,
                # a new VM takes the same static address: the old one must be gone first, or the install
                # would reach the old host at that address (whose host key is the same, the stack's)
                delete_before_replace=True,
                ignore_changes=[
                    # The image and the cloud-init snippets matter at first boot only. A newer image or
                    # an edited snippet would otherwise replace the VM (the provider forces replacement
                    # on these), and with it the running mail server.
                    "disks[0].importFrom",
                    "initialization.userDataFileId",
                    "initialization.vendorDataFileId",
                ],
            ),
        )

    def _firewall(self, name: str, args: MailVmArgs) -> None:
        """On, inbound DROP, then the mail ports and SSH from the admin networks. A VM's firewall goes with
        the VM on Proxmox: a new VM gets its own, even at the same VM id."""
        firewall_opts = pulumi.ResourceOptions(parent=self, replace_with=[self.vm])
        proxmoxve.firewall.OptionsLegacy(
            f"{name}-firewall-options",
            node_name=args.vm.node,
            vm_id=self.vm.vm_id,
            enabled=True,
            input_policy="DROP",
            output_policy="ACCEPT",
            ndp=True,
            dhcp=False,
            macfilter=True,
            opts=firewall_opts,
        )
        proxmoxve.firewall.RulesLegacy(
            f"{name}-firewall-rules",
            node_name=args.vm.node,
            vm_id=self.vm.vm_id,
            rules=[
                proxmoxve.firewall.RulesLegacyRuleArgs(
                    type="in",
                    action="ACCEPT",
                    proto=rule.proto,
                    dport=rule.dport or None,
                    source=rule.source or None,
                    comment=rule.comment,
                )
                for rule in firewall_rules(args.vm.admin_cidrs, args.vm.directory_cidrs)
            ],
            opts=firewall_opts,
        )


def _hostname(args: MailVmArgs) -> str:
    return args.vm.fqdn.split(".", 1)[0]


def _disks(args: MailVmArgs, image: proxmoxve.download.File) -> list[proxmoxve.VmLegacyDiskArgs]:
    """The system disk, imported from the image, and the mail data's own disk."""
    return [
        proxmoxve.VmLegacyDiskArgs(
            interface="scsi0",
            datastore_id=args.vm.datastore,
            import_from=image.id,
            size=args.vm.size.disk_gib,
            discard="on",
            iothread=True,
        ),
        proxmoxve.VmLegacyDiskArgs(
            interface="scsi1",
            datastore_id=args.vm.datastore,
            size=args.vm.data_disk_gib,
            discard="on",
            iothread=True,
        ),
    ]


def _ip_config(args: MailVmArgs) -> proxmoxve.VmLegacyInitializationIpConfigArgs:
    """The static addresses cloud-init sets: IPv4, and IPv6 when the stack has one."""
    return proxmoxve.VmLegacyInitializationIpConfigArgs(
        ipv4=proxmoxve.VmLegacyInitializationIpConfigIpv4Args(address=args.vm.ipv4_address, gateway=args.vm.ipv4_gateway),
        ipv6=proxmoxve.VmLegacyInitializationIpConfigIpv6Args(address=args.vm.ipv6_address, gateway=args.vm.ipv6_gateway)
        if args.vm.ipv6_address
        else None,
    )
