"""The record builder: every record a mail domain gets, by the RFC each one cites."""

from __future__ import annotations

import hashlib
import subprocess
from collections import Counter
from dataclasses import replace

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given, strategies as st

from components.builders.dns_records import (
    DKIM_PUBLISHED_WHY,
    DKIM_WHY,
    Dmarc,
    build_records,
    cloudflare_fields,
    dkim_records,
    dkim_value,
    dmarc_value,
    external_authorizations,
    mta_sts_id,
    mta_sts_policy,
    record_key,
    reverse_records,
    spf_lookups,
    spf_problems,
    spf_value,
    spki_sha256,
    txt_rdata,
    txt_value,
)
from tests.conftest import self_signed
from tests.dns_fixtures import MULTI, SINGLE, dkim_key_pair


def by_name_type(records):
    return {(r.name, r.type): r for r in records}


def test_minimal_records_for_one_domain():
    """The minimal records: A, MX 10 mail host, SPF `v=spf1 mx -all`, DMARC p=none with rua/ruf, fo=1."""
    got = by_name_type(build_records(SINGLE))
    assert got[("mail.example.com", "A")].rdata == "203.0.113.25"
    assert got[("mail.example.com", "AAAA")].rdata == "2001:db8:25::25"
    assert got[("example.com", "MX")].rdata == "10 mail.example.com."
    assert txt_value(got[("example.com", "TXT")].rdata) == "v=spf1 mx -all"
    assert txt_value(got[("_dmarc.example.com", "TXT")].rdata) == (
        "v=DMARC1; p=none; rua=mailto:dmarc@example.com; ruf=mailto:dmarc@example.com; fo=1"
    )


def test_no_aaaa_without_ipv6():
    """A mail host without an IPv6 address gets no AAAA record."""
    assert not any(r.type == "AAAA" for r in build_records(replace(SINGLE, ipv6="")))


def test_every_record_says_why_and_has_a_unique_key():
    """Every record, DKIM included, says why it is there, and no two records share a key."""
    records = build_records(MULTI) + dkim_records(MULTI, {"ceres": dkim_key_pair()[1]})
    assert all(r.why for r in records)
    duplicates = [key for key, n in Counter(r.key for r in records).items() if n > 1]
    assert duplicates == []


def test_host_records_once_and_each_domain_its_own_set():
    """The host's A/AAAA come once; each mail domain gets its own full record set and DKIM record."""
    records = build_records(MULTI)
    assert sum(r.type in ("A", "AAAA") for r in records) == 2
    for domain in MULTI.mail_domains:
        names = {(r.name, r.type) for r in records if r.zone == domain}
        for expected in [
            (domain, "MX"),
            (domain, "TXT"),
            (f"_dmarc.{domain}", "TXT"),
            (f"_mta-sts.{domain}", "TXT"),
            (f"mta-sts.{domain}", "CNAME"),
            (f"_smtp._tls.{domain}", "TXT"),
            (f"_submission._tcp.{domain}", "SRV"),
            (f"_imaps._tcp.{domain}", "SRV"),
            (domain, "CAA"),
            (f"autoconfig.{domain}", "CNAME"),
        ]:
            assert expected in names, f"{expected} missing for {domain}"
    dkim = dkim_records(MULTI, {"ceres": dkim_key_pair()[1]})
    assert sorted(r.name for r in dkim) == sorted(f"ceres._domainkey.{d}" for d in MULTI.mail_domains)


def test_dkim_records_before_the_key_exists_are_those_after_but_for_their_content():
    """MailDns declares them before the key exists and the settings check imports against them: the same
    records, keys and reasons as `mailctl zone` renders once the key is known."""
    without, with_key = dkim_records(MULTI), dkim_records(MULTI, {"ceres": dkim_key_pair()[1]})
    strip = lambda records: [(r.zone, r.name, r.type, r.ttl, r.why, r.key) for r in records]
    assert strip(without) == strip(with_key)
    assert [r.key for r in without] == [record_key("TXT", f"ceres._domainkey.{d}") for d in MULTI.mail_domains]
    assert {r.rdata for r in without} == {'""'}


