"""Stands in for pulumi-cloudflare: DnsRecord in the zones of one account.

The world keeps each record by its id with its zone. Creating a record that is already in the zone with
the same name, type and content is refused as Cloudflare refuses it ("an identical record already
exists"), which is why the program adopts existing records by id (`dnsImportIds`); such a record is read
back by `<zone id>/<record id>`, the import id the real provider takes.

With a test internet behind it (cloud.py), the zones are served for real: after every change the test's
authoritative server (BIND) serves each zone with exactly the records the world holds, and the change
returns only once it is served, as a record is live once Cloudflare's API has answered.

ZoneDnssec signs a zone of the account. The account's zones are what the test seeds (`seed_zone`: a zone
id and its name, as the zone exists in Cloudflare before any stack): DNSSEC on a zone the account does not
hold is refused, as Cloudflare refuses it. Turning it on makes a real ECDSA P-256 key for the zone and
answers with Cloudflare's fields (flags 257, algorithm 13, the real DS with digest type 2); its id is the
zone id. The private key stays in the world next to the records, as Cloudflare keeps it, so the test's
zone server can sign the zone with it (`signing_key_pem`); turning DNSSEC off deletes it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

from tests.engine.standins import cloud
from tests.engine.standins.model import Context, Kind, StandIn, StandInError, World

RECORD = "cloudflare:index/dnsRecord:DnsRecord"
ZONE_DNSSEC = "cloudflare:index/zoneDnssec:ZoneDnssec"
ZONE = "cloudflare:index/zone:Zone"  #: the account's zones, as the test seeds them: {"id", "name"}
SIGNING_KEYS = "dnssec-keys"  #: <world>/cloudflare/dnssec-keys/<zone id>.pem: each signed zone's private key
IDENTITY = ("zoneId", "name", "type", "content", "data", "priority")
DNSSEC_OPTIONS = ("dnssecMultiSigner", "dnssecPresigned", "dnssecUseNsec3")  #: false unless asked for


def _refuse_identical(inputs: dict, context: Context) -> None:
    for held in context.world.all(RECORD).values():
        if all(held.get(key) == inputs.get(key) for key in IDENTITY):
            raise StandInError(f"an identical record already exists: {inputs['type']} {inputs['name']} "
                               f"(code 81058); adopt it with dnsImportIds")


def _stamps(inputs: dict, context: Context) -> dict:
    now = _now()
    return {"createdOn": context.previous.get("createdOn", now), "modifiedOn": now,
            "proxiable": inputs["type"] in ("A", "AAAA", "CNAME")}


def _serve_zones(operation: str, outputs: dict, context: Context) -> None:
    if cloud.backed():
        # the cloud reads the records itself, under its lock: records created in parallel are never lost
        cloud.call("dns.serve", records_folder=str(context.world.root / RECORD.rsplit(":", 1)[1]))


def seed_zone(world: Path, zone_id: str, name: str) -> None:
    """Zone `name` in the account, under `zone_id`, in the stand-in world `world` (CERES_STANDIN_WORLD)."""
    World("cloudflare", world).put(ZONE, zone_id, {"id": zone_id, "name": name})


def signing_key_path(provider_world: Path, zone_id: str) -> Path:
    """Where the world keeps the private key of signed zone `zone_id`; `provider_world` is the world's
    cloudflare folder (the parent of the records folder `dns.serve` is given)."""
    return provider_world / SIGNING_KEYS / f"{zone_id}.pem"


def signing_key_pem(provider_world: Path, zone_id: str) -> str | None:
    """The private key (PKCS#8 PEM, ECDSA P-256) zone `zone_id` is signed with while its DNSSEC is on, for a
    zone server to sign the zone as Cloudflare does; None while the zone is unsigned."""
    path = signing_key_path(provider_world, zone_id)
    return path.read_text() if path.is_file() else None


def _zone_name(inputs: dict, context: Context) -> str:
    zone = context.world.get(ZONE, inputs["zoneId"])
    if zone is None:
        raise StandInError(f"zone {inputs['zoneId']} is not in this account (code 7003: could not route to "
                           f"/zones/{inputs['zoneId']}/dnssec); the test seeds its zones with seed_zone")
    return zone["name"]


def _sign(inputs: dict, context: Context) -> dict:
    """A new key for the zone, kept in the world, and what Cloudflare reports for it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from components.builders.dnssec import zone_key_report

    zone = _zone_name(inputs, context)  # refused before any key is made
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = signing_key_path(context.world.root, inputs["zoneId"])
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(pem)
    temporary.chmod(0o600)
    temporary.replace(path)
    return {**zone_key_report(zone, key.public_key()),
            **{option: inputs.get(option, False) for option in DNSSEC_OPTIONS},
            "status": inputs.get("status", "active"), "modifiedOn": _now()}


def _touched(inputs: dict, context: Context) -> dict:
    return {"modifiedOn": _now()}


def _dnssec_changed(operation: str, outputs: dict, context: Context) -> None:
    """Turned off (deleted), the zone's key goes: Cloudflare signs with a new one if it is turned on again."""
    if operation == "delete":
        signing_key_path(context.world.root, outputs["zoneId"]).unlink(missing_ok=True)
    _serve_zones(operation, outputs, context)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        ZONE_DNSSEC: Kind(
            token=ZONE_DNSSEC,
            replace_on=("zoneId",),
            compute=_sign,
            recompute=_touched,
            computed=("algorithm", "digest", "digestAlgorithm", "digestType", "ds", "flags", "keyTag", "keyType",
                      "modifiedOn", "publicKey", *DNSSEC_OPTIONS),
            recomputed=("modifiedOn",),
            make_id=lambda outputs, context: outputs["zoneId"],  # one per zone: the real provider's id is the zone's
            after=_dnssec_changed,
        ),
    },
)
