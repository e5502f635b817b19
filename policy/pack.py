"""The CrossGuard adapter: each rule of `policy.rules` as a pulumi_policy policy.

Resource rules become ResourceValidationPolicy, cross-resource rules StackValidationPolicy; thresholds are
the policy config (`minDkimBits`, `protectedStacks`). Kept apart from `__main__.py` (which starts the
policy server) so tests can build and call the policies.

Values as the rules know them. pulumi_policy hands a policy its properties behind proxies that raise on
any value not known yet (a preview's computed values), which would abort a rule for the whole resource
(or, for a stack rule, the whole stack) at the first such value. The adapter reads past the proxies and
gives the rules what the offline plan gives them: a value not known yet is "(known after apply)", which
no rule judges, everything known is judged, and whole numbers are integers (the wire has only doubles).

Where secretness can be seen. The engine sends a policy pack every input with its secret mark, but
pulumi_policy (1.21) drops the marks before a validation runs: `Analyze` deserialises without them, so
a secret token and a plain one are the same `str` to a validator. Only the remediation pass keeps them
(as `pulumi_policy.Secret` inside its property proxies). A rule that judges secrecy
(`needs_secret_marks`) therefore looks during the remediation pass, which the engine runs for every
resource just before its analysis, changes nothing there, and reports what it found from its validation
of the same resource; the library reports a violation of a "remediate" policy as mandatory. Every other
rule is an ordinary validation. Offline (`mailctl plan`), the recorder marks secrets itself, so the same
rule functions see them there too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from pulumi_policy import proxy as policy_proxy

from policy.rules import RULES, UNKNOWN, PolicyConfig, Resource, Rule

PACK_NAME = "ceres-mail"
LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}
CONFIG_SCHEMA = PolicyConfigSchema(
    properties={
        "minDkimBits": {"type": "integer", "default": PolicyConfig.min_dkim_bits},
        "protectedStacks": {"type": "array", "items": {"type": "string"}, "default": list(PolicyConfig.protected_stacks)},
    }
)
# The key under which pulumi_policy's property proxies hand out the value they wrap.
PROXY_TARGET = "__target"
# How the engine says "not known until applied" in a preview; read past the proxies, these become the
# rules' own marker, so no rule mistakes one for a plain value.
UNKNOWN_SENTINELS = frozenset(
    getattr(policy_proxy, name) for name in dir(policy_proxy) if name.startswith("UNKNOWN_") and name.endswith("_VALUE")
)


def _config(values: Mapping[str, Any]) -> PolicyConfig:
    return PolicyConfig(
        min_dkim_bits=int(values.get("minDkimBits", PolicyConfig.min_dkim_bits)),
        protected_stacks=tuple(values.get("protectedStacks", PolicyConfig.protected_stacks)),
    )


def _resource(type_: str, props: Mapping[str, Any], opts, urn: str) -> Resource:
    return Resource(type_, plan_values(props), {"protect": opts.protect, "ignoreChanges": list(opts.ignore_changes)}, urn)


def plan_values(value: Any) -> Any:
    """Plain dicts and lists of CrossGuard's proxied properties: values not known yet as the plan's marker,
    and, in a remediation pass, `Secret` wrappers kept in place (the proxies unwrap a secret on every read,
    which would hide exactly what the secrecy rule looks for)."""
    while type(value).__name__ in ("_DictProxy", "_ListProxy", "_DictSecretsProxy", "_ListSecretsProxy"):
        value = value[PROXY_TARGET]
    if isinstance(value, str) and value in UNKNOWN_SENTINELS:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the engine's numbers are doubles; sizes and ports are integers, as offline
    if type(value).__name__ == "Secret":
        return type(value)(plan_values(value.value))
    if isinstance(value, Mapping):
        return {key: plan_values(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plan_values(item) for item in value]
    return value


def _resource_validator(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation) -> None:
        resource = _resource(args.resource_type, args.props, args.opts, args.urn)
        for message in rule.check(resource, _config(args.get_config())):
            report_violation(message)

    return validate


def _secret_marks_policy(rule: Rule, common: dict) -> ResourceValidationPolicy:
    """A rule that needs secret marks: it looks in the remediation pass and reports in the validation."""
    found: dict[str, list[str]] = {}

    def look(args: ResourceValidationArgs):
        resource = _resource(args.resource_type, args.props, args.opts, args.urn)
        found[args.urn] = list(rule.check(resource, _config(args.get_config())))
        return None  # nothing to change: the violation is reported, not repaired

    def report(args: ResourceValidationArgs, report_violation) -> None:
        if args.urn not in found:
            # the pack config set another level, so the engine skipped the remediation pass: say so
            args.not_applicable("this rule looks in the remediation pass, which runs at the level 'remediate' only")
        for message in found.pop(args.urn):
            report_violation(message)

    return ResourceValidationPolicy(
        validate=report, remediate=look, **{**common, "enforcement_level": EnforcementLevel.REMEDIATE}
    )


def _stack_validator(rule: Rule):
    def validate(args: StackValidationArgs, report_violation) -> None:
        resources = [_resource(r.resource_type, r.props, r.opts, r.urn) for r in args.resources]
        for urn, message in rule.check_stack(resources, _config(args.get_config())):
            report_violation(message, urn)

    return validate


def policies() -> list:
    built = []
    for rule in RULES:
        if rule.needs_state:
            continue  # CrossGuard shows no resource its age; `mailctl policy --state` runs these rules
        common = dict(name=rule.name, description=rule.description, enforcement_level=LEVELS[rule.level],
                      config_schema=CONFIG_SCHEMA)
        if rule.needs_secret_marks:
            built.append(_secret_marks_policy(rule, common))
        elif rule.check:
            built.append(ResourceValidationPolicy(validate=_resource_validator(rule), **common))
        else:
            built.append(StackValidationPolicy(validate=_stack_validator(rule), **common))
    return built
