"""Stands in for pulumi-proxmoxve: the cloud image download, the cloud-init snippets, the VM, its firewall.

The world is one Proxmox cluster: files by node and volume id (each node has its own `local` storage),
VMs by VM id. Creating a VM refuses an id that is taken and disks or snippets that do not exist on its
node, as Proxmox does; the firewall belongs to a VM that
exists. What replaces a VM is what the real provider forces a new VM for (node, id, the imported disk,
the cloud-init snippets), so the program's ignore_changes on first-boot inputs are tested against it.

With a test internet behind it (cloud.py), the VM is real: creating it boots a fresh Debian host at the
VM's static address, first-booted by cloud-init from the two snippets the graph uploaded; deleting it
removes that host; the firewall's options and rules are enforced in front of it.
"""

from __future__ import annotations

from tests.engine.standins import cloud
from tests.engine.standins.model import Context, Kind, StandIn, StandInError

FILE = "proxmoxve:download/file:File"
SNIPPET = "proxmoxve:index/fileLegacy:FileLegacy"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
FIREWALL_OPTIONS = "proxmoxve:firewall/optionsLegacy:OptionsLegacy"
FIREWALL_RULES = "proxmoxve:firewall/rulesLegacy:RulesLegacy"
FIRST_VM_ID = 100


def _image_id(outputs: dict, context: Context) -> str:
    return f"{outputs['datastoreId']}:{outputs['contentType']}/{outputs['fileName']}"


def _snippet_id(outputs: dict, context: Context) -> str:
    return f"{outputs['datastoreId']}:{outputs['contentType']}/{outputs['sourceRaw']['fileName']}"


def _on_node(resource_id: str, outputs: dict) -> str:
    return f"{outputs['nodeName']}/{resource_id}"


def _snippet(inputs: dict, context: Context) -> dict:
    return {"fileName": inputs["sourceRaw"]["fileName"], "fileSize": len(inputs["sourceRaw"]["data"].encode())}


def _vm_id(inputs: dict, context: Context) -> int:
    taken = {int(key) for key in context.world.all(VM)}
    return inputs.get("vmId") or next(i for i in range(FIRST_VM_ID, FIRST_VM_ID + 10_000) if i not in taken)


def _check_vm(inputs: dict, context: Context) -> None:
    vm_id = inputs.get("vmId")
    if vm_id and context.world.get(VM, str(vm_id)) is not None:
        raise StandInError(f"unable to create VM {vm_id}: config file already exists")
    for disk in inputs.get("disks", []):
        source = disk.get("importFrom")
        if source and context.world.get(FILE, _on_node(source, inputs)) is None:
            raise StandInError(f"disk {disk['interface']}: volume {source} does not exist")
    init = inputs.get("initialization") or {}
    for key in ("userDataFileId", "vendorDataFileId"):
        if init.get(key) and context.world.get(SNIPPET, _on_node(init[key], inputs)) is None:
            raise StandInError(f"initialization.{key}: snippet {init[key]} does not exist")


def _vm(inputs: dict, context: Context) -> dict:
    vm_id = _vm_id(inputs, context)
    init = inputs.get("initialization") or {}
    cidrs = [c["ipv4"]["address"] for c in init.get("ipConfigs", []) if c.get("ipv4")]
    addresses = [cidr.split("/")[0] for cidr in cidrs]
    if cloud.backed() and inputs.get("started", True):
        snippet = lambda key: context.world.get(SNIPPET, _on_node(init[key], inputs))["sourceRaw"]["data"]  # noqa: E731
        cloud.call("vm.create", vm_id=vm_id, ipv4_cidr=cidrs[0],
                   user_data=snippet("userDataFileId"), vendor_data=snippet("vendorDataFileId"))
    return {
        "vmId": vm_id,
        "ipv4Addresses": [["127.0.0.1"], addresses],
        "ipv6Addresses": [["::1"], []],
        "macAddresses": ["00:00:00:00:00:00", f"BC:24:11:{vm_id // 65536 % 256:02X}:{vm_id // 256 % 256:02X}:{vm_id % 256:02X}"],
        "networkInterfaceNames": ["lo", "eth0"],
    }


def _check_firewall(inputs: dict, context: Context) -> None:
    if context.world.get(VM, str(inputs["vmId"])) is None:
        raise StandInError(f"VM {inputs['vmId']} does not exist on node {inputs['nodeName']}")


def _firewall_id(part: str):
    return lambda outputs, context: f"{outputs['nodeName']}/{outputs['vmId']}/{part}"


def _vm_changed(operation: str, outputs: dict, context: Context) -> None:
    if operation == "delete" and cloud.backed():
        cloud.call("vm.delete", vm_id=outputs["vmId"])


def _firewall_changed(part: str):
    """The VM's firewall as Proxmox enforces it: its options and its rules, each a resource of its own."""
    def changed(operation: str, outputs: dict, context: Context) -> None:
        if cloud.backed():
            cloud.call("firewall.set", vm_id=outputs["vmId"], part=part,
                       settings=None if operation == "delete" else outputs)
    return changed


STANDIN = StandIn(
    name="proxmoxve",
    kinds={
        FILE: Kind(
            token=FILE,
            defaults={"overwrite": True, "overwriteUnmanaged": False, "uploadTimeout": 600, "verify": True},
            replace_on=("nodeName", "datastoreId", "contentType", "url", "fileName", "checksum",
                        "checksumAlgorithm", "decompressionAlgorithm"),
            compute=lambda inputs, context: {"size": 350_000_000},
            computed=("size",),
            make_id=_image_id,
            stored_as=_on_node,
        ),
        SNIPPET: Kind(
            token=SNIPPET,
            defaults={"overwrite": True, "timeoutUpload": 1800},
            replace_on=("nodeName", "datastoreId", "contentType", "sourceRaw", "sourceFile", "fileMode"),
            compute=_snippet,
            computed=("fileName", "fileSize"),
            make_id=_snippet_id,
            stored_as=_on_node,
        ),
        VM: Kind(
            token=VM,
            replace_on=("nodeName", "vmId", "disks[*].importFrom", "disks[*].interface", "disks[*].datastoreId",
                        "initialization.datastoreId", "initialization.userDataFileId",
                        "initialization.vendorDataFileId"),
            create_hook=_check_vm,
            compute=_vm,
            computed=("vmId", "ipv4Addresses", "ipv6Addresses", "macAddresses", "networkInterfaceNames"),
            make_id=lambda outputs, context: str(outputs["vmId"]),
            after=_vm_changed,
        ),
        FIREWALL_OPTIONS: Kind(
            token=FIREWALL_OPTIONS,
            replace_on=("nodeName", "vmId", "containerId"),
            create_hook=_check_firewall,
            make_id=_firewall_id("options"),
            after=_firewall_changed("options"),
        ),
        FIREWALL_RULES: Kind(
            token=FIREWALL_RULES,
            replace_on=("nodeName", "vmId", "containerId"),
            create_hook=_check_firewall,
            make_id=_firewall_id("rules"),
            after=_firewall_changed("rules"),
        ),
    },
)
