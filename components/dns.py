"""MailDns: the mail domain's records on Cloudflare (seed section 3).

Needs only the static address and the DKIM public key, so it runs in parallel with the VM. Records are
never proxied: Cloudflare's proxy carries HTTP only, and MX targets must resolve to the real host.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare

from components.builders.dns_records import DnsInputs, Record, build_records, dkim_record, dkim_value


@dataclass(frozen=True)
class MailDnsArgs:
    """What the record set is built from."""

    zone_id: str  #: Cloudflare zone of the mail domain
    records: DnsInputs  #: plain inputs of the pure record builder
    dkim_public_key_pem: pulumi.Input[str]  #: the stack's DKIM key (public half)
    protect: bool  #: keep records from being deleted by accident


class MailDns(pulumi.ComponentResource):
    """The Cloudflare DNS records of the mail domain."""

    record_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: MailDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:mail:Dns", name, None, opts)
        record_opts = pulumi.ResourceOptions(parent=self, protect=args.protect)

        def declare(record: Record, content: pulumi.Input[str]) -> cloudflare.DnsRecord:
            return cloudflare.DnsRecord(
                f"{name}-{record.key}",
                zone_id=args.zone_id,
                name=record.name,
                type=record.type,
                content=content,
                priority=record.priority,
                ttl=record.ttl,
                proxied=False,
                comment=record.why,
                opts=record_opts,
            )

        # Records whose content is known now (A, AAAA, MX, SPF, DMARC)
        static = build_records(args.records)
        declared = [declare(record, record.content) for record in static]

        # DKIM: same builder, content once the key exists
        dkim = dkim_record(args.records)
        declared.append(declare(dkim, pulumi.Output.from_input(args.dkim_public_key_pem).apply(dkim_value)))

        self.records = declared
        self.record_names = pulumi.Output.from_input(sorted(f"{r.type} {r.name}" for r in [*static, dkim]))
        self.register_outputs({"record_names": self.record_names})
