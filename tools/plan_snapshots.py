"""The offline plans of the committed stacks and of one stack per feature, as JSON files, for a refactor.

A refactor must change no resource: write the snapshots before it, again after, and compare the two
folders (`diff -r`). The committed stacks alone leave features out (no LDAP, no S3, no mailcow, no
DNSSEC, no DANE), so each feature stack here is prod or home with that feature on, its secrets as `secure:` values.

    .venv/bin/python tools/plan_snapshots.py /tmp/before
    ... the refactor ...
    .venv/bin/python tools/plan_snapshots.py /tmp/after && diff -r /tmp/before /tmp/after
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mailctl.recorder import record  # noqa: E402 - after the path: the tool runs from a clone, not installed
from mailctl.stackfile import stack_names  # noqa: E402
from tests.placeholders import HOST_KEY, SECURE  # noqa: E402 - a plain module: no pytest, no fixtures

#: name -> (the committed stack it starts from, the keys it sets)
FEATURE_STACKS = {
    "ldap-local": ("prod", {"ldapMode": "local", "ldapClientCidrs": ["10.42.0.0/16"]}),
    "ldap-external": ("prod", {"ldapMode": "external", "ldapUrl": "ldap://ldap.corp.example.com",
                               "ldapBindDn": "cn=mail,dc=example,dc=com", "ldapBindPassword": SECURE}),
    "home-ldap-backups": ("home", {"ldapMode": "local", "ldapClientCidrs": ["10.42.0.0/16"],
                                   "backupTarget": "sftp:restic@backup.home.example.org:/srv/restic",
                                   "backupHostKey": HOST_KEY}),
    "s3-no-webmail": ("prod", {"backupTarget": "s3:https://s3.example.com/ceres-backups/mail", "backupHostKey": None,
                               "backupS3AccessKey": SECURE, "backupS3SecretKey": SECURE, "webmail": False}),
    "mailcow": ("prod", {"mailStack": "mailcow", "vmMemoryMib": 8192, "vmDiskGib": 40}),
    "dnssec-two-domains": ("prod", {"dnssec": True, "extraDomains": ["example.org=11111111111111111111111111111111"]}),
    "dane-ldap-local": ("prod", {"dnssec": True, "dane": True, "ldapMode": "local", "ldapClientCidrs": ["10.42.0.0/16"]}),
}


def feature_config(base: str, keys: dict) -> dict:
    """The committed stack `base`'s config with `keys` set (None removes one)."""
    config = dict(yaml.safe_load((REPO / f"Pulumi.{base}.yaml").read_text())["config"])
    for key, value in keys.items():
        if value is None:
            config.pop(f"ceres-mail:{key}", None)
        else:
            config[f"ceres-mail:{key}"] = value
    return config


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for stack in stack_names(REPO):
        (out / f"{stack}.json").write_text(record(REPO, stack).to_json())
        print(f"plan_snapshots: {stack}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(REPO / "Pulumi.yaml", Path(scratch) / "Pulumi.yaml")
        for name, (base, keys) in FEATURE_STACKS.items():
            stack_file = Path(scratch) / f"Pulumi.{name}.yaml"
            stack_file.write_text(yaml.safe_dump({"config": feature_config(base, keys)}))
            (out / f"{name}.json").write_text(record(Path(scratch), name).to_json())
            print(f"plan_snapshots: {name}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
