"""The DNS harness itself, on a hand-written zone: the judge accepts good zones and refuses broken ones, and
the real `named` answers what the zone says, for that zone only, and can be started again and side by side.
Then DNSSEC: BIND's tools sign a zone with a key made by BIND or from a PEM of ours, and judge it; the signed
tree (tests/testnet/dns_tree.py) on 127.x: a root of its own, a validating resolver that trusts only it, the
registrar's step that makes a child secure, an unsigned child insecure and a tampered one bogus. Last, the
end-to-end layer's zone server (tests/e2e/zones.py) signs a zone with the Cloudflare stand-in's key.

Tests of the project's rendered zones rely on this; if these fail, fix the harness before reading theirs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from types import SimpleNamespace

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.dnssec
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.dns_harness import (LoopbackHost, authoritative_dns, check_zone, resolver_for, served_zone_stamp,
                               zone_transfer)
from tests.dns_signing import ds_of, key_from_pem, make_key, sign, trust_anchors, verify_signed
from tests.e2e.zones import ZoneServer
from tests.engine.standins.cloudflare_dns import signing_key_path
from tests.testnet.dns_tree import DnsTree

pytestmark = pytest.mark.judge

ZONE = textwrap.dedent(
    """\
    $TTL 300
    @       IN SOA ns1.cloudflare.com. dns.cloudflare.com. ( 2024010101 10000 2400 604800 300 )
            IN NS  ns1.cloudflare.com.
            IN NS  ns2.cloudflare.com.
            IN MX  10 mail.example.com.
            IN TXT "v=spf1 mx -all"
    mail    IN A   203.0.113.25
    """
)
BROKEN = {
    # the MX target is an alias: RFC 2181 10.3 forbids it (-M fail)
    "mx-to-cname": (ZONE.replace("mail    IN A ", "mail    IN CNAME host\nhost    IN A "), "is a CNAME"),
    # an alias beside other data at the same name: RFC 1034 3.6.2 forbids it (always fatal)
    "cname-and-other-data": (ZONE + "mail    IN CNAME host.example.com.\n", "CNAME and other data"),
}
SECOND_ADDRESS = "127.0.54.54"  # beside the module's server on the default 127.0.53.53


def require(*tools: str, root: bool = False) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing {missing} (make test installs them as root)")
    if root and os.geteuid() != 0:
        pytest.skip("named needs root: it listens on port 53 and its address goes on lo")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    require("named", "ip", root=True)
    with authoritative_dns({"example.com": ZONE}) as address:
        yield address


def ask(name: str, rdtype: str, address: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), address, timeout=2)


# --- named-checkzone ------------------------------------------------------------------------------------


def test_check_zone_accepts_a_zone_with_out_of_zone_ns():
    """The zone judge accepts a sound zone whose name servers are outside it, as with a hosted DNS provider."""
    require("named-checkzone")
    result = check_zone("example.com", ZONE)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(("zone", "finding"), list(BROKEN.values()), ids=list(BROKEN))
def test_check_zone_refuses_broken_zones(zone, finding):
    """The zone judge refuses an MX aimed at a CNAME (RFC 2181 10.3) and a CNAME beside other data (RFC 1034 3.6.2)."""
    require("named-checkzone")
    result = check_zone("example.com", zone)
    assert result.returncode != 0, result.stdout
    assert finding in result.stdout


# --- named ----------------------------------------------------------------------------------------------


def test_server_answers_a(server):
    """The harness's named answers the zone's A record, authoritatively (AA set)."""
    answer = resolver_for(server).resolve("mail.example.com", "A")
    assert [rdata.address for rdata in answer] == ["203.0.113.25"]
    assert answer.response.flags & dns.flags.AA


def test_server_answers_mx(server):
    """The harness's named answers the zone's MX record with its preference and target."""
    answer = resolver_for(server).resolve("example.com", "MX")
    assert [(rdata.preference, rdata.exchange) for rdata in answer] == [(10, dns.name.from_text("mail.example.com."))]


def test_server_answers_txt(server):
    """The harness's named answers the zone's TXT record (the SPF string) byte for byte."""
    answer = resolver_for(server).resolve("example.com", "TXT")
    assert [b"".join(rdata.strings) for rdata in answer] == [b"v=spf1 mx -all"]


def test_server_refuses_names_outside_its_zones(server):
    """The harness's named refuses names outside its zones and offers no recursion."""
    response = ask("example.org", "A", server)
    assert dns.rcode.to_text(response.rcode()) == "REFUSED"
    assert not response.flags & dns.flags.RA


