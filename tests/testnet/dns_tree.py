"""The test internet's signed DNS tree: a root of its own, its top-level domains, and a resolver that trusts only it.

    root      named, authoritative for `.` and the top-level domains the tests use (com, net, org, arpa),
              each zone signed with a key of its own (tests/dns_signing.py); each TLD's DS is in the root
    resolver  named, recursive and validating: its root hints name the root host, and its one trust anchor
              is the root's key (never the real root's)

Why: a domain is secure only through a chain of DS records from a root that a resolver trusts, so a test of
DNSSEC needs a root, TLDs and a registrar of its own. The tree is additive: hosts that ask an authoritative
server directly go on doing so; a test that wants validation asks `resolver`.

The tests' domains are delegated from their TLD (`delegate`) to the servers that hold them, with glue where
the parent holds the server's name. A delegation starts insecure: the parent has no DS for it, so the
resolver answers the child's records without AD, signed or not, never SERVFAIL. `register_ds` is the
registrar's step: it puts the child's DS into the parent, signs the parent again, reloads it on the root host
and empties the resolver's cache; from then on the child's answers validate (AD), or are bogus (SERVFAIL)
when its signatures do not match that DS.

The hosts are anything with an `address` and a NetnsHost's `run`/`popen`: two netns hosts of a TestNet, or
two dns_harness.LoopbackHosts on 127.x.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from tests.dns_harness import (control_channel, named_argv, rndc_argv, write_named_config, write_resolver_config,
                               zone_path)
from tests.dns_signing import ZoneKey, absolute, ds_of, make_key, sign, trust_anchors

TLDS = ("com", "net", "org", "arpa")
ROOT_SERVER = "a.root-servers.net."  #: the name of the root host, in the root zone (glue) and in net.
TTL = 60  #: of every record of the tree's zones, and their negative answers
SERVE_TIMEOUT = 10.0
POLL_INTERVAL = 0.05


class Place(Protocol):
    """Where a server of the tree runs: tests.testnet.NetnsHost or tests.dns_harness.LoopbackHost."""

    address: str

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen: ...

    def run(self, argv: list[str], timeout: float = ..., **kwargs) -> subprocess.CompletedProcess: ...


@dataclass(frozen=True)
class Answer:
    """What dig got: the response code, the header flags (`ad` when the resolver validated) and the answer."""

    rcode: str
    flags: frozenset[str]
    records: tuple[str, ...]  #: the answer section, one record a line, RRSIGs included

    @property
    def secure(self) -> bool:
        return self.rcode == "NOERROR" and "ad" in self.flags

    def rdata(self, rdtype: str) -> list[str]:
        """The data of the answer's records of type `rdtype` (e.g. "MX" -> ["10 mail.example.com."])."""
        return [line.split(None, 4)[4] for line in self.records if line.split(None, 4)[3] == rdtype]


@dataclass
class _Zone:
    """A zone of the root host: its key, its serial, and what it delegates (child -> {NS name: address}; DS data)."""

    origin: str
    key: ZoneKey
    serial: int = 1
    delegations: dict[str, dict[str, str]] = field(default_factory=dict)
    ds: dict[str, list[str]] = field(default_factory=dict)


