"""Third-party judges of the record set: BIND's named-checkzone, checkdmarc and dkimpy, with a real
authoritative BIND serving the rendered zones on 127.0.0.x (never public DNS)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import checkdmarc.dmarc
import checkdmarc.mta_sts
import checkdmarc.smtp_tls_reporting
import checkdmarc.spf
import dkim
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from components.builders.dns_records import build_records, dkim_records, dkim_value, mta_sts_policy, spki_sha256
from components.builders.zone_file import render_zone
from mailctl.zone import render_stack_zones, stack_settings
from tests.conftest import PROJECT_DIR, stack_config
from tests.dns_fixtures import MULTI, NAMESERVERS, SINGLE, dkim_key_pair
from tests.dns_harness import authoritative_dns, check_zone, resolver_for

pytestmark = pytest.mark.judge
SERVER = "127.0.55.55"


@pytest.fixture(scope="module", autouse=True)
def judges_installed():
    if shutil.which("named-checkzone") is None or shutil.which("named") is None:
        pytest.skip("bind9 and bind9-utils are not installed (make test installs them as root)")


@pytest.fixture(scope="module")
def dkim_keys():
    return dkim_key_pair()


def zones_of(inputs, public_pem) -> dict[str, str]:
    records = build_records(inputs) + dkim_records(inputs, {inputs.dkim_selector: public_pem})
    return {domain: render_zone(domain, records, NAMESERVERS, inputs.ttl) for domain in inputs.mail_domains}


def assert_accepted(origin: str, text: str) -> None:
    result = check_zone(origin, text)
    assert result.returncode == 0, f"named-checkzone refused {origin}:\n{result.stdout}\n{text}"
    assert "OK" in result.stdout


# --- named-checkzone ------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_named_checkzone_accepts_every_committed_stack(stack, dkim_keys):
    """The zones rendered for each committed stack load in BIND's named-checkzone as they are."""
    settings = stack_settings(PROJECT_DIR, stack)
    for domain in settings.mail_domains:
        assert_accepted(domain, render_stack_zones(settings, stack, domain, {settings.dkim_selector: dkim_keys[1]}))


def test_named_checkzone_accepts_a_multi_domain_stack(scratch_project, dkim_keys):
    """A stack with extra domains and autoconfig renders a zone named-checkzone accepts for every mail domain."""
    config = stack_config("prod")
    config["ceres-mail:extraDomains"] = [
        "example.org=11111111111111111111111111111111",
        "example.net=22222222222222222222222222222222",
    ]
    config["ceres-mail:autoconfig"] = True
    settings = stack_settings(scratch_project("multi", config), "multi")
    assert settings.mail_domains == ("example.com", "example.org", "example.net")
    for domain in settings.mail_domains:
        assert_accepted(domain, render_stack_zones(settings, "multi", domain, {settings.dkim_selector: dkim_keys[1]}))


def test_mailctl_zone_writes_one_accepted_zone_per_domain_with_the_key_from_the_stack_outputs(
        scratch_project, dkim_keys, tmp_path):
    """The DKIM key comes as `pulumi stack output --json` gives it, on stdin; `--out` writes a zone file per
    mail domain, each one named-checkzone loads as it is, each with the DKIM record."""
    import json
    import subprocess
    import sys

    config = stack_config("prod")
    config["ceres-mail:extraDomains"] = ["example.org=11111111111111111111111111111111"]
    project = scratch_project("multi", config)
    outputs = json.dumps({"dkimPublicKeyPem": dkim_keys[1], "mailHost": "mail.example.com"})
    result = subprocess.run(
        [sys.executable, "-m", "mailctl.cli", "-C", str(project), "zone", "--stack", "multi",
         "--dkim-public-key", "-", "--out", str(tmp_path / "zones")],
        input=outputs, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "zones").iterdir())
    assert written == ["example.com.zone", "example.org.zone"]
    for domain in ("example.com", "example.org"):
        text = (tmp_path / "zones" / f"{domain}.zone").read_text()
        assert_accepted(domain, text)
        assert "ceres._domainkey" in text and "v=DKIM1" in text


