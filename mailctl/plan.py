"""The Plan: what a stack declares, as plain data with a stable JSON form (docs/plan-format.md).

Everything in a Plan is already redacted: secrets are "[secret]", values a provider computes are
"(known after apply)". Sorting is fixed everywhere so two runs give byte-identical output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from policy.markers import SECRET, UNKNOWN_TEXT  # the plan's markers, re-exported for its readers

__all__ = ["SECRET", "UNKNOWN_TEXT", "Plan", "PlannedResource"]


@dataclass(frozen=True)
class PlannedResource:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    dependencies: list[str]
    inputs: dict[str, Any]
    options: dict[str, Any]


@dataclass
class Plan:
    project: str
    stack: str
    resources: list[PlannedResource]
    outputs: dict[str, Any]
    policy: list[dict[str, str]] = field(default_factory=list)

    @property
    def stack_urn(self) -> str:
        """The root Stack resource's URN, as the engine names it (its outputs are the plan's)."""
        return f"urn:pulumi:{self.stack}::{self.project}::pulumi:pulumi:Stack::{self.project}-{self.stack}"

    def by_urn(self) -> dict[str, PlannedResource]:
        return {resource.urn: resource for resource in self.resources}

    def of_type(self, type_: str) -> list[PlannedResource]:
        return [resource for resource in self.resources if resource.type == type_]

    def children(self, urn: str | None) -> list[PlannedResource]:
        return sorted((r for r in self.resources if r.parent == urn), key=lambda r: r.urn)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "resources": [asdict(resource) for resource in sorted(self.resources, key=lambda r: r.urn)],
            "outputs": self.outputs,
            "policy": sorted(self.policy, key=lambda v: (v["urn"], v["policy"], v["message"])),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        return cls(
            project=data["project"],
            stack=data["stack"],
            resources=[PlannedResource(**resource) for resource in data["resources"]],
            outputs=data.get("outputs", {}),
            policy=list(data.get("policy", [])),
        )
