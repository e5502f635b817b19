"""The test internet's authoritative DNS (BIND), serving what the Cloudflare stand-in holds (tests only).

Cloudflare serves a zone's records the moment its API has accepted them. Here BIND is authoritative for
the stack's zones, the reverse zone and the other domain: each zone is the records of the stand-in's
world (read as Cloudflare reads a DnsRecord's inputs) plus what exists without the stack (the platform's
SSO host, the PTRs set at the IP provider, the other domain). `serve` writes the zone files, makes named
reload them and returns once named answers with the new SOA of every zone, so a record that a `pulumi up`
created is served before anything that depends on it runs.

A zone whose DNSSEC is on (the stand-in's ZoneDnssec exists, and with it the zone's private key in the
world) is served signed with that key, as Cloudflare signs it: `serve` signs it again every time
(dnssec-signzone, tests/dns_signing.py), so the signatures always cover the records just written, and waits
for named to answer with the new signatures, not only the serial (a zone signed again keeps its serial).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

from components.builders.dns_records import Record
from components.builders.zone_file import render_zone
from tests.dns_harness import (ZoneStamp, named_argv, replace_zone_file, served_zone_stamp, write_named_config,
                               zone_stamp)
from tests.dns_signing import key_from_pem, sign
from tests.engine.standins.cloudflare_dns import signing_key_pem
from tests.mailnet.scenario import NAMESERVERS, cloudflare_record
from tests.testnet import NetnsHost

log = logging.getLogger(__name__)

SERVE_TIMEOUT = 20.0


class ZoneServer:
    """named in the test's DNS host, authoritative for `zones` (zone id -> domain) and the fixed records' zones."""

    def __init__(self, host: NetnsHost, workdir: Path, zones: dict[str, str], fixed: list[Record], ttl: int):
        self.host = host
        self.workdir = workdir
        self.zone_of = dict(zones)
        self.fixed = list(fixed)
        self.ttl = ttl
        self.origins = sorted(set(zones.values()) | {record.zone for record in fixed})
        self._lock = threading.Lock()
        self._files: dict[str, Path] = {}
        self._named: subprocess.Popen | None = None
        self.served: list[tuple[float, frozenset[tuple[str, str]]]] = []  #: (when, {(name, type)}) per serve
        self.signed: frozenset[str] = frozenset()  #: the zones the last serve signed

    def start(self) -> "ZoneServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        texts = self._render([])
        config = write_named_config(self.workdir, texts, self.host.address)
        self._files = {origin: next(self.workdir.glob(f"*.{origin}.db")) for origin in texts}
        self._named = self.host.popen(named_argv(config), stdout=subprocess.DEVNULL,
                                      stderr=(self.workdir / "named.log").open("w"))
        self._wait_serving(texts)
        return self

    def serve(self, records_folder: str) -> None:
        """Serve exactly the DnsRecords held in `records_folder` (the stand-in's world), and wait for it."""
        with self._lock:
            held = []
            for path in sorted(Path(records_folder).glob("*.json")):
                try:
                    held.append(json.loads(path.read_text()))
                except FileNotFoundError:
                    continue  # deleted meanwhile by a parallel call, which serves the zones again after
            unknown = sorted({fields["zoneId"] for fields in held} - set(self.zone_of))
            if unknown:
                raise ValueError(f"zone {unknown[0]} does not exist in this account (Cloudflare error 7003)")
            records = [cloudflare_record(self.zone_of[fields["zoneId"]], fields) for fields in held]
            texts = self._render(records)
            signed = self._sign(texts, Path(records_folder).parent)
            for origin, text in texts.items():
                if self._files[origin].read_text() != text:
                    replace_zone_file(self._files[origin], text)
            self._named.send_signal(signal.SIGHUP)
            self._wait_serving(texts)
            self.signed = frozenset(signed)
            self.served.append((time.monotonic(), frozenset((r.name, r.type) for r in records)))

    def stop(self) -> None:
        if self._named and self._named.poll() is None:
            self._named.terminate()
            self._named.wait(timeout=10)

    def _render(self, records: list[Record]) -> dict[str, str]:
        everything = [*records, *self.fixed]
        return {origin: render_zone(origin, everything, NAMESERVERS, self.ttl) for origin in self.origins}

    def _sign(self, texts: dict[str, str], provider_world: Path) -> list[str]:
        """Each of the account's zones whose DNSSEC is on, in `texts`, signed with the key the stand-in keeps for
        it in `provider_world` (its cloudflare folder); the zones signed."""
        signed = []
        for zone_id, origin in sorted(self.zone_of.items()):
            pem = signing_key_pem(provider_world, zone_id)
            if pem is not None:
                key = key_from_pem(origin, pem, self.workdir / "keys" / zone_id)
                texts[origin] = sign(origin, texts[origin], [key])
                signed.append(origin)
        return signed

    def _wait_serving(self, texts: dict[str, str]) -> None:
        wanted: dict[str, ZoneStamp] = {origin: zone_stamp(origin, text) for origin, text in texts.items()}
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            pending = [origin for origin, stamp in wanted.items()
                       if served_zone_stamp(self.host, self.host.address, origin) != stamp]
            if not pending:
                return
            if time.monotonic() > deadline or (self._named and self._named.poll() is not None):
                log_text = (self.workdir / "named.log").read_text()[-3000:]
                raise RuntimeError(f"named does not serve the new {pending} within {SERVE_TIMEOUT:g} s:\n{log_text}")
            time.sleep(0.2)
