"""The TLS key DANE pins, rolled over in three steps (docs/dns.md, TLS key rollover): on the recorded plans,
and through `mailctl tls rotate`."""

from __future__ import annotations

import base64
import datetime

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from components.builders.dns_records import spki_sha256
from components.settings.values import PublishedSelector
from mailctl.cli import main
from mailctl.diff import diff_plans, transition_problems
from mailctl.recorder import record
from mailctl.rotation import TLS, Stand, next_step
from tests.conftest import PROJECT_DIR, stack_config

DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
KEY = "tls:index/privateKey:PrivateKey"
COMMAND = "command:remote:Command"
RANDOM = ("random:index/randomPassword:RandomPassword", "random:index/randomBytes:RandomBytes")
TODAY = datetime.date(2026, 11, 26)
NEXT = {"selector": "tls2", "reason": "next key, published 2026-11-26; served from step 2 of the rollover"}
PREVIOUS = {"selector": "tls1", "reason": "previous key, served until 2026-11-26; retire on 2026-11-27 or later"}

#: the stack's keys at each step of a rollover from tls1 to tls2, on prod with dane and its own directory
STEPS = {
    "before": {},
    "published": {"ceres-mail:tlsPublishedKeys": [NEXT]},
    "switched": {"ceres-mail:tlsKeySelector": "tls2", "ceres-mail:tlsPublishedKeys": [PREVIOUS]},
    "retired": {"ceres-mail:tlsKeySelector": "tls2"},
}
DANE_WITH_LDAP = {"ceres-mail:dnssec": True, "ceres-mail:dane": True, "ceres-mail:ldapMode": "local",
                  "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"]}


def step_config(step: str) -> dict:
    return stack_config("prod", {**DANE_WITH_LDAP, **STEPS[step]})


