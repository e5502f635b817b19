"""Shared fixtures: the project, its stacks recorded offline, and scratch projects with edited stacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from components.builders.native import InstallInputs
from components.settings import SECRET_KEYS, SettingsError
from mailctl.plan import Plan
from mailctl.recorder import record
from tests.placeholders import SECURE

# the helpers the test modules share, out of any test module: their asserts explain a failure as a test's own do
pytest.register_assert_rewrite("tests.mailnet.host_checks", "tests.shell_judges")

PROJECT_DIR = Path(__file__).resolve().parent.parent
STACKS = ("prod", "staging", "home")

# The install inputs of a plain one-domain stack, for the builder tests of both mail stacks
INSTALL = InstallInputs(
    domain="example.com",
    mail_host="mail.example.com",
    mailbox="no-reply@example.com",
    dkim_selector="ceres",
    acme_email="postmaster@example.com",
)


# no_skips: CI rules; layers: each test's layer and world (time report, make test-fast, pytest's workers);
# mailnet: the session fixtures of the end-to-end tests (booted only when used)
pytest_plugins = ["tests.plugins.no_skips", "tests.plugins.layers", "tests.mailnet.fixtures", "tests.engine.fixtures"]


@pytest.fixture(scope="session")
def project_dir() -> Path:
    return PROJECT_DIR


@pytest.fixture(scope="session")
def plans() -> dict[str, Plan]:
    """Each committed stack recorded once per session (a preview: computed values unknown)."""
    return {stack: record(PROJECT_DIR, stack) for stack in STACKS}


@pytest.fixture(scope="session")
def prod_plan(plans) -> Plan:
    return plans["prod"]


def one(plan: Plan, type_: str, name_suffix: str = ""):
    """The single resource of `type_` whose name ends with `name_suffix` (fails if there are 0 or 2+)."""
    found = [r for r in plan.of_type(type_) if r.name.endswith(name_suffix)]
    assert len(found) == 1, f"expected one {type_} *{name_suffix}, found {[r.name for r in found]}"
    return found[0]


def stack_config(stack: str = "prod", edits: dict | None = None) -> dict:
    """The `config:` mapping of a committed stack file, to edit in a test; `edits` sets keys first (a value
    of None removes the key)."""
    config = dict(yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"])
    for name, value in (edits or {}).items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    return config


def split_secrets(config: dict) -> tuple[dict, dict[str, str]]:
    """(the stack file's config, its secret keys' plain values): a test's secrets go to the recorder as the
    CLI hands them over once decrypted (`record(..., secrets=)`), and the stack file holds a `secure:` value
    in their place, as an operator's does (`mailctl verify` and `zone` read it); never the value in clear,
    which the program refuses."""
    plain = {key: value for key, value in config.items()
             if key.split(":", 1)[-1] in SECRET_KEYS and isinstance(value, str)}
    return {key: SECURE if key in plain else value for key, value in config.items()}, plain


def open_the_gateway_vps_to(monkeypatch, network: str) -> None:
    """Build the gateway with SSH on the VPS open to `network` as well, as a program would whose settings let
    0.0.0.0/0 or ::/0 through (they refuse it): its VPS stage and its component's `sshFrom` both get it."""
    from dataclasses import replace

    from components.features import gateway as feature

    build = feature.MailGateway

    def opened(name, args, opts=None):
        gateway = replace(args.gateway, admin_cidrs=(*args.gateway.admin_cidrs, network))
        return build(name, replace(args, gateway=gateway), opts)

    monkeypatch.setattr(feature, "MailGateway", opened)


def refused(scratch_project, config: dict) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        record(scratch_project("bad", config), "bad")
    return caught.value


@pytest.fixture
def scratch_project(tmp_path):
    """A copy of the project's Pulumi.yaml in a temp dir; `write(name, config)` adds a stack file."""

    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")

    def write(name: str, config: dict) -> Path:
        (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=True))
        return tmp_path

    return write


def self_signed(*names: str, days: int = 1) -> tuple[str, str]:
    """(certificate PEM, key PEM) of a fresh self-signed certificate naming `names` (the first is its CN),
    valid for `days`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
