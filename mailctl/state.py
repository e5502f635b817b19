"""What only the Pulumi state knows, read from `pulumi stack export`: when the engine created each resource.

The program and CrossGuard see a resource's inputs and outputs, never its age; the state records
`created` for every resource (Pulumi 3.5x and later). `mailctl policy --state` passes these times to the
policy rules that judge age (the signing DKIM key's, against `dkimMaxAgeDays`).
"""

from __future__ import annotations

import datetime
import json
from typing import Any


class StateError(ValueError):
    """The file is not a state export; the message says what was expected."""


def created_times(export_text: str) -> dict[str, datetime.datetime]:
    """URN -> creation time of every resource in an export that records one (older states may not)."""
    try:
        export: Any = json.loads(export_text)
        resources = export["deployment"].get("resources") or []
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StateError("not the output of `pulumi stack export` (JSON with deployment.resources)") from None
    times = {}
    for resource in resources:
        stamp = resource.get("created") if isinstance(resource, dict) else None
        if stamp:
            try:
                moment = datetime.datetime.fromisoformat(stamp)
            except ValueError:
                raise StateError(f"{resource.get('urn')}: created {stamp!r} is not a time") from None
            times[resource["urn"]] = moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
    return times