def test_every_record_lives_in_its_own_zone():
    """Every record is named inside the zone it is declared in, never in another domain's zone."""
    for record in build_records(MULTI):
        assert record.name == record.zone or record.name.endswith("." + record.zone), record


# --- SPF (RFC 7208) ---------------------------------------------------------------------------------


def test_spf_extra_mechanisms_go_before_all():
    """Extra SPF mechanisms go after mx and before the final -all, where receivers evaluate them (RFC 7208 5.1)."""
    assert spf_value(("ip4:198.51.100.7", "include:_spf.example.net")) == "v=spf1 mx ip4:198.51.100.7 include:_spf.example.net -all"


def test_spf_counts_the_lookups_of_4_6_4():
    """SPF lookups are counted as receivers count them; ip4 and ip6 cost none (RFC 7208 4.6.4)."""
    assert spf_lookups(()) == 1
    assert spf_lookups(("ip4:198.51.100.7", "ip6:2001:db8::/32")) == 1
    assert spf_lookups(("a", "include:x.example", "exists:%{i}.x.example", "ptr")) == 5


def test_spf_needing_more_than_ten_lookups_is_refused():
    """RFC 7208 4.6.4: more than 10 lookups is a permerror at every receiver."""
    assert spf_problems(tuple(f"include:s{i}.example.net" for i in range(9))) == []
    problems = spf_problems(tuple(f"include:s{i}.example.net" for i in range(10)))
    assert any("11 DNS lookups" in p for p in problems)


def test_spf_too_long_for_one_answer_is_refused():
    """RFC 7208 3.4: keep the record within a 512-byte UDP answer (450 bytes for the record)."""
    many = tuple(f"ip4:198.51.{i}.0/24" for i in range(30))
    assert any("bytes" in p for p in spf_problems(many))


def test_spf_extra_cannot_end_the_record_itself():
    """An SPF extra holding `all` or `redirect=` is refused: the record always ends with its own -all."""
    assert spf_problems(("+all",)) and spf_problems(("redirect=_spf.example.net",))


# --- TXT strings (RFC 1035 3.3, RFC 7208 3.3, RFC 6376 3.6.2.2) ---------------------------------------


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=2000))
def test_txt_split_round_trips_for_any_length(value):
    """A TXT value of any length is split into strings of at most 255 bytes that join back to it (RFC 1035 3.3)."""
    rdata = txt_rdata(value)
    parsed = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata)
    assert all(len(s) <= 255 for s in parsed.strings)
    assert b"".join(parsed.strings).decode() == value
    assert txt_value(rdata) == value


@given(st.binary(max_size=600).map(lambda b: b.decode("latin-1")))
def test_txt_escapes_quotes_backslashes_and_control_bytes(value):
    """Quotes, backslashes, control and non-ASCII characters in a TXT value read back unchanged (RFC 1035 5.1)."""
    assert txt_value(txt_rdata(value)) == value


def test_each_published_selector_gets_its_own_record_in_every_domain_with_its_own_key():
    """A rotation publishes the next (or previous) key beside the signing one: one record per selector and
    domain, each with its selector's key, the signing one first and saying it signs."""
    rotating = replace(MULTI, dkim_published=("ceres2026",))
    old_pem, new_pem = dkim_key_pair()[1], dkim_key_pair()[1]
    records = dkim_records(rotating, {"ceres": old_pem, "ceres2026": new_pem})
    assert [r.name for r in records] == [f"{s}._domainkey.{d}" for s in ("ceres", "ceres2026") for d in MULTI.mail_domains]
    for record in records:
        pem = old_pem if record.name.startswith("ceres.") else new_pem
        assert txt_value(record.rdata) == dkim_value(pem)
        assert (record.why == DKIM_WHY) == record.name.startswith("ceres.")
    assert len({r.key for r in records}) == len(records)


