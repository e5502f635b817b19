"""Stands in for pulumi-cloudflare: DnsRecord in the zones of one account.

The world keeps each record by its id with its zone. Creating a record that is already in the zone with
the same name, type and content is refused as Cloudflare refuses it ("an identical record already
exists"), which is why the program adopts existing records by id (`dnsImportIds`); such a record is read
back by `<zone id>/<record id>`, the import id the real provider takes.

With a test internet behind it (cloud.py), the zones are served for real: after every change the test's
authoritative server (BIND) serves each zone with exactly the records the world holds, and the change
returns only once it is served, as a record is live once Cloudflare's API has answered.
"""

from __future__ import annotations

from datetime import datetime, timezone

from tests.engine.standins import cloud
from tests.engine.standins.model import Context, Kind, StandIn, StandInError

RECORD = "cloudflare:index/dnsRecord:DnsRecord"
IDENTITY = ("zoneId", "name", "type", "content", "data", "priority")


def _refuse_identical(inputs: dict, context: Context) -> None:
    for held in context.world.all(RECORD).values():
        if all(held.get(key) == inputs.get(key) for key in IDENTITY):
            raise StandInError(f"an identical record already exists: {inputs['type']} {inputs['name']} "
                               f"(code 81058); adopt it with dnsImportIds")


def _stamps(inputs: dict, context: Context) -> dict:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"createdOn": context.previous.get("createdOn", now), "modifiedOn": now,
            "proxiable": inputs["type"] in ("A", "AAAA", "CNAME")}


def _serve_zones(operation: str, outputs: dict, context: Context) -> None:
    if cloud.backed():
        # the cloud reads the records itself, under its lock: records created in parallel are never lost
        cloud.call("dns.serve", records_folder=str(context.world.root / RECORD.rsplit(":", 1)[1]))


class CloudflareDns(StandIn):
    """Reads an imported record by `<zone id>/<record id>`, the form the real provider's import takes."""

    def read(self, token, resource_id, properties, inputs=None):
        return super().read(token, resource_id.rsplit("/", 1)[-1], properties, inputs)


STANDIN = CloudflareDns(
    name="cloudflare",
    kinds={
        RECORD: Kind(
            token=RECORD,
            defaults={"proxied": False},
            replace_on=("zoneId",),
            create_hook=_refuse_identical,
            compute=_stamps,
            recompute=_stamps,
            computed=("createdOn", "modifiedOn", "proxiable"),
            recomputed=("modifiedOn",),
            after=_serve_zones,
        ),
    },
)
