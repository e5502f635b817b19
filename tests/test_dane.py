"""DANE (`dane`): which stacks may pin their key, the TLSA records they get, and that the graph publishes them
before the host serves the key they pin."""

from __future__ import annotations

import pytest

from components.builders.dns_records import spki_sha256
from mailctl.recorder import record
from tests.conftest import SECURE, refused, self_signed, split_secrets, stack_config

DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
DANE_PORTS = (25, 465, 587, 993)


@pytest.fixture(scope="module")
def provided():
    """A certificate (and its key) for prod's mail host and its MTA-STS host."""
    return self_signed("mail.example.com", "mta-sts.example.com", days=30)


def dane_config(certificate: str, key: str, **edits) -> dict:
    return stack_config("prod", {"ceres-mail:dane": True, "ceres-mail:tlsMode": "provided",
                                 "ceres-mail:tlsCertificate": certificate, "ceres-mail:tlsPrivateKey": key, **edits})


@pytest.mark.parametrize("case, edits, words", [
    ("with ACME", {"ceres-mail:tlsMode": "acme", "ceres-mail:tlsCertificate": None, "ceres-mail:tlsPrivateKey": None},
     "needs tlsMode provided"),
    ("with mailcow", {"ceres-mail:mailStack": "mailcow", "ceres-mail:vmMemoryMib": 8192, "ceres-mail:vmDiskGib": 40},
     "is not available with mailStack mailcow"),
])
def test_dane_is_refused_where_the_served_key_is_not_known_ahead(scratch_project, provided, case, edits, words):
    """dane is refused, naming the key and why, where the stack cannot know the served key before serving it."""
    certificate, key = provided
    config, _ = split_secrets(dane_config(certificate, key, **edits))
    error = refused(scratch_project, config)
    assert any(problem == "dane" and words in message for problem, message in error.problems), (case, error.problems)


def test_the_tlsa_records_pin_the_provided_key_and_come_before_the_tls_stage(scratch_project, provided):
    """With dane, each DANE port's TLSA pins the provided certificate's key, and the tls stage waits for all of them."""
    certificate, key = provided
    config, secrets = split_secrets(dane_config(certificate, key))
    plan = record(scratch_project("dane", config), "dane", secrets=secrets)
    tlsa = [r for r in plan.of_type(DNS_RECORD) if r.inputs["type"] == "TLSA"]
    assert sorted(r.inputs["name"] for r in tlsa) == sorted(f"_{port}._tcp.mail.example.com" for port in DANE_PORTS)
    assert {(r.inputs["data"]["usage"], r.inputs["data"]["selector"], r.inputs["data"]["matchingType"],
             r.inputs["data"]["certificate"]) for r in tlsa} == {(3, 1, 1, spki_sha256(certificate))}
    tls_stage = next(r for r in plan.resources if r.name.endswith("-install-tls"))
    assert {r.urn for r in tlsa} <= set(tls_stage.dependencies), "the key is served only once its TLSA is published"
    mail_stage = next(r for r in plan.resources if r.name.endswith("-install-mail"))
    assert not {r.urn for r in tlsa} & set(mail_stage.dependencies), "only the stage that serves the key waits"


def test_without_dane_no_tlsa_and_the_tls_stage_waits_for_no_record(plans):
    """A stack without dane publishes no TLSA, and its tls stage waits for nothing DNS but its names."""
    for plan in plans.values():
        assert not [r for r in plan.of_type(DNS_RECORD) if r.inputs["type"] == "TLSA"]


def test_the_secret_key_never_reaches_a_record(scratch_project, provided):
    """The TLSA carries a digest of the public key: the provided private key appears in no record or output."""
    certificate, key = provided
    config, secrets = split_secrets(dane_config(certificate, key))
    assert config["ceres-mail:tlsPrivateKey"] == SECURE
    plan = record(scratch_project("dane", config), "dane", secrets=secrets)
    body = key.split("-----")[2].strip().splitlines()[1]
    assert body not in plan.to_json()
