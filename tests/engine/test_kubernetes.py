"""The real pulumi-kubernetes provider against a real k3s: the Secret CERES reads, and its rollout."""

from __future__ import annotations

import base64

import pytest
from pulumi.automation import ConfigValue

from components.builders.ceres_env import PASSWORD_KEY
from tests.engine.fixtures import CERES_DEPLOYMENT
from tests.engine.harness import run_engine

NAMESPACE = "ceres-staging"
ANNOTATION = "ceres-mail/smtp-checksum"
CERES_KEYS = {"CERES_MAIL_FROM", "CERES_MAIL_MODE", "CERES_SMTP_HOST", "CERES_SMTP_PASS", "CERES_SMTP_PORT",
              "CERES_SMTP_STARTTLS", "CERES_SMTP_TLS", "CERES_SMTP_USER"}


@pytest.fixture
def ceres_stack(engine_project, k3s):
    """staging with `ceresDeployment` set, after its first up (the engine_project fixture puts k3s back as
    CERES had it afterwards)."""
    project = engine_project("staging")
    stack = project.stack("staging", config={"ceresDeployment": CERES_DEPLOYMENT})
    first = run_engine(stack.up)
    assert first.ok, first.output[-3000:]
    return project, stack


def secret_data(k3s) -> dict[str, str]:
    secret = k3s.get("secret", "ceres-smtp", NAMESPACE)
    assert secret is not None, "the Secret exists"
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def rollout_annotation(k3s) -> str | None:
    deployment = k3s.get("deployment", CERES_DEPLOYMENT, NAMESPACE)
    return (deployment["spec"]["template"]["metadata"].get("annotations") or {}).get(ANNOTATION)


def mailbox_password_urn(stack) -> str:
    return next(r["urn"] for r in stack.export_stack().deployment["resources"]
                if r["type"] == "random:index/randomPassword:RandomPassword" and r["urn"].endswith("-mailbox-password"))


def test_the_secret_holds_exactly_the_ceres_keys(ceres_stack, k3s):
    """In the cluster the Secret holds exactly CERES's variables, its password the one the stack outputs as secret."""
    project, stack = ceres_stack
    data = secret_data(k3s)
    assert set(data) == CERES_KEYS
    assert data["CERES_MAIL_MODE"] == "external"
    assert (data["CERES_SMTP_HOST"], data["CERES_SMTP_PORT"]) == ("mail.staging.example.net", "587")
    assert (data["CERES_SMTP_STARTTLS"], data["CERES_SMTP_TLS"]) == ("true", "false")
    assert data["CERES_SMTP_USER"] == data["CERES_MAIL_FROM"] == "no-reply@staging.example.net"
    assert len(data[PASSWORD_KEY]) == 32
    assert data[PASSWORD_KEY] == stack.outputs()["ceresSmtpPass"].value
    assert stack.outputs()["ceresSmtpPass"].secret


def test_the_rollout_annotation_changes_with_the_password_and_only_then(ceres_stack, k3s):
    """CERES's pods roll in the same up when the mailbox password changes, and not for a change CERES does not read."""
    project, stack = ceres_stack
    first = rollout_annotation(k3s)
    assert first and len(first) == 64

    # a change CERES does not read: the Secret and the annotation stay
    stack.set_config("ceres-mail:mailFromName", ConfigValue("CERES Staging"))
    other = run_engine(stack.up)
    assert other.ok, other.output[-3000:]
    assert rollout_annotation(k3s) == first
    assert [urn for urn in other.changed() if "kubernetes:" in urn] == []

    # a new mailbox password: the Secret and the annotation follow in the same up
    old_password = secret_data(k3s)[PASSWORD_KEY]
    rotated = run_engine(stack.up, replace=[mailbox_password_urn(stack)])
    assert rotated.ok, rotated.output[-3000:]
    assert secret_data(k3s)[PASSWORD_KEY] != old_password
    assert rollout_annotation(k3s) not in (None, first)


def test_a_second_up_changes_nothing_in_the_cluster(ceres_stack, k3s):
    """A second `pulumi up` changes nothing: the Secret in the cluster is not even rewritten."""
    project, stack = ceres_stack
    before = k3s.get("secret", "ceres-smtp", NAMESPACE)["metadata"]["resourceVersion"]
    second = run_engine(stack.up, expect_no_changes=True)
    assert second.ok, second.output[-3000:]
    assert second.changed() == {}
    assert k3s.get("secret", "ceres-smtp", NAMESPACE)["metadata"]["resourceVersion"] == before
