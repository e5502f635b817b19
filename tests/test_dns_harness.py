"""The DNS harness itself, on a hand-written zone: the judge accepts good zones and refuses broken ones, and
the real `named` answers what the zone says, for that zone only, and can be started again and side by side.

Tests of the project's rendered zones rely on this; if these fail, fix the harness before reading theirs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import pytest

from tests.dns_harness import authoritative_dns, check_zone, resolver_for

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
