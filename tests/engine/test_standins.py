"""The stand-in plugins hold the program to what the real providers would: through the real engine."""

from __future__ import annotations

import pulumi
from pulumi.automation import ConfigValue
from pulumi.runtime import rpc

from tests.engine.harness import run_engine
from tests.engine.standins import values

VM = "proxmoxve:index/vmLegacy:VmLegacy"


def misspelt_comment(args):
    if args.type_ == "cloudflare:index/dnsRecord:DnsRecord" and args.props.get("type") == "MX":
        props = {key: value for key, value in args.props.items() if key != "comment"}
        return pulumi.ResourceTransformResult({**props, "coment": args.props["comment"]}, args.opts)


def test_an_unknown_property_is_refused_as_the_real_check_would(engine_project):
    """A misspelt resource input fails the preview, naming it, as the real provider's check would."""
    project = engine_project("staging")
    stack = project.stack("staging", transforms=(misspelt_comment,))
    run = run_engine(stack.preview)
    assert not run.ok
    assert "unknown property 'coment': DnsRecordArgs has no such input" in run.output


def _vm_steps(run) -> tuple[str, ...]:
    [steps] = [steps for urn, steps in run.ops().items() if urn.split("::")[-2].endswith(VM)]
    return steps


def test_the_vm_is_updated_in_place_or_replaced_as_proxmox_would(engine_project):
    """More memory is an update; another node is a new VM (the real provider forces a new one)."""
    project = engine_project("staging")
    stack = project.stack("staging")
    assert run_engine(stack.up).ok
    stack.set_config("ceres-mail:vmMemoryMib", ConfigValue("4096"))
    assert _vm_steps(run_engine(stack.preview)) == ("update",)
    stack.set_config("ceres-mail:proxmoxNode", ConfigValue("pve-lab2"))
    assert "replace" in _vm_steps(run_engine(stack.preview))


def test_the_stand_ins_mark_secrets_and_unknowns_as_the_sdk_does():
    """The stand-ins write the wire's markers out (their processes do not import the SDK): the same."""
    assert (values.SIG_KEY, values.SECRET_SIG, values.UNKNOWN) == (rpc._special_sig_key, rpc._special_secret_sig,
                                                                    rpc.UNKNOWN)
