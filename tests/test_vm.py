"""MailVm: the VM, its firewall and its cloud-init, as declared and as judged by cloud-init itself."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from components.builders.cloud_init import CloudInitInputs, build_user_data
from components.builders.mail_stacks import MailcowStack, NativeStack
from mailctl.recorder import record
from tests.conftest import PROJECT_DIR, one, stack_config

VM = "proxmoxve:index/vmLegacy:VmLegacy"
SNIPPET = "proxmoxve:index/fileLegacy:FileLegacy"
RULES = "proxmoxve:firewall/rulesLegacy:RulesLegacy"
OPTIONS = "proxmoxve:firewall/optionsLegacy:OptionsLegacy"


@pytest.fixture(scope="module")
def applied():
    """Both stacks as after an apply, with every resource's unredacted inputs."""
    out = {}
    for stack in ("prod", "staging"):
        raw: dict = {}
        plan = record(PROJECT_DIR, stack, known_outputs=True, raw_inputs_hook=lambda urn, t, inputs: raw.__setitem__(urn, inputs))
        out[stack] = (plan, raw)
    return out


def snippet(applied, stack: str, which: str) -> str:
    plan, raw = applied[stack]
    return raw[one(plan, SNIPPET, f"-{which}").urn]["sourceRaw"]["data"]


# --- firewall --------------------------------------------------------------------------------------


def test_firewall_is_on_and_drops_by_default(prod_plan):
    """The VM's NIC goes through its firewall, which drops incoming traffic no rule allows and lets all out."""
    options = one(prod_plan, OPTIONS).inputs
    assert options["enabled"] is True and options["inputPolicy"] == "DROP" and options["outputPolicy"] == "ACCEPT"
    vm = one(prod_plan, VM)
    assert vm.inputs["networkDevices"][0]["firewall"] is True, "the NIC must use the VM firewall"
    assert vm.urn in one(prod_plan, OPTIONS).dependencies and vm.urn in one(prod_plan, RULES).dependencies


def test_firewall_rules_are_exactly_the_mail_ports_icmp_and_admin_ssh(prod_plan):
    """In come only ICMP, ports 25, 80, 443, 465, 587, 993, and SSH from the admin networks; each rule commented."""
    rules = [(r["proto"], r.get("dport"), r.get("source")) for r in one(prod_plan, RULES).inputs["rules"]]
    assert rules == [
        ("icmp", None, None),
        ("ipv6-icmp", None, None),
        ("tcp", "25", None),
        ("tcp", "80", None),
        ("tcp", "443", None),
        ("tcp", "465", None),
        ("tcp", "587", None),
        ("tcp", "993", None),
        ("tcp", "22", "198.51.100.0/28"),
        ("tcp", "22", "2001:db8:ad::/48"),
    ]
    assert all(r["action"] == "ACCEPT" and r["type"] == "in" and r["comment"] for r in one(prod_plan, RULES).inputs["rules"])


def test_ssh_is_open_only_to_the_admin_networks_of_each_stack(plans):
    """In every stack SSH is open only to that stack's adminCidrs, never to the whole internet."""
    for stack, plan in plans.items():
        ssh = [r for r in one(plan, RULES).inputs["rules"] if r.get("dport") == "22"]
        assert sorted(r["source"] for r in ssh) == sorted(stack_config(stack)["ceres-mail:adminCidrs"]), stack
        public = [r for r in one(plan, RULES).inputs["rules"] if "source" not in r]
        assert all(r.get("dport") != "22" for r in public)


# --- the VM ----------------------------------------------------------------------------------------


def test_sizes_follow_the_mail_stack_defaults_and_floors():
    """A native VM defaults to 2 cores, 2 GiB and a 20 GiB disk; mailcow gets, and needs, at least 6 GiB of memory."""
    assert NativeStack.default_size.cores == 2 and NativeStack.default_size.memory_mib == 2048
    assert NativeStack.default_size.disk_gib == 20
    assert MailcowStack.default_size.memory_mib >= 6144 and MailcowStack.minimum_size.memory_mib >= 6144


def test_configured_sizes_reach_the_vm(scratch_project):
    """vmCores, vmMemoryMib and vmDiskGib reach the VM, and the data disk keeps its own configured size."""
    config = stack_config("staging")
    config.update({"ceres-mail:vmCores": 4, "ceres-mail:vmMemoryMib": 8192, "ceres-mail:vmDiskGib": 40})
    plan = record(scratch_project("big", config), "big")
    vm = one(plan, VM).inputs
    assert vm["cpu"]["cores"] == 4 and vm["memory"]["dedicated"] == 8192 and vm["disks"][0]["size"] == 40
    assert vm["disks"][1]["size"] == 10, "staging's own data disk size"


