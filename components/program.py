"""The Pulumi program: settings in, one MailPlatform, exports out.

Shared by `__main__.py` (the Pulumi CLI) and `mailctl`'s offline recorder, so both run the same code.
"""

from __future__ import annotations

from collections.abc import Iterable

import pulumi

from components import settings as stack_settings
from components.builders.ceres_env import STACK_OUTPUT as CERES_OUTPUT
from components.builders.dns_records import (
    DKIM_KEYS_OUTPUT,
    DKIM_OUTPUT,
    DKIM_SIGNING_OUTPUT,
    external_authorizations,
    reverse_records,
)
from components.builders.dnssec import DS_OUTPUT
from components.platform import MailPlatform


def run(stack_keys: Iterable[str] = ()) -> MailPlatform:
    """Validate the stack's config (all problems at once, before any resource), then declare the graph."""
    settings = stack_settings.load(stack_keys=stack_keys)
    platform = MailPlatform("ceres-mail", settings)
    pulumi.export("mailHost", platform.mail_host)
    pulumi.export("mailFrom", settings.mail_from_address)
    pulumi.export(CERES_OUTPUT, platform.ceres_env)
    # For CERES's own env-file install (it reads /etc/ceres/*.env): the plain lines, and how to add the
    # secret one. The password stays an encrypted output; showing it is the operator's explicit choice.
    pulumi.export("ceresEnvFile", platform.ceres_env.apply(
        lambda env: "".join(f"{key}={value}\n" for key, value in sorted(env.items()))))
    pulumi.export("ceresSmtpPass", pulumi.Output.secret(platform.smtp_password))
    pulumi.export("ceresEnvPassCommand", "printf 'CERES_SMTP_PASS=%s\\n' "
                  "\"$(pulumi stack output ceresSmtpPass --show-secrets)\" >> /etc/ceres/mail.env")
    pulumi.export("ptr", platform.ptr)
    pulumi.export("ptrRecords", [f"{r.name}. {r.ttl} IN PTR {r.rdata}" for r in reverse_records(settings.dns_inputs)])
    pulumi.export("dkimTxt", platform.dkim_txt)
    pulumi.export(DKIM_OUTPUT, platform.dkim_public_key_pem)
    pulumi.export(DKIM_KEYS_OUTPUT, platform.dkim_public_keys)
    pulumi.export(DKIM_SIGNING_OUTPUT, {"selector": settings.dkim_selector, "maxAgeDays": settings.dkim_max_age_days})
    pulumi.export("mtaStsPolicy", platform.mta_sts_policy)
    if platform.ds_records is not None:
        # for each domain's registrar (`mailctl zone --ds`): its zone validates once the parent holds this DS
        pulumi.export(DS_OUTPUT, platform.ds_records)
    # DMARC report authorizations that belong in zones this stack does not manage (RFC 7489 7.1)
    pulumi.export(
        "dmarcExternalAuthorizations",
        [f"{r.name}. {r.ttl} IN TXT {r.rdata}" for r in external_authorizations(settings.dns_inputs)],
    )
    # what the chosen features add: the gateway's summary, where the backups go and their password
    for key, value in platform.feature_outputs.items():
        pulumi.export(key, value)
    return platform