@pytest.fixture(scope="module")
def rollover(tmp_path_factory):
    """Each step's plan as after an apply, with every command's inputs before redaction; the stack's random
    secrets held fixed, as the state holds them from one up to the next (the keys are, by resource name)."""
    projects = {}
    for step in STEPS:  # one stack, prod, as it stands at each step
        projects[step] = tmp_path_factory.mktemp(step)
        (projects[step] / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
        (projects[step] / "Pulumi.prod.yaml").write_text(yaml.safe_dump({"config": step_config(step)}))
    first = record(projects["before"], "prod")
    fixed = {r.name: {"result": f"fixed-{r.name}"[-32:], "base64": base64.b64encode(r.name.encode()).decode(),
                      "hex": r.name.encode().hex()} for r in first.resources if r.type in RANDOM}
    steps = {}
    for step, project in projects.items():
        raw: dict = {}
        plan = record(project, "prod", known_outputs=True, mock_overrides=fixed,
                      raw_inputs_hook=lambda urn, type_, inputs, raw=raw: raw.__setitem__(urn, inputs))
        steps[step] = (plan, raw)
    return steps


def commands(raw: dict) -> dict[str, tuple[str, str]]:
    """Every remote command of a step, by name: (its script, its standard input), what makes it run again."""
    return {urn.rsplit("::", 1)[1]: (inputs["create"], inputs.get("stdin") or "")
            for urn, inputs in raw.items() if f"{COMMAND}::" in urn}


def tlsa_of(plan) -> dict[str, dict]:
    return {r.name: r for r in plan.of_type(DNS_RECORD) if r.inputs["type"] == "TLSA"}


def served_key(raw: dict) -> str:
    """The SHA-256 of the public half of the key the tls stage gets on its standard input."""
    stdin = commands(raw)["ceres-mail-server-install-tls"][1]
    sent = dict(line.split("=", 1) for line in stdin.splitlines())
    key = serialization.load_pem_private_key(base64.b64decode(sent["TLS_PRIVATE_KEY"]), password=None)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki_sha256(pem.decode())


def test_a_published_key_is_a_key_of_its_own_with_its_tlsa_and_the_host_serves_only_the_other(rollover):
    """Step 1: tls2 is a protected key of its own with its own TLSA and reason; the tls stage waits for all, serves tls1."""
    plan, raw = rollover["published"]
    keys = {r.name: r for r in plan.of_type(KEY) if "-tls-key-" in r.name}
    assert sorted(keys) == ["ceres-mail-tls-key-tls1", "ceres-mail-tls-key-tls2"]
    assert all((k.inputs["algorithm"], k.inputs["ecdsaCurve"], k.options.get("protect")) == ("ECDSA", "P256", True)
               for k in keys.values())
    pins = {name: spki_sha256(pem) for name, pem in plan.outputs["tlsPublicKeys"].items()}
    tlsa = tlsa_of(plan)
    assert {(r.name.rsplit("-", 1)[1], r.inputs["data"]["certificate"]) for r in tlsa.values()} == set(pins.items())
    assert len(tlsa) == 8, "four ports, two keys"
    comments = {r.inputs["comment"] for r in tlsa.values() if r.name.endswith("-tls2")}
    assert comments == {f"Published, not served on {s}: {NEXT['reason']}"
                        for s in ("smtp (25)", "submissions (465)", "submission (587)", "imaps (993)")}
    tls_stage = next(r for r in plan.of_type(COMMAND) if r.name.endswith("-install-tls"))
    assert {r.urn for r in tlsa.values()} <= set(tls_stage.dependencies), "the stage serves a key only after every TLSA"
    assert served_key(raw) == pins["tls1"]


def test_no_stage_runs_again_but_the_tls_stage_at_the_switch(rollover):
    """Steps 1 and 3 change no command's script or stdin; step 2 changes only the tls stage's stdin (tls2), not ldap's."""
    before, one, two, three = (commands(raw) for _, raw in rollover.values())
    assert one == before, "publishing tls2 runs nothing on the host"
    assert {name for name in two if two[name] != one[name]} == {"ceres-mail-server-install-tls"}
    assert two["ceres-mail-server-install-tls"][0] == one["ceres-mail-server-install-tls"][0], "the same script"
    assert "ceres-mail-server-install-ldap" in two
    assert served_key(rollover["switched"][1]) == spki_sha256(rollover["switched"][0].outputs["tlsPublicKeys"]["tls2"])
    assert three == two, "retiring tls1 runs nothing on the host"


def test_each_step_changes_only_the_keys_and_their_records(rollover):
    """`--diff`: step 1 adds tls2 and its TLSA, step 2 changes TLSA comments only, step 3 removes tls1's; none refused."""
    plans = [plan for plan, _ in rollover.values()]
    added = diff_plans(plans[0], plans[1])
    assert {(c.action, c.type) for c in added} == {("added", KEY), ("added", DNS_RECORD)}
    assert sorted(c.name for c in added if c.type == KEY) == ["ceres-mail-tls-key-tls2"]
    switched = diff_plans(plans[1], plans[2])
    assert {(c.action, c.type) for c in switched} == {("changed", DNS_RECORD)} and len(switched) == 8
    assert all(set(c.inputs) == {"comment"} for c in switched)
    retired = diff_plans(plans[2], plans[3])
    assert {(c.action, c.name.rsplit("-", 1)[1]) for c in retired} == {("removed", "tls1")} and len(retired) == 5
    assert [transition_problems(a, b) for a, b in zip(plans, plans[1:])] == [[], [], []]


@pytest.mark.parametrize("in_use, published, title, config", [
    ("tls1", (), "step 1 of 3: publish tls2 beside tls1 (not served yet)", {"tlsPublishedKeys": [NEXT]}),
    ("tls1", (PublishedSelector(NEXT["selector"], NEXT["reason"]),), "step 2 of 3: tls2 is served, tls1 stays published",
     {"tlsKeySelector": "tls2", "tlsPublishedKeys": [PREVIOUS]}),
    ("tls2", (PublishedSelector(PREVIOUS["selector"], PREVIOUS["reason"]),),
     "step 3 of 3: retire tls1 (tls2 is served), due on 2026-11-27 (in 1 day)", {"tlsPublishedKeys": []}),
])
def test_each_step_of_a_rollover_follows_from_where_the_stack_stands(in_use, published, title, config):
    """The next step (publish, serve, retire) follows from tlsKeySelector and tlsPublishedKeys, with its reason."""
    step = next_step(Stand(TLS, in_use, published, "tls2", 300, TODAY, "mail.example.com"))
    assert (step.title, step.config) == (title, config)


def test_the_switch_waits_for_the_ttl_and_both_tlsa_and_the_retirement_for_a_green_verify():
    """Step 2 waits the TTL until verify finds both TLSA on every port; step 3 a day and verify's dane rows."""
    switch = next_step(Stand(TLS, "tls1", (PublishedSelector("tls2"),), "tls2", 300, TODAY, "mail.example.com"))
    assert any("TTL (300 s)" in condition for condition in switch.before)
    assert any("dns TLSA _<port>._tcp.mail.example.com ok for tls2's key" in condition for condition in switch.before)
    retire = next_step(Stand(TLS, "tls2", (PublishedSelector("tls1"),), "tls2", 300, TODAY))
    assert any("dane <port> tlsa row ok" in condition for condition in retire.before)


def test_tls_rotate_write_takes_a_stack_through_the_three_steps(tmp_path, capsys):
    """`tls rotate --write` takes a dane stack through the steps, unprotecting tls1's key before step 3, then says done."""
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    stack_file = tmp_path / "Pulumi.prod.yaml"
    stack_file.write_text((PROJECT_DIR / "Pulumi.prod.yaml").read_text() + "  ceres-mail:dane: true\n")
    seen, outs = [], []
    for _ in range(3):
        assert main(["-C", str(tmp_path), "tls", "rotate", "--to", "tls2", "--write"]) == 0
        outs.append(capsys.readouterr().out)
        config = yaml.safe_load(stack_file.read_text())["config"]
        seen.append((config.get("ceres-mail:tlsKeySelector", "tls1"),
                     [e["selector"] for e in config["ceres-mail:tlsPublishedKeys"]]))
    assert seen == [("tls1", ["tls2"]), ("tls2", ["tls1"]), ("tls2", [])]
    urn = ("urn:pulumi:prod::ceres-mail::ceres-mail:index:Platform$tls:index/privateKey:PrivateKey"
           "::ceres-mail-tls-key-tls1")
    assert f"pulumi state unprotect --stack prod '{urn}'" in outs[2]
    assert outs[2].index("state unprotect") < outs[2].index("config rm")
    assert all("mailctl tls rotate again for the next step" in out for out in outs)
    assert main(["-C", str(tmp_path), "tls", "rotate", "--to", "tls2"]) == 0
    assert "the rotation is complete" in capsys.readouterr().out


def test_tls_rotate_is_refused_where_the_stack_owns_no_tls_key(tmp_path, capsys):
    """Without dane (or with a provided certificate) there is no stack key to roll over: exit 2, saying why."""
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.prod.yaml").write_text((PROJECT_DIR / "Pulumi.prod.yaml").read_text())
    assert main(["-C", str(tmp_path), "tls", "rotate", "--to", "tls2"]) == 2
    err = capsys.readouterr().err
    assert "does not own its TLS key" in err and "dane: true and tlsMode: acme" in err and "Traceback" not in err


def test_zone_and_verify_expect_the_tlsa_of_every_key_given_each_with_its_comment(rollover, scratch_project):
    """`mailctl zone` and `verify` expect each given key's TLSA, served or published, exactly as MailDns declares it."""
    from mailctl.zone import owned_tlsa_records, stack_settings

    plan, _ = rollover["published"]
    inputs = stack_settings(scratch_project("prod", step_config("published")), "prod").dns_inputs
    records = owned_tlsa_records(inputs, plan.outputs["tlsPublicKeys"])
    declared = {r.name.removeprefix("ceres-mail-dns-"): (r.inputs["comment"], r.inputs["data"]["certificate"])
                for r in tlsa_of(plan).values()}
    assert {r.key: (r.why, r.parsed().cert.hex()) for r in records} == declared
    only_served = owned_tlsa_records(inputs, {"tls1": plan.outputs["tlsPublicKeys"]["tls1"]})
    assert {r.key.rsplit("-", 1)[1] for r in only_served} == {"tls1"}, "a key not given is left out"
