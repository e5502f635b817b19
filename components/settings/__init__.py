"""Stack settings: the one reader of `pulumi.Config`, in four parts.

- `values.py`: value types, each with its own rule (a domain name, a public address, an SSH key).
- `schema.py`: `SettingsSchema`, one typed field per config key; `CONFIG_KEYS`, `SECRET_KEYS`.
- `rules.py`: the rules over several keys, and those over what the settings build.
- `derived.py`: `Settings`, the schema plus what the components are built from.
- `reading.py`: `load` (from `pulumi.Config`) and `validate` (from raw values), every problem in one
  `SettingsError`; `clear_secrets`, the secrets a stack file holds in clear, for every reader of one.
"""

from components.builders.inputs import VmSize
from components.settings.derived import Settings, mail_host_of
from components.settings.reading import SettingsError, clear_secrets, load, misplaced_keys, validate
from components.settings.schema import CONFIG_KEYS, PROJECT, SECRET_KEYS, UNDECLARED_KEYS, SettingsSchema

__all__ = [
    "CONFIG_KEYS",
    "PROJECT",
    "SECRET_KEYS",
    "UNDECLARED_KEYS",
    "Settings",
    "SettingsError",
    "SettingsSchema",
    "VmSize",
    "clear_secrets",
    "load",
    "mail_host_of",
    "misplaced_keys",
    "validate",
]
