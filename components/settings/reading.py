"""Reading and checking a stack's config: the one place that reads `pulumi.Config`.

Values are checked field by field (pydantic) and then across fields (`rules.py`), and every problem is
gathered into ONE `SettingsError` before any resource is registered, so an operator fixes a stack file in
one pass instead of one key per `pulumi up`.

`SettingsError` is a `pulumi.RunError`: the Pulumi language host prints its message without a traceback,
and `mailctl` prints it the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

import pulumi
from pulumi.runtime import config as pulumi_config
from pydantic import TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from components.settings.derived import Settings
from components.settings.rules import cross_field_problems, import_problems
from components.settings.schema import CONFIG_KEYS, OBJECT_KEYS, PROJECT, SECRET_KEYS, is_secret, set_secret_command


class SettingsError(pulumi.RunError):
    """Every bad config value of a stack, one line each, naming the key."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = sorted(set(problems))
        # a key of this project is named as the stack file names it; a full key (another namespace) as is
        lines = [f"  {key if ':' in key else f'{PROJECT}:{key}'}: {why}" for key, why in self.problems]
        super().__init__(
            f"the stack configuration has {len(self.problems)} problem(s):\n" + "\n".join(lines)
        )


def _field_checker(info: FieldInfo) -> TypeAdapter:
    annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    return TypeAdapter(annotation)


# One checker per plain field, built once: a stack is validated many times in the tests and plans.
_FIELD_CHECKERS = {
    name: _field_checker(info) for name, info in Settings.model_fields.items() if not is_secret(info)
}


#: what an out-of-range value of a key may have meant, and why it is not offered
RANGE_HINTS = {
    "bruteForceBanMinutes": "; a ban for ever (fail2ban's -1) is not offered: an address changes hands, and a "
                            "ban that never ends would one day lock out someone else. The longest is a week",
}
_RANGE_ERRORS = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})


def _out_of_range(key: str, value: Any, info: FieldInfo) -> str:
    """A number outside a key's range, in the key's own words: what it means, which numbers it takes."""
    low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    allowed = (f"a whole number from {low} to {high}" if high is not None
               else f"a whole number of at least {low}" if low is not None else "another number")
    meaning = (info.description or "").split(". ")[0].rstrip(".")
    if meaning[1:2].islower():  # a sentence's capital, not a name's (CERES, IPv6)
        meaning = meaning[0].lower() + meaning[1:]
    return f"{value} is out of range: write {allowed}" + (f" ({meaning})" if meaning else "") + RANGE_HINTS.get(key, "")


def _describe(error: dict, shape: str = "list", key: str = "", info: FieldInfo | None = None) -> str:
    if error["type"] in _RANGE_ERRORS and info is not None and not error["loc"]:
        return _out_of_range(key, error["input"], info)
    if error["type"] == "missing":
        return "is required: set it with `pulumi config set` (see the README's config reference)"
    if error["type"] == "value_error":
        # our own rules, whose messages already quote the value
        return error["msg"].removeprefix("Value error, ")
    if error["type"] in ("json_invalid", "list_type"):
        # a JSON-typed key holds a list (or an object, OBJECT_KEYS): a single value given where one belongs
        example = '{"daily": 7}' if shape == "object" else '["a", "b"]'
        return f"{error['input']!r} must be a{'n' if shape == 'object' else ''} {shape}: YAML in the stack file, or JSON such as {example}"
    if error["type"] == "literal_error":
        return f"{error['input']!r} is not allowed: {error['msg'].lower()}"
    return f"{error['input']!r}: {error['msg'].lower()}"


def _shown(value: Any, limit: int = 80) -> str:
    """A value as an error quotes it: its repr, cut to one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 5] + "...'"


def misplaced_keys(full_keys: Iterable[str]) -> list[tuple[str, str]]:
    """Keys meant for this project that the Pulumi CLI hands to no one, so their defaults would stay in
    force unnoticed: one written without a namespace (`dmarcPolicy`; the CLI ignores it) or under another
    namespace that holds one of this project's key names (`ceres-mial:dnsTtl`)."""
    problems = []
    for full_key in sorted(full_keys):
        namespace, separator, name = full_key.rpartition(":")
        if not separator and name in CONFIG_KEYS:
            problems.append((name, f"is written `{name}` without its namespace; the Pulumi CLI ignores such a key, "
                                   f"so the default would stay: write `{PROJECT}:{name}`"))
        elif separator and namespace != PROJECT and name in CONFIG_KEYS:
            problems.append((full_key, f"is in namespace {namespace!r}, which nothing reads, so {PROJECT}:{name} "
                                       f"would keep its default: write `{PROJECT}:{name}`"))
    return problems


