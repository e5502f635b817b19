"""MailVm: the mail server's virtual machine on Proxmox VE.

Deploys the Debian 12 cloud image into the node's storage, the cloud-init user-data snippet (admin
user, deploy key, pinned SSH host key, mail data disk) and the VM itself: static public address, sized
for the mail stack, qemu guest agent on, started on boot, protected from deletion where asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmoxve

from components.builders.cloud_init import CloudInitInputs, build_user_data
from components.settings import VmSize


@dataclass(frozen=True)
class MailVmArgs:
    """What the VM is built from."""

    fqdn: str  #: mail host name; its first label is the VM name and hostname
    node: str  #: Proxmox node that runs the VM
    datastore: str  #: datastore for the system and data disks
    file_datastore: str  #: datastore for the cloud image and the user-data snippet
    bridge: str  #: bridge of the virtio NIC
    vm_id: int  #: fixed VM id, 0 for the next free one
    size: VmSize  #: cores, memory, system disk (mail stack defaults applied)
    data_disk_gib: int  #: separate mail data disk
    image_url: str  #: Debian cloud image, a dated build
    image_checksum: str  #: SHA-512 of the image, "" to skip
    ipv4_address: str  #: static IPv4 with prefix
    ipv4_gateway: str
    ipv6_address: str  #: "" for none
    ipv6_gateway: str
    dns_resolvers: tuple[str, ...]
    admin_user: str
    admin_ssh_keys: tuple[str, ...]
    deploy_public_key: pulumi.Input[str]  #: the stack's own key the install commands log in with
    host_key_private: pulumi.Input[str]  #: secret: the pinned ed25519 host key
    host_key_public: pulumi.Input[str]
    protect: bool  #: Pulumi protect + Proxmox protection flag


class MailVm(pulumi.ComponentResource):
    """The Proxmox VE VM of the mail server."""

    vm_id: pulumi.Output[int]
    ssh_host: pulumi.Output[str]

    def __init__(self, name: str, args: MailVmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:mail:Vm", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        hostname = args.fqdn.split(".", 1)[0]

        # Debian 12 generic cloud image, downloaded by the node itself
        image = proxmoxve.download.File(
            f"{name}-image",
            node_name=args.node,
            datastore_id=args.file_datastore,
            content_type="import",
            url=args.image_url,
            file_name=args.image_url.rsplit("/", 1)[1],
            checksum=args.image_checksum or None,
            checksum_algorithm="sha512" if args.image_checksum else None,
            overwrite=False,
            opts=child,
        )

        # cloud-init user-data: holds the private host key, so the whole text stays a secret
        user_data = pulumi.Output.all(args.deploy_public_key, args.host_key_private, args.host_key_public).apply(
            lambda keys: build_user_data(
                CloudInitInputs(
                    hostname=hostname,
                    fqdn=args.fqdn,
                    admin_user=args.admin_user,
                    admin_ssh_keys=args.admin_ssh_keys,
                    deploy_public_key=keys[0],
                    host_key_private=keys[1],
                    host_key_public=keys[2],
                )
            )
        )
        snippet = proxmoxve.FileLegacy(
            f"{name}-user-data",
            node_name=args.node,
            datastore_id=args.file_datastore,
            content_type="snippets",
            source_raw=proxmoxve.FileLegacySourceRawArgs(
                data=pulumi.Output.secret(user_data), file_name=f"{hostname}-user-data.yaml"
            ),
            opts=child,
        )

        ip_config = proxmoxve.VmLegacyInitializationIpConfigArgs(
            ipv4=proxmoxve.VmLegacyInitializationIpConfigIpv4Args(
                address=args.ipv4_address, gateway=args.ipv4_gateway
            ),
            ipv6=proxmoxve.VmLegacyInitializationIpConfigIpv6Args(
                address=args.ipv6_address, gateway=args.ipv6_gateway
            )
            if args.ipv6_address
            else None,
        )
        # The VM: system disk imported from the image, mail data on a disk of its own
        self.vm = proxmoxve.VmLegacy(
            f"{name}-vm",
            name=hostname,
            node_name=args.node,
            vm_id=args.vm_id or None,
            description=f"ceres-mail: mail server {args.fqdn}",
            tags=["ceres-mail", "mail"],
            on_boot=True,
            started=True,
            protection=args.protect,
            agent=proxmoxve.VmLegacyAgentArgs(enabled=True),
            operating_system=proxmoxve.VmLegacyOperatingSystemArgs(type="l26"),
            cpu=proxmoxve.VmLegacyCpuArgs(cores=args.size.cores, type="x86-64-v2-AES"),
            memory=proxmoxve.VmLegacyMemoryArgs(dedicated=args.size.memory_mib),
            scsi_hardware="virtio-scsi-single",
            disks=[
                proxmoxve.VmLegacyDiskArgs(
                    interface="scsi0",
                    datastore_id=args.datastore,
                    import_from=image.id,
                    size=args.size.disk_gib,
                    discard="on",
                    iothread=True,
                ),
                proxmoxve.VmLegacyDiskArgs(
                    interface="scsi1",
                    datastore_id=args.datastore,
                    size=args.data_disk_gib,
                    discard="on",
                    iothread=True,
                ),
            ],
            network_devices=[proxmoxve.VmLegacyNetworkDeviceArgs(bridge=args.bridge, model="virtio")],
            initialization=proxmoxve.VmLegacyInitializationArgs(
                datastore_id=args.datastore,
                ip_configs=[ip_config],
                dns=proxmoxve.VmLegacyInitializationDnsArgs(
                    domain=args.fqdn.split(".", 1)[1], servers=list(args.dns_resolvers)
                ),
                user_data_file_id=snippet.id,
            ),
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )

        self.vm_id = self.vm.vm_id
        # The address the install step dials. It is the static address from config, passed through the
        # VM's id so that the SSH commands carry a data edge to the VM (they wait for it to exist).
        self.ssh_host = self.vm.id.apply(lambda _: args.ipv4_address.split("/", 1)[0])
        self.register_outputs({"vm_id": self.vm_id, "ssh_host": self.ssh_host})