def test_second_server_runs_beside_the_first_and_restarts(server):
    """A second named runs beside the first, each answering only its own zones; it restarts and leaves lo as it was."""
    require("named", "ip", root=True)
    other = ZONE.replace("203.0.113.25", "198.51.100.7")
    for _ in range(2):  # the second start proves the first freed port 53
        with authoritative_dns({"example.net": other}, SECOND_ADDRESS) as address:
            assert [r.address for r in resolver_for(address).resolve("mail.example.net", "A")] == ["198.51.100.7"]
            assert dns.rcode.to_text(ask("example.com", "SOA", address).rcode()) == "REFUSED"
            assert dns.rcode.to_text(ask("example.net", "SOA", server).rcode()) == "REFUSED"
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
    assert f"inet {SECOND_ADDRESS}/" not in shown.stdout, "the harness leaves lo as it found it"


def test_a_zone_named_cannot_load_raises_with_its_log():
    """A zone named cannot load stops the harness at start, with named's complaint in the error."""
    require("named", "ip", root=True)
    zone, finding = BROKEN["cname-and-other-data"]
    with pytest.raises(RuntimeError, match=finding):
        with authoritative_dns({"example.com": zone}, SECOND_ADDRESS):
            pass


def test_only_loopback_addresses_are_accepted():
    """The harness refuses to put named on any address outside 127.0.0.0/8."""
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        with authoritative_dns({"example.com": ZONE}, "192.0.2.53"):
            pass


# --- DNSSEC: keys, signing, the judge -------------------------------------------------------------------

CHILD_SERVER = "127.0.57.3"  # the children's authoritative server; the tree's root and resolver: .1 and .2
REVERSE_ZONE = "113.0.203.in-addr.arpa"


def child_zone(origin: str, address: str = "203.0.113.25") -> str:
    """A mail domain served by CHILD_SERVER, named ns.<origin> (glue in its parent)."""
    return textwrap.dedent(
        f"""\
        $TTL 300
        @       IN SOA ns.{origin}. hostmaster.{origin}. ( 1 10000 2400 604800 300 )
                IN NS  ns.{origin}.
                IN MX  10 mail.{origin}.
        ns      IN A   {CHILD_SERVER}
        mail    IN A   {address}
        """
    )


def p256_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def test_dnssec_verify_accepts_a_zone_signed_with_its_key(tmp_path):
    """dnssec-verify accepts a zone dnssec-signzone signed with a key dnssec-keygen made for it."""
    require("dnssec-keygen", "dnssec-signzone", "dnssec-verify")
    signed = sign("example.com", child_zone("example.com"), [make_key("example.com", tmp_path)])
    result = verify_signed("example.com", signed)
    assert result.returncode == 0, result.stdout
    assert "Zone fully signed" in result.stdout


def test_dnssec_verify_refuses_a_record_changed_after_signing(tmp_path):
    """dnssec-verify refuses a signed zone whose record was changed after signing: its signature no longer holds."""
    require("dnssec-keygen", "dnssec-signzone", "dnssec-verify")
    signed = sign("example.com", child_zone("example.com"), [make_key("example.com", tmp_path)])
    tampered = signed.replace("203.0.113.25", "203.0.113.26")
    assert tampered != signed
    result = verify_signed("example.com", tampered)
    assert result.returncode != 0, result.stdout
    assert "No correct ECDSAP256SHA256 signature for mail.example.com A" in result.stdout