class DnsTree:
    """The root (and TLDs) on `root`, the validating resolver on `resolver`; files under `workdir`. Each zone's
    key is made here; `start` serves them."""

    def __init__(self, workdir: Path, root: Place, resolver: Place, tlds: tuple[str, ...] = TLDS):
        self.workdir = workdir
        self.root_host = root
        self.resolver_host = resolver
        self.origins = (".", *(absolute(tld) for tld in tlds))
        self.zones: dict[str, _Zone] = {}
        self._files: dict[str, Path] = {}
        self._rndc: dict[str, Path] = {}
        self._named: list[tuple[subprocess.Popen, Path]] = []  #: each named and its workdir (its log)
        for origin in self.origins:
            self.zones[origin] = _Zone(origin, make_key(origin, workdir / "keys"))
        for origin in self.origins[1:]:
            self.zones["."].delegations[origin] = {ROOT_SERVER: root.address}
            self.zones["."].ds[origin] = [_ds_rdata(origin, ds_of(self.zones[origin].key))]

    @property
    def resolver(self) -> str:
        """The validating resolver's address: what a test (or a host's resolv.conf) asks."""
        return self.resolver_host.address

    @property
    def anchors(self) -> str:
        """The one trust anchor of the test internet (the root's key), as a named.conf/delv trust-anchors clause."""
        return trust_anchors(self.zones["."].key)

    @property
    def anchors_file(self) -> Path:
        """`anchors` in a file, for delv's -a."""
        return self.workdir / "anchors.conf"

    def parent_of(self, child: str) -> str:
        """The tree's zone that delegates `child`: the longest of its origins `child` lies below."""
        if absolute(child) in self.origins:
            raise ValueError(f"{child} is a zone of the tree itself, not a child to delegate")
        name = dns.name.from_text(child)
        parents = [origin for origin in self.origins if name.is_subdomain(dns.name.from_text(origin))]
        return max(parents, key=lambda origin: len(dns.name.from_text(origin)))  # "." holds every name

    def delegate(self, child: str, nameservers: dict[str, str]) -> None:
        """Delegate `child` to `nameservers` ({NS name: IPv4 address}), insecurely (no DS yet); published at
        once if the tree runs."""
        if not nameservers:
            raise ValueError(f"{child}: a delegation needs a name server")
        parent = self.parent_of(child)
        self.zones[parent].delegations[absolute(child)] = {absolute(name): ip for name, ip in nameservers.items()}
        self._publish(parent)

    def register_ds(self, child: str, ds_lines: list[str]) -> None:
        """The registrar's step: `child`'s DS records in its parent are now `ds_lines` (each a DS record in
        presentation form, `<child>. [ttl] IN DS <tag> <alg> <digest type> <digest>`, or its data alone; none
        removes them). The parent is signed again and reloaded, and the resolver forgets what it cached."""
        child, parent = absolute(child), self.parent_of(child)
        if child not in self.zones[parent].delegations:
            raise ValueError(f"{child} is not delegated from {parent}: delegate it first")
        self.zones[parent].ds[child] = [_ds_rdata(child, line) for line in ds_lines]
        if self._publish(parent):
            self.flush()

    def start(self) -> DnsTree:
        """Every zone signed, named on both hosts; returns once the resolver validates the root's answers."""
        self.anchors_file.write_text(self.anchors)
        self._start_root()
        self._start_resolver()
        return self

    def text(self, origin: str) -> str:
        """Zone `origin` of the root host, unsigned: SOA, NS, each delegation's NS and DS, and the addresses of
        the name servers whose names lie in the zone (glue below a delegation)."""
        zone = self.zones[absolute(origin)]
        lines = [f"$TTL {TTL}",
                 f"{zone.origin} IN SOA {ROOT_SERVER} hostmaster.{ROOT_SERVER} {zone.serial} 1800 900 604800 {TTL}",
                 f"{zone.origin} IN NS {ROOT_SERVER}"]
        addresses = {ROOT_SERVER: self.root_host.address}
        for child, nameservers in sorted(zone.delegations.items()):
            lines += [f"{child} IN NS {name}" for name in sorted(nameservers)]
            lines += [f"{child} IN DS {rdata}" for rdata in zone.ds.get(child, [])]
            addresses.update(nameservers)
        origin_name = dns.name.from_text(zone.origin)
        lines += [f"{name} IN A {address}" for name, address in sorted(addresses.items())
                  if dns.name.from_text(name).is_subdomain(origin_name)]
        return "\n".join(lines) + "\n"

    def signed(self, origin: str) -> str:
        """Zone `origin` signed with its key."""
        zone = self.zones[absolute(origin)]
        return sign(zone.origin, self.text(zone.origin), [zone.key])

    def ask(self, place: Place, name: str, rdtype: str, server: str | None = None) -> Answer:
        """dig from `place` to the resolver (or `server`), DNSSEC records asked for (DO)."""
        result = place.run(["dig", f"@{server or self.resolver}", "+dnssec", "+noall", "+comments", "+answer",
                            "+time=2", "+tries=1", name, rdtype], timeout=15)
        status = re.search(r"status: (\w+)", result.stdout)
        if result.returncode != 0 or not status:
            raise RuntimeError(f"dig {name} {rdtype} got no answer ({result.returncode}): {result.stdout}{result.stderr}")
        flags = re.search(r";; flags: ([^;]*);", result.stdout)
        records = tuple(" ".join(line.split()) for line in result.stdout.splitlines()
                        if line.strip() and not line.startswith(";"))
        return Answer(status.group(1), frozenset(flags.group(1).split() if flags else ()), records)

    def delv(self, place: Place, name: str, rdtype: str) -> subprocess.CompletedProcess:
        """delv from `place`: it fetches the chain through the resolver (with CD, so the resolver's own verdict
        does not count) and validates it itself from `anchors` alone. Its first line says what it found: `;
        fully validated`, `; unsigned answer`, or `;; resolution failed: ...`."""
        return place.run(["delv", "+cdflag", f"@{self.resolver}", "-a", str(self.anchors_file), name, rdtype],
                         timeout=30)

    def serving(self, server: str, origins) -> bool:
        """Whether `server` answers the SOA of each of `origins` (asked from the root host): a child's server is up."""
        return all(self._answers(server, origin, "SOA") for origin in origins)

    def flush(self) -> None:
        """Empty the resolver's cache (rndc flush), as if every TTL had run out."""
        self.resolver_host.run(rndc_argv(self._rndc["resolver"], "flush"), check=True)

    # -- the servers --

    def _publish(self, origin: str) -> bool:
        """Zone `origin` changed: if the root host serves already, sign it with a new serial, reload it there and
        wait until it is served (True); before `start`, nothing to do (False: start signs every zone)."""
        if not self._files:
            return False
        zone = self.zones[origin]
        zone.serial += 1
        self._files[origin].write_text(self.signed(origin))
        self.root_host.run(rndc_argv(self._rndc["root"], "reload", origin), check=True)
        self._wait(lambda: self._serial(origin) == zone.serial, f"the root host to serve {origin} serial {zone.serial}")
        return True

    def _start_root(self) -> None:
        workdir = self.workdir / "root"
        workdir.mkdir()
        controls, self._rndc["root"] = control_channel(workdir, self.root_host.address)
        config = write_named_config(workdir, {origin: self.signed(origin) for origin in self.origins},
                                    self.root_host.address, controls)
        self._files = {origin: zone_path(workdir, index, origin) for index, origin in enumerate(self.origins)}
        self._start_named(self.root_host, config, workdir)
        self._wait(lambda: all(self._serial(origin) == 1 for origin in self.origins), "the root host to serve")

    def _start_resolver(self) -> None:
        workdir = self.workdir / "resolver"
        workdir.mkdir()
        controls, self._rndc["resolver"] = control_channel(workdir, self.resolver)
        config = write_resolver_config(workdir, self.resolver, {ROOT_SERVER: self.root_host.address}, self.anchors,
                                       controls)
        self._start_named(self.resolver_host, config, workdir)
        self._wait(lambda: self._answers(self.resolver, ".", "SOA", secure=True), "the resolver to validate the root")

    def _start_named(self, place: Place, config: Path, workdir: Path) -> None:
        with (workdir / "named.log").open("w") as log:
            self._named.append((place.popen(named_argv(config), stdout=subprocess.DEVNULL, stderr=log), workdir))

    def _serial(self, origin: str) -> int | None:
        answer = self._answers(self.root_host.address, origin, "SOA")
        soa = answer.rdata("SOA") if answer else []
        return int(soa[0].split()[2]) if soa else None

    def _answers(self, server: str, name: str, rdtype: str, secure: bool = False) -> Answer | None:
        """`server`'s answer (asked from the root host) if NOERROR (and validated, if `secure`), else None."""
        try:
            answer = self.ask(self.root_host, name, rdtype, server)
        except RuntimeError:
            return None
        return answer if answer.rcode == "NOERROR" and (answer.secure or not secure) else None

    def _wait(self, done, what: str) -> None:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while not done():
            exited = [workdir for process, workdir in self._named if process.poll() is not None]
            if exited or time.monotonic() > deadline:
                logs = "\n".join(f"{workdir.name}:\n{(workdir / 'named.log').read_text()[-3000:]}"
                                 for _, workdir in self._named)
                raise RuntimeError(f"waited in vain for {what} ({SERVE_TIMEOUT:g} s); named's logs:\n{logs}")
            time.sleep(POLL_INTERVAL)


def _ds_rdata(child: str, line: str) -> str:
    """The DS data in `line` (a DS record in presentation form, or its data alone), checked to be `child`'s."""
    tokens = line.split()
    upper = [token.upper() for token in tokens]
    if "DS" in upper:
        at = upper.index("DS")
        if at and absolute(tokens[0]) != absolute(child):
            raise ValueError(f"a DS record of {tokens[0]}, not of {child}: {line!r}")
        tokens = tokens[at + 1:]
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DS, " ".join(tokens)).to_text()