def test_prod_vm_is_protected_retained_and_ignores_only_first_boot_inputs(plans):
    """Prod's VM is protected and kept on delete, staging's not; a new image or cloud-init snippet never replaces it."""
    prod, staging = one(plans["prod"], VM), one(plans["staging"], VM)
    assert prod.options["protect"] and prod.options["retainOnDelete"] and prod.inputs["protection"]
    assert not staging.options["protect"] and not staging.options["retainOnDelete"] and not staging.inputs["protection"]
    assert prod.options["ignoreChanges"] == sorted(
        ["disks[0].importFrom", "initialization.userDataFileId", "initialization.vendorDataFileId"]
    )


def test_image_is_a_pinned_debian_12_build_with_its_checksum(prod_plan):
    """The system disk is a pinned Debian 12 genericcloud build, checked against its SHA-512."""
    image = one(prod_plan, "proxmoxve:download/file:File").inputs
    assert "/bookworm/" in image["url"] and "debian-12-genericcloud-amd64-" in image["url"]
    assert image["checksumAlgorithm"] == "sha512" and len(image["checksum"]) == 128
    vm = one(prod_plan, VM).inputs
    assert vm["disks"][0]["importFrom"] == "(known after apply)", "the system disk is the downloaded image"


def test_static_addresses_and_resolvers_via_cloud_init(plans):
    """cloud-init sets the static address and gateway (IPv4 alone without IPv6) and Quad9's resolvers."""
    staging = one(plans["staging"], VM).inputs["initialization"]
    assert staging["ipConfigs"] == [{"ipv4": {"address": "198.51.100.40/26", "gateway": "198.51.100.1"}}]
    assert staging["dns"]["servers"] == ["9.9.9.9", "149.112.112.112"]


# --- cloud-init ------------------------------------------------------------------------------------


def test_user_data_snippet_is_the_builders_output(applied):
    """The user-data snippet uploaded is exactly the builder's output, with the stack's admin keys and deploy key."""
    plan, raw = applied["prod"]
    deploy_private = raw[one(plan, "command:remote:Command", "-install-mail").urn]["connection"]["privateKey"]
    deploy_public = serialization.load_ssh_private_key(deploy_private.encode(), None).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    expected = build_user_data(
        CloudInitInputs(
            hostname="mail",
            fqdn="mail.example.com",
            admin_user="ceres",
            admin_ssh_keys=tuple(stack_config("prod")["ceres-mail:adminSshKeys"]),
            deploy_public_key=deploy_public,
            memory_mib=2048,
        )
    )
    assert snippet(applied, "prod", "user-data") == expected


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_user_data_locks_ssh_down(applied, stack):
    """SSH takes only the admin keys, no password, no root; unattended upgrades and NTP on; swap on a 2 GiB VM."""
    config = yaml.safe_load(snippet(applied, stack, "user-data"))
    assert config["ssh_pwauth"] is False and config["disable_root"] is True
    [admin] = config["users"]
    assert admin["lock_passwd"] is True
    for key in stack_config(stack)["ceres-mail:adminSshKeys"]:
        assert key in admin["ssh_authorized_keys"]
    sshd = next(f for f in config["write_files"] if f["path"].startswith("/etc/ssh/sshd_config.d/"))
    assert "PasswordAuthentication no" in sshd["content"] and "PermitRootLogin no" in sshd["content"]
    assert "unattended-upgrades" in config["packages"] and config["ntp"]["enabled"] is True
    assert "swap" in config, "2 GiB of memory gets a swap file"


def test_large_vm_gets_no_swap(scratch_project):
    """A VM with plenty of memory (8 GiB) gets no swap file."""
    config = stack_config("staging")
    config["ceres-mail:vmMemoryMib"] = 8192
    raw: dict = {}
    plan = record(scratch_project("big", config), "big", known_outputs=True, raw_inputs_hook=lambda u, t, i: raw.__setitem__(u, i))
    assert "swap" not in yaml.safe_load(raw[one(plan, SNIPPET, "-user-data").urn]["sourceRaw"]["data"])


@pytest.mark.judge
@pytest.mark.parametrize("stack", ["prod", "staging"])
@pytest.mark.parametrize("which", ["user-data", "vendor-data"])
def test_cloud_init_schema_accepts_the_snippets(applied, tmp_path, stack, which):
    """Debian's cloud-init validates what the VM will boot with."""
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init is not installed (make test installs it as root)")
    path = tmp_path / f"{stack}-{which}.yaml"
    path.write_text(snippet(applied, stack, which))
    result = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


@pytest.mark.judge
def test_cloud_init_schema_refuses_a_broken_config(tmp_path):
    """cloud-init's schema check refuses a broken config, so its passing our snippets means something."""
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init is not installed (make test installs it as root)")
    path = tmp_path / "broken.yaml"
    path.write_text("#cloud-config\nssh_pwauth: maybe\nusers: 7\n")
    assert subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True).returncode != 0