def test_a_published_selectors_reason_is_its_records_comment():
    """The reason travels to the record's comment (Cloudflare, the zone file), where the policy looks."""
    rotating = replace(MULTI, dkim_selector="ceres2026", dkim_published=("ceres", "spare"),
                       dkim_reasons=(("ceres", "previous key, retire after 2026-12-03"),))
    why = {r.name.split("._domainkey.")[0]: r.why for r in dkim_records(rotating)}
    assert why == {"ceres2026": DKIM_WHY, "ceres": "Published, not signing: previous key, retire after 2026-12-03",
                   "spare": DKIM_PUBLISHED_WHY}


def test_dkim_key_is_split_into_strings_under_255():
    """A 2048-bit DKIM key is published as two strings of at most 255 bytes each (RFC 6376 3.6.2.2)."""
    record = dkim_records(SINGLE, {"ceres": dkim_key_pair()[1]})[0]
    strings = record.parsed().strings
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert txt_value(record.rdata).startswith("v=DKIM1; k=rsa; p=MII")


# --- DMARC (RFC 7489) ---------------------------------------------------------------------------------


def test_dmarc_options_appear_only_when_not_default():
    """A DMARC policy, pct, adkim and aspf that differ from the defaults are all written out (RFC 7489 6.3)."""
    value = dmarc_value(Dmarc(rua="a@example.com", ruf="b@example.com", policy="quarantine", pct=50, adkim="s", aspf="s"))
    assert value == "v=DMARC1; p=quarantine; pct=50; rua=mailto:a@example.com; ruf=mailto:b@example.com; fo=1; adkim=s; aspf=s"


def test_report_address_outside_the_domain_needs_authorization():
    """RFC 7489 7.1: <domain>._report._dmarc.<receiver> TXT "v=DMARC1" in the receiver's zone."""
    outside = replace(SINGLE, dmarc=Dmarc(rua="reports@dmarc.example.net", ruf="reports@dmarc.example.net"))
    [needed] = external_authorizations(outside)
    assert needed.name == "example.com._report._dmarc.dmarc.example.net" and txt_value(needed.rdata) == "v=DMARC1"
    assert not any(r.name == needed.name for r in build_records(outside)), "not our zone: reported, not declared"


def test_extra_domains_authorize_reports_to_the_primary_domain_themselves():
    """Extra domains report to dmarc@<primary>; the primary zone (ours) carries their authorization."""
    records = by_name_type(build_records(MULTI))
    for extra in MULTI.extra_domains:
        record = records[(f"{extra}._report._dmarc.example.com", "TXT")]
        assert record.zone == "example.com"
    assert external_authorizations(MULTI) == []


# --- MTA-STS (RFC 8461), TLS-RPT (RFC 8460), CAA (RFC 8659), SRV (RFC 6186) ---------------------------


def test_mta_sts_policy_names_the_mx_and_mode():
    """The MTA-STS policy names the mail host as its mx, in testing mode until set to enforce (RFC 8461 3.2)."""
    assert mta_sts_policy(SINGLE) == "version: STSv1\nmode: testing\nmx: mail.example.com\nmax_age: 604800\n"
    assert "mode: enforce" in mta_sts_policy(replace(SINGLE, mta_sts_mode="enforce"))


def test_mta_sts_id_changes_exactly_when_the_policy_does():
    """The _mta-sts id changes when the policy changes and only then, so senders refetch only then (RFC 8461 3.1)."""
    same = mta_sts_id(mta_sts_policy(SINGLE))
    assert same == mta_sts_id(mta_sts_policy(replace(SINGLE, ttl=300, spf_extra=("a",))))
    assert same != mta_sts_id(mta_sts_policy(replace(SINGLE, mta_sts_mode="enforce")))
    assert same.isalnum() and len(same) <= 32
    txt = by_name_type(build_records(SINGLE))[("_mta-sts.example.com", "TXT")]
    assert txt_value(txt.rdata) == f"v=STSv1; id={same}"