def test_a_key_from_our_pem_is_the_zones_key_and_its_ds_is_its_digest(tmp_path):
    """A P-256 key we hold becomes BIND's key files: dnssec-dsfromkey's DS of it is RFC 4034's digest of our
    public key (dnspython's), and a zone dnssec-signzone signs with it passes dnssec-verify."""
    require("dnssec-signzone", "dnssec-dsfromkey", "dnssec-verify")
    pem = p256_pem()
    key = key_from_pem("Example.COM", pem, tmp_path)
    public = serialization.load_pem_private_key(pem, None).public_key().public_numbers()
    ours = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, "257 3 13 " + base64_of(public))
    expected = dns.dnssec.make_ds("example.com.", ours, "SHA256")
    assert key.key_tag == dns.dnssec.key_id(ours)
    assert ds_of(key).upper() == f"EXAMPLE.COM. IN DS {expected.to_text().upper()}"
    result = verify_signed("example.com", sign("example.com", child_zone("example.com"), [key]))
    assert result.returncode == 0, result.stdout
    assert (tmp_path / f"{key.base.name}.private").stat().st_mode & 0o077 == 0, "the private key file is 0600"


def base64_of(public: ec.EllipticCurvePublicNumbers) -> str:
    """The DNSKEY form of a P-256 public key (RFC 6605: x then y, 32 bytes each), in base64."""
    return base64.b64encode(public.x.to_bytes(32, "big") + public.y.to_bytes(32, "big")).decode()


def test_a_key_other_than_p256_is_refused(tmp_path):
    """key_from_pem refuses a key that is not EC P-256, the one algorithm (13) the test DNS signs with."""
    pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ValueError, match="EC P-256"):
        key_from_pem("example.com", pem, tmp_path)


# --- DNSSEC: the signed tree on 127.x -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Iterator[tuple[DnsTree, LoopbackHost, dict]]:
    """The tree on 127.0.57.1 (root) and .2 (resolver); on .3 the children: example.com and example.net signed
    (example.net with a record changed after signing, its DS registered), example.org and the reverse zone
    unsigned. Each delegated from its TLD; example.com's DS is left to the test of the registrar's step."""
    require("named", "ip", "dig", "delv", "rndc", "dnssec-signzone", root=True)
    workdir = tmp_path_factory.mktemp("dnstree")
    keys = {origin: make_key(origin, workdir / "child-keys") for origin in ("example.com", "example.net")}
    zones = {origin: sign(origin, child_zone(origin), [key]) for origin, key in keys.items()}
    zones["example.net"] = zones["example.net"].replace("203.0.113.25", "203.0.113.26")  # after signing
    zones["example.org"] = child_zone("example.org")
    zones[REVERSE_ZONE] = child_zone(REVERSE_ZONE).replace("mail    IN A   203.0.113.25",
                                                           "25      IN PTR mail.example.com.")
    with (LoopbackHost("127.0.57.1") as root, LoopbackHost("127.0.57.2") as resolver,
          authoritative_dns(zones, CHILD_SERVER)):
        tree = DnsTree(workdir / "tree", root, resolver)
        for origin in zones:
            tree.delegate(origin, {f"ns.{origin}": CHILD_SERVER})
        tree.start()
        tree.register_ds("example.net", [ds_of(keys["example.net"])])
        yield tree, root, keys


def test_every_zone_of_the_root_host_passes_dnssec_verify(tree):
    """The root and each TLD are signed with their own key and pass dnssec-verify; the root holds each TLD's DS."""
    tree, _, _ = tree
    for origin in tree.origins:
        result = verify_signed(origin, tree.signed(origin))
        assert result.returncode == 0, f"{origin}: {result.stdout}"
    for origin in tree.origins[1:]:
        assert ds_record(origin, tree.zones[origin].key) in tree.text(".").lower()


