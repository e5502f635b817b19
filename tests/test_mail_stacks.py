"""The mail stack as a typed choice (components/builders/mail_stacks.py), and the platform built from the
settings' derived inputs: no branch on the stack's name in the components, no key copied one by one."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest
import yaml

from components.builders.mail_stacks import STACKS, MailcowStack, NativeStack
from components.builders.mailcow import CONF_SECRETS
from components import features
from components.features import FEATURES
from components.features.directory import Directory
from components.platform import merged
from components.settings import Settings
from mailctl.recorder import record
from mailctl.zone import stack_settings
from tests.conftest import PROJECT_DIR, stack_config

COMPONENTS = PROJECT_DIR / "components"


def settings_of(scratch_project, **changes) -> tuple[Settings, Path]:
    config = {**stack_config("prod"), **{f"ceres-mail:{key}": value for key, value in changes.items()}}
    project = scratch_project("choice", config)
    return stack_settings(project, "choice"), project


def test_mail_stack_takes_the_names_of_the_stacks_table():
    """mailStack accepts exactly the stacks in the stacks table: native and mailcow."""
    assert typing.get_args(Settings.model_fields["mail_stack"].annotation) == tuple(STACKS)
    assert STACKS == {"native": NativeStack, "mailcow": MailcowStack}


@pytest.mark.parametrize("name, kind, stages, after, generated", [
    ("native", NativeStack, ["packages", "tls", "mail"], ["webmail", "fail2ban"], {"ROUNDCUBE_DES_KEY"}),
    ("mailcow", MailcowStack, ["docker", "release", "mailcow", "configure"], [], set(CONF_SECRETS)),
])
def test_the_settings_choose_a_stack_with_its_stages_secrets_and_sizes(scratch_project, name, kind, stages, after,
                                                                       generated):
    """mailStack picks its stack, with its install stages, the stages after, its generated secrets and default size."""
    settings, _ = settings_of(scratch_project, mailStack=name, ipv6Address="", ipv6Gateway="")
    stack = settings.mail_stack_choice
    assert type(stack) is kind and stack.name == name
    assert [stage.name for stage in stack.stages()] == stages
    assert [stage.name for stage in stack.after_install()] == after
    assert set(stack.generated_secrets) == generated
    assert settings.vm_size == kind.default_size
    assert settings.server_inputs.mail_stack == stack


def test_each_generated_secret_is_a_random_password_of_the_server(scratch_project):
    """Each secret mailcow needs is a random password under the server, of its declared length, protected in prod."""
    _, project = settings_of(scratch_project, mailStack="mailcow", ipv6Address="", ipv6Gateway="")
    plan = record(project, "choice")
    passwords = {r.name: r for r in plan.of_type("random:index/randomPassword:RandomPassword")}
    server = next(r for r in plan.resources if r.type == "ceres-mail:mail:Server")
    for secret in MailcowStack.generated_secrets.values():
        password = passwords[f"ceres-mail-server-mailcow-{secret.label}"]
        assert password.parent == server.urn and password.inputs["length"] == secret.length
        assert password.options["protect"] is True, "prod protects what it generates"


def test_a_stack_below_its_floor_is_refused_with_the_floor_of_its_class(scratch_project):
    """A VM with less memory than its mail stack's minimum is refused, naming that stack's minimum."""
    from components.settings import SettingsError

    floor = MailcowStack.minimum_size.memory_mib
    with pytest.raises(SettingsError) as caught:
        settings_of(scratch_project, mailStack="mailcow", vmMemoryMib=floor - 1024)
    assert f"ceres-mail:vmMemoryMib: {floor - 1024} MiB is below the mailcow stack's minimum of {floor} MiB" in str(caught.value)


def test_the_size_keys_describe_the_defaults_of_every_stack():
    """Written from the stacks' own sizes into the schema, so Pulumi.yaml and the README follow them."""
    declared = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text())["config"]
    for key, size in (("vmCores", "cores"), ("vmMemoryMib", "memory_mib"), ("vmDiskGib", "disk_gib")):
        for name, stack in STACKS.items():
            assert f"{name} {getattr(stack.default_size, size)}" in declared[key]["description"], key


def string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


@pytest.mark.parametrize("module", ["server.py", "platform.py"])
def test_server_and_platform_do_not_branch_on_the_stack_name(module):
    """The server and platform never branch on a stack's name: what differs comes from the stack object."""
    assert not string_constants(COMPONENTS / module) & set(STACKS), "ask the stack object instead"


def test_the_platform_copies_no_key_into_the_parts_inputs():
    """The parts get the settings' derived inputs; the platform itself reads only what sets its own
    resources: protection and the DKIM keys (their size, and which selector's key signs). Each feature reads
    its own keys (components/features)."""
    tree = ast.parse((COMPONENTS / "platform.py").read_text())
    read = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings"}
    assert read & set(Settings.model_fields) == {"protect", "dkim_key_bits", "dkim_selector"}


@pytest.mark.parametrize("module", ["server.py", "platform.py"])
def test_the_server_and_platform_name_no_feature(module):
    """A feature plugs in without the server or the platform naming it: no feature's module, class or secret."""
    tree = ast.parse((COMPONENTS / module).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    feature_modules = {f"components.features.{path.stem}" for path in (COMPONENTS / "features").glob("*.py")} \
        - {"components.features.__init__", "components.features.base"}
    assert not imported & (feature_modules | {"components.gateway", "components.builders.gateway",
                                              "components.builders.backup"})
    assert not names & ({kind.__name__ for kind in FEATURES} | {"KeycloakDirectory", "MailGateway", "LocalDirectory"})
    feature_secrets = {"TLS_PRIVATE_KEY", "LDAP_BIND_PASSWORD", "LDAP_ADMIN_PASSWORD", "BACKUP_PASSWORD",
                       "WIREGUARD_PRIVATE_KEY", "gateway-vps"}
    assert not string_constants(COMPONENTS / module) & feature_secrets


def test_two_features_bringing_one_name_fail_loudly():
    """Two parts of the platform bringing the same secret are refused, never one silently replacing the other."""
    with pytest.raises(RuntimeError, match="bring the secret LDAP_BIND_PASSWORD"):
        merged({"LDAP_BIND_PASSWORD": "a"}, {"LDAP_BIND_PASSWORD": "b"}, what="secret")


def test_a_stage_reading_a_secret_no_feature_brings_fails(scratch_project, monkeypatch):
    """A stage reading a secret no feature brings fails the program, naming the stage and the secret."""
    monkeypatch.setattr(features, "FEATURES", tuple(kind for kind in features.FEATURES if kind is not Directory))
    config = stack_config("prod", {"ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"]})
    with pytest.raises(Exception, match="stage ldap reads the secret LDAP_ADMIN_PASSWORD, which nothing declares"):
        record(scratch_project("unplugged", config), "unplugged")
