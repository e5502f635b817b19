"""DANE (`dane`): which stacks may pin their key, the TLSA records they get, and that the graph publishes them
before the host serves the key they pin."""

from __future__ import annotations

import subprocess

import pytest

from components.builders.dns_records import spki_sha256
from components.builders.shell_script import template
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


def test_dane_is_refused_with_mailcow_whose_acme_makes_its_own_keys(scratch_project, provided):
    """dane with mailcow is refused, naming the key and why: mailcow gets and renews its own certificate."""
    certificate, key = provided
    config, _ = split_secrets(dane_config(certificate, key, **{
        "ceres-mail:mailStack": "mailcow", "ceres-mail:vmMemoryMib": 8192, "ceres-mail:vmDiskGib": 40}))
    error = refused(scratch_project, config)
    assert any(problem == "dane" and "is not available with mailStack mailcow" in message
               for problem, message in error.problems), error.problems


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


# --- dane with ACME: a key the stack owns ---------------------------------------------------------------------

KEY = "tls:index/privateKey:PrivateKey"


def test_with_acme_the_stack_owns_the_key_and_its_tlsa_comes_before_the_tls_stage(scratch_project):
    """dane with ACME: the stack makes an ECDSA P-256 key (protected like the stack), TLSA pins it on every DANE
    port, and the tls stage, which gets it on stdin to have it certified, waits for all of them."""
    config, secrets = split_secrets(stack_config("prod", {"ceres-mail:dane": True}))
    plan = record(scratch_project("owned", config), "owned", known_outputs=True, secrets=secrets)
    [key] = [r for r in plan.of_type(KEY) if r.name == "ceres-mail-tls-key-tls1"]
    assert (key.inputs["algorithm"], key.inputs["ecdsaCurve"], key.options.get("protect")) == ("ECDSA", "P256", True)
    pinned = spki_sha256(plan.outputs["tlsPublicKeys"]["tls1"])
    tlsa = [r for r in plan.of_type(DNS_RECORD) if r.inputs["type"] == "TLSA"]
    assert sorted((r.name, r.inputs["data"]["certificate"]) for r in tlsa) == sorted(
        (f"ceres-mail-dns-tlsa-_{port}._tcp.mail.example.com-tls1", pinned) for port in DANE_PORTS)
    tls_stage = next(r for r in plan.resources if r.name.endswith("-install-tls"))
    assert {r.urn for r in tlsa} <= set(tls_stage.dependencies)
    assert "TLS_MODE=acme-stack-key" in tls_stage.inputs["create"]
    assert "SECRETS=(TLS_PRIVATE_KEY)" in tls_stage.inputs["create"]


def test_without_dane_acme_keeps_certbots_own_key_and_no_key_is_made(plans):
    """Without dane nothing changes for ACME: certbot's lineage, no stack key, no renewal program of ours."""
    tls_stage = next(r for r in plans["prod"].resources if r.name.endswith("-install-tls"))
    assert "TLS_MODE=acme\n" in tls_stage.inputs["create"] and "RENEW_TOOL" not in tls_stage.inputs["create"]
    assert not [r for r in plans["prod"].of_type(KEY) if "-tls-key-" in r.name]


def test_the_hosts_renewal_program_passes_shellcheck(tmp_path):
    """The renewal program the tls stage writes for a stack key is, as rendered on the host, clean for shellcheck."""
    header = ("CERT_NAME=ceres-mail\nCERT_DIR=/etc/ceres-mail/tls\nCERT_NAMES=(mail.example.com mta-sts.example.com)\n"
              "ACME_DIRECTORY=https://acme.example.net/dir\nACME_EMAIL=postmaster@example.com\nTLS_MODE=none\n")
    script = tmp_path / "render.sh"
    script.write_text(header + template("native/tls_stack_key.sh") + "render_renewal\n")
    rendered = subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True).stdout
    assert "names=(mail.example.com mta-sts.example.com )" in rendered and "lineage=ceres-mail\n" in rendered
    checked = subprocess.run(["shellcheck", "--shell=bash", "-"], input=rendered, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
