"""MailDns: the mail domains' records on Cloudflare (the RFCs the builder cites).

Needs only the static address and the DKIM public key, so it runs in parallel with the VM. Records are
never proxied (Cloudflare's proxy carries HTTP only; MX targets must resolve to the real host). The
stack manages only the records it declares: records that already exist are adopted by id
(`dnsImportIds`), never duplicated, and nothing else in the zones is touched. With `dnssec`, the zones
themselves are signed too: a setting of each zone MailDns already writes to, through the same provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_cloudflare as cloudflare

from components.builders.dns_records import (
    build_records,
    cloudflare_fields,
    dkim_records,
    dkim_selector_of,
    dkim_value,
    mta_sts_policy,
    record_waited_on,
    spki_sha256,
    stack_key_tlsa_records,
    tlsa_data,
    txt_rdata,
)
from components.builders.dnssec import RESOURCE_INFIX, ds_export
from components.builders.inputs import DnsZoneInputs


@dataclass(frozen=True)
class MailDnsArgs:
    """What the record set is built from."""

    zones: DnsZoneInputs  #: the records' plain inputs, their zones, the records adopted by id, protection
    #: selector -> its DKIM key (public half), for the signing selector and every published one
    dkim_public_key_pems: Mapping[str, pulumi.Input[str]]
    #: name -> a key the stack owns (public half), the served one (`tlsKeySelector`) and each published one
    #: (`tlsPublishedKeys`), for their TLSA records
    tls_public_key_pems: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


class MailDns(pulumi.ComponentResource):
    """The Cloudflare DNS records of the mail domains."""

    record_keys: pulumi.Output[list[str]]
    mta_sts_policy: pulumi.Output[str]
    dkim_txt: pulumi.Output[str]
    records: dict[str, cloudflare.DnsRecord]  #: every record resource, by record key
    zone_dnssec: dict[str, cloudflare.ZoneDnssec]  #: mail domain -> its zone's DNSSEC, with `dnssec` only
    #: mail domain -> its DS for the registrar ({ds, keyTag, algorithm, digestType, digest}); None unsigned
    ds_records: pulumi.Output[dict[str, dict]] | None

    def __init__(self, name: str, args: MailDnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:mail:Dns", name, None, opts)

        self.records = {}

        def declare(key: str, zone: str, record_name: str, type_: str, fields: dict, ttl: int, why: str):
            record_id = args.zones.import_ids.get(key)
            self.records[key] = cloudflare.DnsRecord(
                f"{name}-{key}",
                zone_id=args.zones.zone_ids[zone],
                name=record_name,
                type=type_,
                ttl=ttl,
                proxied=False,
                comment=why,
                **fields,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=args.zones.protect,
                    import_=f"{args.zones.zone_ids[zone]}/{record_id}" if record_id else None,
                ),
            )

        # Records whose content is known now
        static = self._static = build_records(args.zones.records)
        for record in static:
            declare(record.key, record.zone, record.name, record.type, cloudflare_fields(record), record.ttl, record.why)

        # DKIM of every selector in every mail domain: the builder's records, their content once the key exists
        dkim_values = {selector: pulumi.Output.from_input(pem).apply(dkim_value)
                       for selector, pem in args.dkim_public_key_pems.items()}
        self.dkim_txt = dkim_values[args.zones.records.dkim_selector]
        for record in dkim_records(args.zones.records):
            declare(record.key, record.zone, record.name, record.type,
                    {"content": dkim_values[dkim_selector_of(record.name)].apply(txt_rdata)},
                    record.ttl, record.why)

        # TLSA of every key the stack owns, on every DANE port: their digest once the key exists
        for selector, pem in args.tls_public_key_pems.items():
            data = pulumi.Output.from_input(pem).apply(lambda key: tlsa_data(spki_sha256(key)))
            for record in stack_key_tlsa_records(args.zones.records, names=(selector,)):
                declare(record.key, record.zone, record.name, record.type, {"data": data}, record.ttl, record.why)

        self.ds_records = self._sign_zones(name, args.zones)
        self.record_keys = pulumi.Output.from_input(sorted(self.records))
        # served by the mail host at https://mta-sts.<domain>/.well-known/mta-sts.txt
        self.mta_sts_policy = pulumi.Output.from_input(mta_sts_policy(args.zones.records))
        self.register_outputs(
            {"record_keys": self.record_keys, "mta_sts_policy": self.mta_sts_policy, "dkim_txt": self.dkim_txt}
        )

    def waitables(self) -> dict[str, cloudflare.DnsRecord]:
        """Every record by the name a stage's `after` gives it (dns_records.record_waited_on)."""
        return {record_waited_on(key): record for key, record in sorted(self.records.items())}

    def _sign_zones(self, name: str, zones: DnsZoneInputs) -> pulumi.Output[dict[str, dict]] | None:
        """With `dnssec`, Cloudflare signs each mail domain's zone: one ZoneDnssec per domain, protected as the
        records are, since deleting it while the registrar still holds its DS makes the domain fail validation
        at every validating resolver. Gives each domain's DS for its registrar (known once applied)."""
        self.zone_dnssec = {}
        if not zones.dnssec:
            return None
        for domain in zones.records.mail_domains:
            self.zone_dnssec[domain] = cloudflare.ZoneDnssec(
                f"{name}{RESOURCE_INFIX}{domain}",
                zone_id=zones.zone_ids[domain],
                status="active",
                opts=pulumi.ResourceOptions(parent=self, protect=zones.protect),
            )
        return pulumi.Output.all(**{
            domain: pulumi.Output.all(zone.ds, zone.key_tag, zone.algorithm, zone.digest_type, zone.digest)
            .apply(lambda fields: ds_export(*fields))
            for domain, zone in self.zone_dnssec.items()
        })

    def address_records(self) -> dict[str, list[cloudflare.DnsRecord]]:
        """Host name -> the records that make it resolve (A, AAAA, or a CNAME to them), in key order.

        What a certificate's http-01 challenge needs published before the ACME server looks a name up."""
        by_name: dict[str, list[cloudflare.DnsRecord]] = {}
        for record in sorted(self._static, key=lambda record: record.key):
            if record.type in ("A", "AAAA", "CNAME"):
                by_name.setdefault(record.name, []).append(self.records[record.key])
        return by_name