def test_tls_rpt_caa_and_srv():
    """TLS reports go to tls-reports@, CAA names the one CA, SRV prefers implicit TLS, no POP3 (RFC 8314 5.1)."""
    records = build_records(SINGLE)
    got = by_name_type(records)
    assert txt_value(got[("_smtp._tls.example.com", "TXT")].rdata) == "v=TLSRPTv1; rua=mailto:tls-reports@example.com"
    caa = sorted(r.rdata for r in records if r.type == "CAA")
    assert caa == ['0 iodef "mailto:postmaster@example.com"', '0 issue "letsencrypt.org"']
    # implicit TLS preferred over STARTTLS (RFC 8314 5.1): the lower priority wins
    assert got[("_submissions._tcp.example.com", "SRV")].rdata == "0 1 465 mail.example.com."
    assert got[("_submission._tcp.example.com", "SRV")].rdata == "10 1 587 mail.example.com."
    assert got[("_imaps._tcp.example.com", "SRV")].rdata == "0 1 993 mail.example.com."
    assert got[("_pop3._tcp.example.com", "SRV")].rdata == "0 0 0 ."


def test_no_caa_when_no_issuer_is_configured():
    """With no CA issuer configured, no CAA record is published at all, not even iodef."""
    assert not any(r.type == "CAA" for r in build_records(replace(SINGLE, caa_issuers=())))


# --- PTR and Cloudflare's form ------------------------------------------------------------------------


def test_reverse_records_name_the_mail_host():
    """The PTR records of the host's IPv4 and IPv6 addresses name the mail host (RFC 8601 2.7.3)."""
    v4, v6 = reverse_records(SINGLE)
    assert (v4.name, v4.rdata) == ("25.113.0.203.in-addr.arpa", "mail.example.com.")
    assert v6.name.endswith(".ip6.arpa") and v6.rdata == "mail.example.com."


@pytest.mark.parametrize(
    "name, type_, expected",
    [
        ("example.com", "MX", {"content": "mail.example.com", "priority": 10}),
        ("mail.example.com", "A", {"content": "203.0.113.25"}),
        ("mta-sts.example.com", "CNAME", {"content": "mail.example.com"}),
        ("_submission._tcp.example.com", "SRV", {"data": {"priority": 10, "weight": 1, "port": 587, "target": "mail.example.com"}}),
        ("_imap._tcp.example.com", "SRV", {"data": {"priority": 0, "weight": 0, "port": 0, "target": "."}}),
        ("example.com", "TXT", {"content": '"v=spf1 mx -all"'}),
    ],
)
def test_cloudflare_fields_follow_the_rdata(name, type_, expected):
    """Each record goes to Cloudflare with the content, priority or SRV data read from its own rdata."""
    assert cloudflare_fields(by_name_type(build_records(SINGLE))[(name, type_)]) == expected


def test_cloudflare_caa_is_structured():
    """A CAA record goes to Cloudflare as structured flags, tag and value."""
    caa = [cloudflare_fields(r) for r in build_records(SINGLE) if r.type == "CAA"]
    assert {"data": {"flags": 0, "tag": "issue", "value": "letsencrypt.org"}} in caa


# --- DANE ------------------------------------------------------------------------------------------------


