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


#: the zones of the account the dnssec test signs: staging's own and a second mail domain's
SIGNED_ZONES = {"3f2c6e7d1a5b4c8d9e0f1a2b3c4d5e6f": "staging.example.net", "1" * 32: "example.org"}


def test_dnssec_signs_each_zone_with_a_kept_key_whose_real_ds_is_exported(engine_project, tmp_path, capsys):
    """An up with dnssec exports, and `mailctl zone --ds` prints, the real DS of each zone's signing key, as Cloudflare would."""
    import json

    import dns.dnssec
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from mailctl.cli import main
    from tests.engine.standins.cloudflare_dns import seed_zone, signing_key_pem

    project = engine_project("staging")
    for zone_id, name in SIGNED_ZONES.items():
        seed_zone(project.world, zone_id, name)
    stack = project.stack("staging", config={"dnssec": True, "extraDomains": [f"example.org={'1' * 32}"]})
    run = run_engine(stack.up)
    assert run.ok, run.output[-3000:]
    signed = project.world_items("cloudflare", "ZoneDnssec")
    assert sorted(signed) == sorted(SIGNED_ZONES), "one per zone, its id the zone's"
    outputs = {key: output.value for key, output in stack.outputs().items() if not output.secret}
    for zone_id, name in SIGNED_ZONES.items():
        held = signed[zone_id]
        assert (held["flags"], held["algorithm"], held["digestType"], held["status"]) == (257, "13", "2", "active")
        dnskey = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, f"257 3 13 {held['publicKey']}")
        ds = dns.dnssec.make_ds(f"{name}.", dnskey, "SHA256")
        digest = ds.digest.hex().upper()
        assert held["ds"] == f"{name}. 3600 IN DS {ds.key_tag} 13 2 {digest}"
        assert outputs["dsRecords"][name] == {"ds": held["ds"], "keyTag": ds.key_tag, "algorithm": 13,
                                              "digestType": 2, "digest": digest}
        kept = load_pem_private_key(signing_key_pem(project.world / "cloudflare", zone_id).encode(), None)
        assert dns.dnssec.make_dnskey(kept.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256, flags=257) == dnskey
    given = tmp_path / "outputs.json"
    given.write_text(json.dumps(outputs))
    capsys.readouterr()
    assert main(["-C", str(project.work_dir), "zone", "--stack", "staging", "--ds", str(given)]) == 0
    printed = capsys.readouterr().out
    assert all(f"{name}. IN DS {outputs['dsRecords'][name]['keyTag']} 13 2 " in printed for name in SIGNED_ZONES.values())