def test_the_resolver_validates_the_root_with_the_one_anchor(tree):
    """The resolver answers the test root's SOA with AD: it trusts the test root's key, the one anchor it has."""
    tree, root, _ = tree
    answer = tree.ask(root, ".", "SOA")
    assert answer.secure, answer
    assert tree.anchors.count("static-key") == 1 and f'"{tree.zones["."].key.zone}"' in tree.anchors


def test_the_registrar_step_makes_a_signed_child_secure(tree):
    """A signed child is insecure (answers, no AD) until its DS is registered in its parent; then it validates."""
    tree, root, keys = tree
    before = tree.ask(root, "example.com", "MX")
    assert before.rcode == "NOERROR" and not before.secure, before
    assert before.rdata("MX") == ["10 mail.example.com."]
    tree.register_ds("example.com", [ds_of(keys["example.com"])])
    after = tree.ask(root, "example.com", "MX")
    assert after.secure, after
    assert after.rdata("MX") == ["10 mail.example.com."]
    judged = tree.delv(root, "mail.example.com", "A")
    assert judged.stdout.startswith("; fully validated"), judged.stdout + judged.stderr


def test_an_unsigned_child_without_ds_is_insecure_not_bogus(tree):
    """An unsigned child with no DS answers normally, without AD, and delv calls it unsigned (never a failure)."""
    tree, root, _ = tree
    answer = tree.ask(root, "mail.example.org", "A")
    assert answer.rcode == "NOERROR" and not answer.secure, answer
    assert answer.rdata("A") == ["203.0.113.25"]
    judged = tree.delv(root, "mail.example.org", "A")
    assert judged.stdout.startswith("; unsigned answer"), judged.stdout + judged.stderr


def test_a_reverse_zone_delegated_from_arpa_answers_its_ptr(tree):
    """The reverse zone of a documentation range, delegated from arpa, answers its PTR through the resolver."""
    tree, root, _ = tree
    answer = tree.ask(root, f"25.{REVERSE_ZONE}", "PTR")
    assert answer.rdata("PTR") == ["mail.example.com."], answer


def test_a_record_changed_after_signing_is_bogus(tree):
    """A registered child's record changed after signing is SERVFAIL at the resolver, and delv names the bad RRSIG."""
    tree, root, _ = tree
    answer = tree.ask(root, "mail.example.net", "A")
    assert answer.rcode == "SERVFAIL" and not answer.records, answer
    judged = tree.delv(root, "mail.example.net", "A")
    assert "RRSIG failed to verify" in judged.stderr, judged.stdout + judged.stderr


def test_the_ds_withdrawn_the_child_is_insecure_again(tree):
    """The registrar's step undone (no DS in the parent), the tampered child answers again, insecure."""
    tree, root, _ = tree
    tree.register_ds("example.net", [])
    answer = tree.ask(root, "mail.example.net", "A")
    assert answer.rcode == "NOERROR" and not answer.secure and answer.rdata("A") == ["203.0.113.26"], answer


def test_another_anchor_validates_nothing(tree, tmp_path):
    """With any key but the test root's as its anchor, delv validates nothing: the tree's trust rests on that key."""
    tree, root, _ = tree
    stranger = tmp_path / "anchors.conf"
    stranger.write_text(trust_anchors(make_key(".", tmp_path)))
    judged = root.run(["delv", "+cdflag", f"@{tree.resolver}", "-a", str(stranger), "mail.example.com", "A"])
    assert "fully validated" not in judged.stdout, judged.stdout
    assert "resolution failed" in judged.stderr, judged.stderr