def test_mid_rotation_the_zone_holds_every_published_selector_with_its_own_key(scratch_project, dkim_keys, tmp_path):
    """Step 2 of a rotation: the new selector signs, the old one stays published for mail in flight. Given
    the stack's outputs, the zone holds both records, each with its own key, as the stack publishes them;
    given the signing key's PEM alone, the header names the record still to add."""
    import json
    import subprocess
    import sys

    old_key = dkim_key_pair()[1]
    config = {**stack_config("prod"), "ceres-mail:dkimSelector": "ceres2027",
              "ceres-mail:dkimPublishedSelectors": [{"selector": "ceres", "reason": "old key, retire on 2027-01-10"}]}
    project = scratch_project("rotating", config)
    outputs = {"dkimPublicKeyPem": dkim_keys[1], "dkimPublicKeys": {"ceres2027": dkim_keys[1], "ceres": old_key}}

    def zone(given: str) -> str:
        result = subprocess.run([sys.executable, "-m", "mailctl.cli", "-C", str(project), "zone", "--stack", "rotating",
                                 "--dkim-public-key", "-"], input=given, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    text = zone(json.dumps(outputs))
    assert_accepted("example.com", text)
    served = {str(name): rdataset for name, node in dns.zone.from_text(text, "example.com", relativize=False).nodes.items()
              for rdataset in node if rdataset.rdtype == dns.rdatatype.TXT}
    published = {name.split(".", 1)[0]: b"".join(served[name][0].strings).decode()
                 for name in served if "._domainkey." in name}
    assert published == {"ceres2027": dkim_value(dkim_keys[1]), "ceres": dkim_value(old_key)}
    signing_only = zone(dkim_keys[1])
    assert "\nceres2027._domainkey 3600 IN TXT" in signing_only and "\nceres._domainkey 3600" not in signing_only
    assert "DKIM: ceres._domainkey.example.com TXT holds the stack's own keys" in signing_only


def test_named_checkzone_refuses_a_broken_zone():
    """The judge can say no: an MX whose target is a CNAME (RFC 2181 10.3)."""
    records = build_records(replace(SINGLE, mail_host="mta-sts.example.com"))
    result = check_zone("example.com", render_zone("example.com", records, NAMESERVERS, 3600))
    assert result.returncode != 0


labels = st.from_regex(r"[a-z]([a-z0-9-]{0,15}[a-z0-9])?", fullmatch=True)


@hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(labels, min_size=1, max_size=3), st.sampled_from(["com", "net", "org", "example", "test"]))
def test_any_valid_domain_renders_a_zone_named_checkzone_accepts(dkim_keys, parts, tld):
    """Whatever valid domain name a stack uses, its rendered zone loads in named-checkzone."""
    domain = ".".join([*parts, tld])
    inputs = replace(
        SINGLE,
        domain=domain,
        mail_host=f"mail.{domain}",
        dmarc=replace(SINGLE.dmarc, rua=f"dmarc@{domain}", ruf=f"dmarc@{domain}"),
        tls_rpt_address=f"tls-reports@{domain}",
        caa_iodef=f"mailto:postmaster@{domain}",
    )
    assert_accepted(domain, zones_of(inputs, dkim_keys[1])[domain])


# --- served by a real BIND, judged by checkdmarc and dkimpy ----------------------------------------


@pytest.fixture(scope="module")
def served(dkim_keys):
    """The multi-domain record set served by BIND on SERVER."""
    with authoritative_dns(zones_of(MULTI, dkim_keys[1]), SERVER) as address:
        yield address


def txt(address: str, name: str, prefix: str) -> str:
    answers = resolver_for(address).resolve(name, "TXT")
    values = [b"".join(rdata.strings).decode() for rdata in answers]
    return next(v for v in values if v.startswith(prefix))


@pytest.mark.parametrize("domain", MULTI.mail_domains)
def test_checkdmarc_parses_spf_without_warnings(served, domain):
    """Each served SPF record draws no checkdmarc warning and costs a single DNS lookup (RFC 7208 4.6.4)."""
    record = txt(served, domain, "v=spf1")
    result = checkdmarc.spf.parse_spf_record(record, domain, nameservers=[served], timeout=3)
    assert result["warnings"] == [], result
    assert result["dns_lookups"] == 1


@pytest.mark.parametrize("domain", MULTI.mail_domains)
def test_checkdmarc_parses_dmarc_and_only_notes_the_seeds_observation_mode(served, domain):
    """A new domain starts with p=none (observe); checkdmarc's one remark is exactly that, nothing else."""
    record = txt(served, f"_dmarc.{domain}", "v=DMARC1")
    result = checkdmarc.dmarc.parse_dmarc_record(record, domain, nameservers=[served], timeout=3)
    assert result["warnings"] == [f"A p tag value of none makes DMARC unenforced on email sent as {domain}."]
    tags = result["tags"]
    assert tags["p"]["value"] == "none" and tags["fo"]["value"] == "1"
    assert tags["rua"]["value"][0]["address"] == "dmarc@example.com"
    assert tags["ruf"]["value"][0]["address"] == "dmarc@example.com"


@pytest.mark.parametrize("policy", ["quarantine", "reject"])
@pytest.mark.parametrize("domain", MULTI.mail_domains)
def test_checkdmarc_finds_nothing_to_say_about_an_enforcing_dmarc(served, domain, policy):
    """With an enforcing policy the builder's DMARC record draws no warning at all (reports are
    authorized through the served zones: RFC 7489 7.1 records for the extra domains)."""
    inputs = replace(MULTI, dmarc=replace(MULTI.dmarc, policy=policy))
    record = next(r for r in build_records(inputs) if r.name == f"_dmarc.{domain}")
    value = b"".join(record.parsed().strings).decode()
    result = checkdmarc.dmarc.parse_dmarc_record(value, domain, nameservers=[served], timeout=3)
    assert result["warnings"] == [], result
    assert result["tags"]["p"]["value"] == policy


