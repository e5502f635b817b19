"""The CrossGuard adapter: each rule of `policy.rules` as a pulumi_policy policy.

Resource rules become ResourceValidationPolicy, cross-resource rules StackValidationPolicy; thresholds are
the policy config (`minDkimBits`, `protectedStacks`). Kept apart from `__main__.py` (which starts the
policy server) so tests can build and call the policies.
"""

from __future__ import annotations

from typing import Any, Mapping

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.rules import RULES, PolicyConfig, Resource, Rule

PACK_NAME = "ceres-mail"
LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}
CONFIG_SCHEMA = PolicyConfigSchema(
    properties={
        "minDkimBits": {"type": "integer", "default": PolicyConfig.min_dkim_bits},
        "protectedStacks": {"type": "array", "items": {"type": "string"}, "default": list(PolicyConfig.protected_stacks)},
    }
)


def _config(values: Mapping[str, Any]) -> PolicyConfig:
    return PolicyConfig(
        min_dkim_bits=int(values.get("minDkimBits", PolicyConfig.min_dkim_bits)),
        protected_stacks=tuple(values.get("protectedStacks", PolicyConfig.protected_stacks)),
    )


def _resource(type_: str, props: Mapping[str, Any], opts, urn: str) -> Resource:
    return Resource(type_, props, {"protect": opts.protect, "ignoreChanges": list(opts.ignore_changes)}, urn)


def _resource_validator(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation) -> None:
        resource = _resource(args.resource_type, args.props, args.opts, args.urn)
        for message in rule.check(resource, _config(args.get_config())):
            report_violation(message)

    return validate


def _stack_validator(rule: Rule):
    def validate(args: StackValidationArgs, report_violation) -> None:
        resources = [_resource(r.resource_type, r.props, r.opts, r.urn) for r in args.resources]
        for urn, message in rule.check_stack(resources, _config(args.get_config())):
            report_violation(message, urn)

    return validate


def policies() -> list:
    built = []
    for rule in RULES:
        common = dict(name=rule.name, description=rule.description, enforcement_level=LEVELS[rule.level],
                      config_schema=CONFIG_SCHEMA)
        if rule.check:
            built.append(ResourceValidationPolicy(validate=_resource_validator(rule), **common))
        else:
            built.append(StackValidationPolicy(validate=_stack_validator(rule), **common))
    return built
