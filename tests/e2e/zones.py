"""The test internet's authoritative DNS (BIND), serving what the Cloudflare stand-in holds (tests only).

Cloudflare serves a zone's records the moment its API has accepted them. Here BIND is authoritative for
the stack's zones, the reverse zone and the other domain: each zone is the records of the stand-in's
world (read as Cloudflare reads a DnsRecord's inputs) plus what exists without the stack (the platform's
SSO host, the PTRs set at the IP provider, the other domain). `serve` writes the zone files, makes named
reload them and returns once named answers with the new SOA serial of every zone, so a record that a
`pulumi up` created is served before anything that depends on it runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from components.builders.dns_records import Record
from components.builders.zone_file import render_zone
from tests.dns_harness import named_argv, write_named_config
from tests.mailnet.scenario import NAMESERVERS, cloudflare_record
from tests.testnet import NetnsHost

log = logging.getLogger(__name__)

PROBE = Path(__file__).resolve().parents[1] / "mailnet" / "probe.py"
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
            for origin, text in texts.items():
                path = self._files[origin]
                if path.read_text() != text:
                    previous = path.stat().st_mtime
                    path.write_text(text)
                    # named reloads a zone whose file is newer than what it loaded: make sure it is
                    stamp = max(time.time(), previous + 1)
                    os.utime(path, (stamp, stamp))
            self._named.send_signal(signal.SIGHUP)
            self._wait_serving(texts)
            self.served.append((time.monotonic(), frozenset((r.name, r.type) for r in records)))

    def stop(self) -> None:
        if self._named and self._named.poll() is None:
            self._named.terminate()
            self._named.wait(timeout=10)

    def _render(self, records: list[Record]) -> dict[str, str]:
        everything = [*records, *self.fixed]
        return {origin: render_zone(origin, everything, NAMESERVERS, self.ttl) for origin in self.origins}

    def _wait_serving(self, texts: dict[str, str]) -> None:
        wanted = {origin: re.search(r"\sSOA\s+\S+\s+\S+\s+(\d+)", text).group(1) for origin, text in texts.items()}
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            pending = [origin for origin, serial in wanted.items() if self._served_serial(origin) != serial]
            if not pending:
                return
            if time.monotonic() > deadline or (self._named and self._named.poll() is not None):
                log_text = (self.workdir / "named.log").read_text()[-3000:]
                raise RuntimeError(f"named does not serve the new {pending} within {SERVE_TIMEOUT:g} s:\n{log_text}")
            time.sleep(0.2)

    def _served_serial(self, origin: str) -> str | None:
        result = self.host.run([sys.executable, str(PROBE), "dns", "--host", self.host.address, "--name", origin,
                                "--subject", "SOA"], timeout=10)
        if result.returncode != 0:
            return None
        answer = json.loads(result.stdout).get("answer") or []
        found = re.search(r"\sSOA\s+\S+\s+\S+\s+(\d+)", answer[0]) if answer else None
        return found.group(1) if found else None