def test_a_tlsa_pins_the_served_key_on_every_dane_port_as_openssl_computes_it(tmp_path):
    """With dane, 25, 465, 587 and 993 each get TLSA 3 1 1 with the SHA-256 of the certificate's key, as openssl says."""
    certificate, _ = self_signed("mail.example.com")
    (tmp_path / "cert.pem").write_text(certificate)
    spki = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "cert.pem"), "-noout", "-pubkey"],
                          check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=spki, check=True,
                         capture_output=True).stdout
    expected = hashlib.sha256(der).hexdigest()
    assert spki_sha256(certificate) == expected == spki_sha256(spki.decode()), "a certificate and its key pin alike"
    records = [r for r in build_records(replace(SINGLE, tlsa_spki_sha256=(expected,))) if r.type == "TLSA"]
    assert sorted((r.name, r.rdata) for r in records) == sorted(
        (f"_{port}._tcp.mail.example.com", f"3 1 1 {expected}") for port in (25, 465, 587, 993))
    assert {cloudflare_fields(r)["data"]["certificate"] for r in records} == {expected}


def test_no_tlsa_without_dane_and_a_next_key_adds_records_without_changing_the_served_ones():
    """No TLSA unless a key is pinned; pinning a second key adds its records and leaves the first key's alone."""
    assert not any(r.type == "TLSA" for r in build_records(SINGLE))
    one, two = "a" * 64, "b" * 64
    first = {r.key: r for r in build_records(replace(SINGLE, tlsa_spki_sha256=(one,))) if r.type == "TLSA"}
    both = {r.key: r for r in build_records(replace(SINGLE, tlsa_spki_sha256=(two, one))) if r.type == "TLSA"}
    assert len(first) == 4 and len(both) == 8 and all(both[key] == record for key, record in first.items())


# --- DNSSEC: the key Cloudflare signs with, the DS the registrar gets ----------------------------------


def test_the_reported_ds_is_the_digest_of_the_reported_dnskey():
    """The DS reported for a signed zone is the SHA-256 digest of its own DNSKEY 257 3 13 (RFC 4034 5.1.4)."""
    import base64

    import dns.dnssec
    import dns.name
    from cryptography.hazmat.primitives.asymmetric import ec

    from components.builders.dnssec import zone_key_report

    report = zone_key_report("example.com", ec.generate_private_key(ec.SECP256R1()).public_key())
    dnskey = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, f"257 3 13 {report['publicKey']}")
    ds = dns.dnssec.make_ds(dns.name.from_text("example.com."), dnskey, "SHA256")
    assert report["ds"] == f"example.com. 3600 IN DS {ds.key_tag} 13 2 {ds.digest.hex().upper()}"
    assert (report["keyTag"], report["digest"]) == (ds.key_tag, ds.digest.hex().upper())
    assert (report["flags"], report["algorithm"], report["digestType"], report["keyType"]) == (257, "13", "2", "ECDSAP256SHA256")
    assert len(base64.b64decode(report["publicKey"])) == 64, "P-256: the two 32-byte coordinates (RFC 6605 4)"


def test_the_exported_ds_takes_cloudflares_numbers_in_either_form():
    """dsRecords holds whole numbers and an upper-case digest whether Cloudflare gives floats or text."""
    from components.builders.dnssec import ds_export

    line = "example.com. 3600 IN DS 2371 13 2 abcd"
    assert ds_export(line, 2371.0, "13", "2", "abcd") == {"ds": line, "keyTag": 2371, "algorithm": 13,
                                                           "digestType": 2, "digest": "ABCD"}


@pytest.mark.parametrize("entry, words", [
    ({"keyTag": 2371, "algorithm": 13, "digestType": 2}, "has no digest"),
    ("not a mapping", "has no keyTag, algorithm, digestType, digest"),
    ({"keyTag": 2371, "algorithm": 13, "digestType": 2, "digest": "not hex"}, "is not a DS record"),
    ({"keyTag": 70000, "algorithm": 13, "digestType": 2, "digest": "AB"}, "is not a DS record"),
])
def test_a_ds_entry_that_is_not_a_ds_record_is_refused_saying_why(entry, words):
    """An entry of dsRecords that dnspython cannot read as a DS is refused, naming its domain and what is wrong."""
    from components.builders.dnssec import ds_record

    with pytest.raises(ValueError, match=f"the DS of example.com {words}"):
        ds_record("example.com", entry)