def test_register_ds_refuses_what_the_parent_does_not_delegate(tmp_path):
    """The registrar's step refuses a zone its parent does not delegate and a DS of another zone; a zone of the
    tree itself cannot be delegated."""
    require("dnssec-keygen", "dnssec-dsfromkey")
    place = SimpleNamespace(address="127.0.57.9")  # never started: the refusals come first
    tree = DnsTree(tmp_path, place, place)
    key = make_key("example.com", tmp_path / "child")
    with pytest.raises(ValueError, match="not delegated"):
        tree.register_ds("example.com", [ds_of(key)])
    tree.delegate("example.com", {"ns.example.com": "127.0.57.3"})
    tree.delegate("example.net", {"ns.example.net": "127.0.57.3"})
    with pytest.raises(ValueError, match="not of example.net"):
        tree.register_ds("example.net", [ds_of(key)])
    with pytest.raises(ValueError, match="a zone of the tree itself"):
        tree.delegate("com", {"ns.example.com": "127.0.57.3"})
    tree.register_ds("example.com", [ds_of(key)])
    assert ds_record("example.com.", key) in tree.text("com").lower()


def ds_record(owner: str, key) -> str:
    """The DS line a parent's text holds for `key` (lower case: BIND writes the digest upper, dnspython lower)."""
    return f"{owner} IN DS {ds_of(key).split(' DS ', 1)[1]}".lower()


# --- the end-to-end layer's zone server: a zone signed as Cloudflare signs it ---------------------------

ZONE_ID = "3f2c6e7d1a5b4c8d9e0f1a2b3c4d5e6f"  #: a zone of the Cloudflare stand-in's account
ZONE_SERVER = "127.0.57.4"


def test_the_zone_server_signs_a_zone_while_its_dnssec_is_on(tmp_path):
    """The e2e zone server serves a zone signed with the stand-in's key while its DNSSEC is on, anew on every serve."""
    require("named", "ip", "dig", "dnssec-signzone", "dnssec-verify", root=True)
    world = tmp_path / "world" / "cloudflare"  # the stand-in's provider folder, as the engine's stand-in keeps it
    records = world / "DnsRecord"
    records.mkdir(parents=True)
    (records / "mail.json").write_text(json.dumps({"zoneId": ZONE_ID, "name": "mail.example.com", "type": "A",
                                                   "content": "203.0.113.25", "ttl": 300}))
    with LoopbackHost(ZONE_SERVER) as place:
        server = ZoneServer(place, tmp_path / "named", {ZONE_ID: "example.com"}, [], ttl=300).start()
        try:
            server.serve(str(records))
            unsigned = served_zone_stamp(place, ZONE_SERVER, "example.com")
            assert server.signed == frozenset() and unsigned is not None and unsigned[1] == (), unsigned

            pem = p256_pem()  # ZoneDnssec made: the stand-in keeps the zone's key in its world
            signing_key_path(world, ZONE_ID).parent.mkdir()
            signing_key_path(world, ZONE_ID).write_bytes(pem)
            server.serve(str(records))
            transferred = zone_transfer(place, ZONE_SERVER, "example.com")
            judged = verify_signed("example.com", transferred)
            assert judged.returncode == 0 and "Zone fully signed" in judged.stdout, judged.stdout
            key = key_from_pem("example.com", pem, tmp_path / "ours")
            assert key.rdata.split()[-1] in transferred, "signed with the key the stand-in holds"
            assert "mail.example.com.\t300\tIN\tA\t203.0.113.25" in transferred
            signed = served_zone_stamp(place, ZONE_SERVER, "example.com")
            assert server.signed == {"example.com"} and signed[0] == unsigned[0] and signed[1], signed

            server.serve(str(records))
            again = served_zone_stamp(place, ZONE_SERVER, "example.com")
            assert again[0] == signed[0] and again[1] and again[1] != signed[1], "signed again, the serial kept"

            signing_key_path(world, ZONE_ID).unlink()  # ZoneDnssec deleted: the key goes with it
            server.serve(str(records))
            assert served_zone_stamp(place, ZONE_SERVER, "example.com") == unsigned and server.signed == frozenset()
        finally:
            server.stop()