def clear_secrets(value_of: Callable[[str], Any], encrypted: Callable[[str], bool]) -> list[str]:
    """The secret keys whose stack file holds a value in clear, where git keeps it: those with a value
    (`value_of(key)`) that was not a `secure:` one (`encrypted(key)`, asked first so that a secret's value is
    never read in plain). Every reader of a stack refuses them through this one check, the Pulumi program
    and the commands that read the stack file alike; the CLI itself refuses only the keys Pulumi.yaml
    declares secret, and an optional secret cannot be declared (UNDECLARED_KEYS)."""
    return [key for key in sorted(SECRET_KEYS) if not encrypted(key) and value_of(key)]


def secrets_in_clear(keys: Iterable[str], stack_file: str) -> list[tuple[str, str]]:
    """The problem of each secret key `stack_file` holds in clear (`clear_secrets`): the command that stores
    it encrypted, never its value."""
    return [(key, f"is in clear in {stack_file}, where anyone who reads it (or its git history) has it: set it "
                  f"with `{set_secret_command(key)}`, which stores it encrypted, and replace the exposed value")
            for key in sorted(keys)]


def validate(raw: Mapping[str, Any], misplaced: Iterable[str] = (), in_clear: Iterable[str] = (),
             stack_file: str = "the stack file") -> Settings:
    """Check raw config values (keyed by config key) and return frozen Settings, or raise SettingsError.

    Each field is checked on its own first, so that the cross-field rules still run on every key that
    is fine by itself and the operator sees all problems at once. `in_clear` names the secret keys that
    `stack_file` gives in plain text.
    """
    problems: list[tuple[str, str]] = secrets_in_clear(in_clear, stack_file)
    good: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        key = to_camel(name)
        if key not in raw or raw[key] is None:
            if info.is_required():
                problems.append((key, _describe({"type": "missing"})))
            else:
                good[name] = info.get_default(call_default_factory=True)
            continue
        if is_secret(info):
            good[name] = raw[key]
            continue
        try:
            good[name] = _FIELD_CHECKERS[name].validate_python(raw[key])
        except ValidationError as error:
            for detail in error.errors():
                where = "".join(f"[{part}]" for part in detail["loc"])
                problems.append((key + where, _describe(detail, "object" if key in OBJECT_KEYS else "list", key, info)))
        except Exception as error:  # noqa: BLE001 - a rule that fails in a way it did not foresee is still this key's problem
            problems.append((key, f"{_shown(raw[key])} could not be read ({type(error).__name__}: {error})"))
    unknown = set(raw) - CONFIG_KEYS
    # (an undeclared key is reported below; the loop above only visits declared ones)
    problems += [(key, "is not a key of this project (see Pulumi.yaml)") for key in sorted(unknown)]
    problems += misplaced_keys(misplaced)
    problems += cross_field_problems(good)
    if problems:
        raise SettingsError(problems)
    # Every value passed its check above; constructing without a second validation also keeps the
    # already-parsed JSON lists from being parsed again.
    settings = Settings.model_construct(**good)
    # Rules over what the settings build (the record set) run once the settings themselves are sound.
    if problems := import_problems(settings):
        raise SettingsError(problems)
    return settings


def load(config: pulumi.Config | None = None, stack_keys: Iterable[str] = ()) -> Settings:
    """Read every declared key of the current stack and validate it.

    `stack_keys` are the keys the stack file sets (the offline recorder knows them); any that this
    project does not declare is reported, since a typo would otherwise silently fall back to a default.
    """
    config = config or pulumi.Config(PROJECT)
    raw: dict[str, Any] = {key: None for key in stack_keys}
    for name, info in Settings.model_fields.items():
        key = to_camel(name)
        raw[key] = config.get_secret(key) if is_secret(info) else config.get(key)
    # the engine (and the offline recorder) mark the values the stack file holds encrypted
    in_clear = clear_secrets(config.get, lambda key: pulumi_config.is_config_secret(f"{PROJECT}:{key}"))
    # every key the engine passed, whatever its namespace (the SDK offers no public list of them)
    return validate(raw, misplaced=pulumi_config.CONFIG.get().keys(), in_clear=in_clear,
                    stack_file=f"Pulumi.{pulumi.get_stack()}.yaml")