@pytest.mark.parametrize("domain", MULTI.mail_domains)
def test_checkdmarc_parses_mta_sts_and_its_policy(served, domain):
    """The served MTA-STS record and its policy draw no checkdmarc warning: testing mode, the mail host as mx."""
    record = txt(served, f"_mta-sts.{domain}", "v=STSv1")
    parsed = checkdmarc.mta_sts.parse_mta_sts_record(record)
    assert parsed["warnings"] == [], parsed
    policy = checkdmarc.mta_sts.parse_mta_sts_policy(mta_sts_policy(MULTI))
    assert policy["warnings"] == [], policy
    assert policy["policy"]["mode"] == "testing" and policy["policy"]["mx"] == ["mail.example.com"]


@pytest.mark.parametrize("domain", MULTI.mail_domains)
def test_checkdmarc_parses_tls_rpt(served, domain):
    """Each served TLS-RPT record draws no checkdmarc warning (RFC 8460 3)."""
    record = txt(served, f"_smtp._tls.{domain}", "v=TLSRPTv1")
    parsed = checkdmarc.smtp_tls_reporting.parse_smtp_tls_reporting_record(record)
    assert parsed["warnings"] == [], parsed


MESSAGE = (
    b"From: CERES <no-reply@example.com>\r\n"
    b"To: someone@example.net\r\n"
    b"Subject: Welcome to CERES\r\n"
    b"Message-ID: <onboarding-1@example.com>\r\n"
    b"\r\n"
    b"Your account is ready.\r\n"
)


def dkim_dns(address: str):
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        answers = resolver_for(address).resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(rdata.strings) for rdata in answers)

    return lookup


@pytest.mark.parametrize("domain", MULTI.mail_domains)
def test_dkimpy_verifies_a_message_signed_with_the_stack_key(served, dkim_keys, domain):
    """Mail from each mail domain signed with the stack's key verifies against the DKIM record BIND serves."""
    message = MESSAGE.replace(b"@example.com>", f"@{domain}>".encode(), 1)
    signature = dkim.sign(message, b"ceres", domain.encode(), dkim_keys[0].encode(),
                          include_headers=[b"from", b"to", b"subject", b"message-id"])
    assert dkim.verify(signature + message, dnsfunc=dkim_dns(served))


def test_dkimpy_rejects_a_signature_by_another_key(served):
    """A signature made with any other key fails verification against the served DKIM record."""
    other_private, _ = dkim_key_pair()
    signature = dkim.sign(MESSAGE, b"ceres", b"example.com", other_private.encode(), include_headers=[b"from", b"subject"])
    assert not dkim.verify(signature + MESSAGE, dnsfunc=dkim_dns(served))


def test_named_checkzone_accepts_the_tlsa_records_of_a_dane_stack(dkim_keys):
    """The TLSA records a dane stack publishes load in named-checkzone and read back as 3 1 1 of the pinned key."""
    digest = spki_sha256(dkim_keys[1])
    inputs = replace(SINGLE, tlsa_spki_sha256=(digest,))
    text = zones_of(inputs, dkim_keys[1])[inputs.domain]
    assert_accepted(inputs.domain, text)
    zone = dns.zone.from_text(text, origin=inputs.domain, relativize=False)
    pinned = {(name.to_text(omit_final_dot=True), rdata.to_text()) for name, _, rdata in zone.iterate_rdatas("TLSA")}
    assert pinned == {(f"_{port}._tcp.mail.example.com", f"3 1 1 {digest}") for port in (25, 465, 587, 993)}


def test_mailctl_zone_pins_the_stacks_own_tls_key_from_the_stack_outputs(scratch_project, dkim_keys):
    """dane with ACME: `mailctl zone`, given the stack outputs on stdin, renders the TLSA of the TLS key the stack
    owns (its digest from tlsPublicKeys) in a zone named-checkzone loads; without that key it says how to add them."""
    import json
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    tls_key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    project = scratch_project("dane", stack_config("prod", {"ceres-mail:dane": True}))

    def zone(outputs: dict) -> str:
        result = subprocess.run([sys.executable, "-m", "mailctl.cli", "-C", str(project), "zone", "--stack", "dane",
                                 "--dkim-public-key", "-"], input=json.dumps(outputs), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    text = zone({"dkimPublicKeyPem": dkim_keys[1], "tlsPublicKeys": {"tls1": tls_key}})
    assert_accepted("example.com", text)
    digest = spki_sha256(tls_key)
    assert sorted(line.split()[0] for line in text.splitlines() if f"TLSA 3 1 1 {digest}" in line) == [
        f"_{port}._tcp.mail" for port in (25, 465, 587, 993)]
    without = zone({"dkimPublicKeyPem": dkim_keys[1]})
    assert " TLSA " not in without and "TLSA: the records pinning the TLS key the stack owns" in without
