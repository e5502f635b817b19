"""The policy pack under the real CrossGuard refuses a bad stack with exactly its mandatory violations.

A stack whose settings are valid cannot hold these mistakes (settings refuse a 1024-bit DKIM key and SSH
open to all), so each bad stack is the real program with a Pulumi resource transform standing for the
edit that broke it: the engine and the pack see what such a program would register. The gateway VPS's
SSH sources have one source, the gateway's inputs, so that mistake is made there (the program runs in the
test's process): its stage and its component get it alike."""

from __future__ import annotations

import pulumi

from tests.conftest import open_the_gateway_vps_to
from tests.engine.harness import run_engine
from tests.engine.standins.remote_commands import RUN_LOG

SSH_FROM_ANYWHERE = {"type": "in", "action": "ACCEPT", "proto": "tcp", "dport": "22", "comment": "ssh"}


def _changed(args: pulumi.ResourceTransformArgs, **props) -> pulumi.ResourceTransformResult:
    return pulumi.ResourceTransformResult({**args.props, **props}, args.opts)


def proxied_mail_host(args):
    if args.type_ == "cloudflare:index/dnsRecord:DnsRecord" and args.props.get("type") == "A":
        return _changed(args, proxied=True)


def ssh_open_to_all(args):
    if args.type_ == "proxmoxve:firewall/rulesLegacy:RulesLegacy":
        return _changed(args, rules=[*args.props["rules"], SSH_FROM_ANYWHERE])


def weak_dkim_key(args):
    if args.type_ == "tls:index/privateKey:PrivateKey" and args.name.endswith("-dkim-key-ceres"):
        return _changed(args, rsaBits=1024)


def plain_cloudflare_token(args):
    if args.type_ == "pulumi:providers:cloudflare":
        return _changed(args, apiToken="plain-text-cloudflare-token")


def _mandatory(run) -> list[tuple[str, str]]:
    return sorted((v["policy"], v["urn"].rsplit("::", 1)[-1]) for v in run.violations if v["level"] == "mandatory")


def test_a_bad_stack_fails_with_exactly_its_mandatory_violations(engine_project):
    """Under CrossGuard a bad stack fails the preview with exactly its mandatory violations, each on its resource."""
    project = engine_project("staging")
    stack = project.stack("staging", transforms=(proxied_mail_host, ssh_open_to_all, weak_dkim_key))
    run = run_engine(stack.preview, policy_packs=[project.policy_pack])
    assert not run.ok, "a mandatory violation fails the preview"
    assert _mandatory(run) == [
        ("dkim-key-strong", "ceres-mail-dkim-key-ceres"),
        ("dns-record-not-proxied", "ceres-mail-dns-a-mail.staging.example.net"),
        ("ssh-not-open-to-the-world", "ceres-mail-vm-firewall-rules"),
    ]


def test_a_gateway_vps_open_to_all_is_refused_on_the_gateway_before_its_stage_runs(engine_project, monkeypatch):
    """Under CrossGuard a gateway VPS whose SSH answers 0.0.0.0/0 fails the preview on the gateway, and an up
    without a preview stops before the VPS's stage runs."""
    open_the_gateway_vps_to(monkeypatch, "0.0.0.0/0")
    project = engine_project("home")
    stack = project.stack("home")
    run = run_engine(stack.preview, policy_packs=[project.policy_pack])
    assert not run.ok, "a mandatory violation fails the preview"
    assert _mandatory(run) == [("ssh-not-open-to-the-world", "ceres-mail-gateway")]
    [message] = [v["message"] for v in run.violations if v["policy"] == "ssh-not-open-to-the-world"]
    assert "the gateway VPS opens SSH (22) to the whole internet" in message
    # the component is judged when it registers, before its children: the Automation API's up skips the preview
    up = run_engine(stack.up, policy_packs=[project.policy_pack])
    assert not up.ok and _mandatory(up) == [("ssh-not-open-to-the-world", "ceres-mail-gateway")]
    ran = project.world / "command" / RUN_LOG
    assert not ran.exists() or "-gateway-install-vps" not in ran.read_text(), "the VPS's stage never ran"


def test_a_plain_text_credential_is_caught_under_crossguard(engine_project):
    """The engine hides nothing: a token passed in clear reaches the pack as plain text and fails it."""
    project = engine_project("staging")
    stack = project.stack("staging", transforms=(plain_cloudflare_token,))
    run = run_engine(stack.preview, policy_packs=[project.policy_pack])
    assert not run.ok
    assert _mandatory(run) == [("secret-inputs-are-secret", "ceres-mail-provider-cloudflare")]
    assert "apiToken is plain text" in run.output
    assert "plain-text-cloudflare-token" not in run.output


def keycloak_on_a_port_the_host_does_not_serve(args):
    if args.type_ == "keycloak:index/realm:Realm":
        # the block as the program gives it (a dict; only its password is an Output), one value changed
        return _changed(args, smtpServer={**args.props["smtpServer"], "port": "2525"})


def test_ceres_and_keycloak_consistency_is_judged_under_crossguard(engine_project):
    """The realm's SMTP block is plain under CrossGuard as offline: a port the mail host does not serve is
    refused, and so is Keycloak submitting otherwise than CERES."""
    project = engine_project("staging")
    stack = project.stack("staging", transforms=(keycloak_on_a_port_the_host_does_not_serve,))
    run = run_engine(stack.preview, policy_packs=[project.policy_pack])
    assert not run.ok
    # (the engine prefixes each message with the policy's description)
    messages = [v["message"].splitlines()[-1] for v in run.violations if v["policy"] == "ceres-secret-consistent"]
    assert "Keycloak realm ceres: port 2525 with STARTTLS: RFC 6409 STARTTLS submission is port 587" in messages, messages
    # CERES is read from the stack's ceresSmtp output, which CrossGuard shows on the root Stack resource
    assert any(m.startswith("CERES and Keycloak submit differently") and "ceresSmtp): mail.staging.example.net:587" in m
               for m in messages), messages
