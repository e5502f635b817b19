"""The CrossGuard adapter: each rule of `policy.rules` as a ResourceValidationPolicy.

Kept apart from `__main__.py` (which starts the policy server) so tests can build and call the policies.
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ResourceValidationArgs, ResourceValidationPolicy

from policy.rules import RULES, Rule

PACK_NAME = "ceres-mail"
LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}


def _validator(rule: Rule):
    def validate(args: ResourceValidationArgs, report_violation) -> None:
        options = {"protect": args.opts.protect, "ignoreChanges": list(args.opts.ignore_changes)}
        for message in rule.check(args.resource_type, args.props, options):
            report_violation(message)

    return validate


def policies() -> list[ResourceValidationPolicy]:
    return [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            enforcement_level=LEVELS[rule.level],
            validate=_validator(rule),
        )
        for rule in RULES
    ]
