"""The Pulumi program: settings in, one MailPlatform, exports out.

Shared by `__main__.py` (the Pulumi CLI) and `mailctl`'s offline recorder, so both run the same code.
"""

from __future__ import annotations

from collections.abc import Iterable

import pulumi

from components import settings as stack_settings
from components.platform import MailPlatform


def run(stack_keys: Iterable[str] = ()) -> MailPlatform:
    """Validate the stack's config (all problems at once, before any resource), then declare the graph."""
    settings = stack_settings.load(stack_keys=stack_keys)
    platform = MailPlatform("ceres-mail", settings)
    pulumi.export("mailHost", platform.mail_host)
    pulumi.export("mailFrom", settings.mail_from_address)
    pulumi.export("ceresSmtp", platform.ceres_settings)
    pulumi.export("ptr", platform.ptr)
    pulumi.export("dkimRecord", platform.dkim_record)
    return platform
