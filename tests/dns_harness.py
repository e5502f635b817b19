"""A real authoritative DNS server (BIND's `named`, from Debian) and BIND's zone judge, for zones the project renders.

Why: string checks on rendered records cannot tell whether a resolver would get the answers we mean. Here
`named-checkzone` judges a zone the way BIND would load it, and `authoritative_dns` serves zones from a real
`named` on a loopback address, so tests can query it with dnspython exactly as a mail peer would.

Everything stays on this machine: `named` listens only on the given 127.x address (IPv4 only, port 53),
answers only for its own zones (no recursion) and sends nothing out (no NOTIFY to the zones' NS names).
It needs root (port 53, and `ip` to put the address on lo) and the Debian packages in system-packages.txt.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.zone

from tests.testnet.linux import Programs

# The strictest named-checkzone 9.18 settings for zones whose NS names are out of zone (Cloudflare's):
#   -k fail  host names that break check-names rules        -n fail  NS targets that are IP addresses
#   -m fail  MX targets that are IP addresses               -M fail  MX targets that are CNAMEs
#   -S fail  SRV targets that are CNAMEs                    -r fail  records equal in plain DNS, not DNSSEC
#   -i local post-load integrity checks of in-zone names (MX/SRV targets, delegations and their glue).
# Not `-i full`: it also resolves out-of-zone MX/SRV/delegation targets with getaddrinfo, i.e. through the
# resolver in /etc/resolv.conf, which is traffic off this machine that tests must not send; with no network
# those look-ups only end in a warning anyway, so `full` would add traffic, not checks. (Apex NS names are
# never looked up, so out-of-zone NS pass under either mode.) -W and -T only know warn|ignore: left at warn,
# so their findings show in the output the caller prints.
CHECKZONE_FLAGS = ("-k", "fail", "-n", "fail", "-m", "fail", "-M", "fail", "-S", "fail", "-r", "fail", "-i", "local")

STARTUP_TIMEOUT = 10.0  # seconds for named to answer SOA for every zone
POLL_INTERVAL = 0.1
QUERY_TIMEOUT = 0.5
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


def check_zone(origin: str, zone_text: str) -> subprocess.CompletedProcess:
    """Run named-checkzone on `zone_text` as zone `origin`; stdout holds its findings (stderr merged in)."""
    with tempfile.TemporaryDirectory(prefix="checkzone-") as tmp:
        zone_file = Path(tmp) / "zone.db"
        zone_file.write_text(zone_text)
        return subprocess.run(
            ["named-checkzone", *CHECKZONE_FLAGS, origin, str(zone_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def resolver_for(address: str) -> dns.resolver.Resolver:
    """A stub resolver that asks only `address` (never /etc/resolv.conf's servers)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [address]
    resolver.lifetime = 3.0
    return resolver


@contextlib.contextmanager
def authoritative_dns(zones: dict[str, str], address: str = "127.0.53.53") -> Iterator[str]:
    """Serve `zones` ({origin: zone text}) from a real `named` on `address`:53; yields the address.

    Each use starts its own named in a temp dir and stops it on exit (port freed), so uses can follow one
    another in a session, and two can run at once on different 127.x addresses.
    """
    _require_loopback(address)
    if os.geteuid() != 0:
        raise RuntimeError("authoritative_dns needs root: named listens on port 53 and the address goes on lo")
    with tempfile.TemporaryDirectory(prefix="named-") as tmp, _on_loopback(address):
        workdir = Path(tmp)
        _require_free(address)
        config = write_named_config(workdir, zones, address)
        log_path = workdir / "named.stderr"
        with log_path.open("w") as log:
            named = subprocess.Popen(
                named_argv(config),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            _wait_until_serving(named, zones, address, log_path)
            yield address
        finally:
            _stop(named)


class LoopbackHost(Programs):
    """`address` (127.x) on this machine's lo as a place to run DNS servers, with the run/popen of a test
    internet's NetnsHost (linux.Programs), so what runs on netns hosts (tests/testnet/dns_tree.py) runs here
    the same; as a context manager: on exit its programs are stopped and the address leaves lo. Needs root."""

    def __init__(self, address: str):
        _require_loopback(address)
        if os.geteuid() != 0:
            raise RuntimeError("a LoopbackHost needs root: its servers listen on port 53 and its address goes on lo")
        self.name = self.address = address
        self._processes: list[subprocess.Popen] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> LoopbackHost:
        self._stack.enter_context(_on_loopback(self.address))
        self._stack.callback(self._stop_processes)
        try:
            _require_free(self.address)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


def named_argv(config: Path) -> list[str]:
    """named in the foreground (-g: logs to stderr), IPv4 only, as root (it binds port 53)."""
    return ["named", "-4", "-g", "-u", "root", "-c", str(config)]


def _require_loopback(address: str) -> None:
    if not ipaddress.IPv4Address(address).is_loopback:
        raise ValueError(f"{address} is not in 127.0.0.0/8: the DNS harness listens on loopback only")


@contextlib.contextmanager
def _on_loopback(address: str) -> Iterator[None]:
    """Put `address`/32 on lo for the duration (named binds only to addresses an interface has)."""
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
    if f"inet {address}/" in shown.stdout:
        yield
        return
    subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True, check=False)


def _require_free(address: str) -> None:
    """Fail now if something (a named left from a killed run) holds address:53: it would answer instead."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((address, 53))
            except OSError as error:
                raise RuntimeError(f"{address}:53 is already in use ({error}); stop whatever holds it") from None


def zone_path(workdir: Path, index: int, origin: str) -> Path:
    """Where write_named_config puts zone `origin` (the root zone's file is named `root`)."""
    return workdir / f"{index}.{origin.strip('.') or 'root'}.db"


def replace_zone_file(path: Path, text: str) -> None:
    """Write `text` as the zone file `path` so that named's next reload takes it: named reloads a file only when it
    is newer than what it loaded, and two writes within one second may look alike to it."""
    previous = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(text)
    stamp = max(time.time(), previous + 1)
    os.utime(path, (stamp, stamp))


#: what tells one version of a zone from another: its SOA serial, and the signatures of its SOA (a zone signed
#: again keeps its serial, never its signatures; () for an unsigned zone)
ZoneStamp = tuple[int, tuple[bytes, ...]]


def zone_stamp(origin: str, text: str) -> ZoneStamp:
    """The stamp of zone text `text` of `origin`, signed or not (parsed by dnspython)."""
    name = dns.name.from_text(origin)
    zone = dns.zone.from_text(text, origin=name, relativize=False, check_origin=False)
    [soa] = zone.find_rdataset(name, dns.rdatatype.SOA)
    signatures = zone.get_rdataset(name, dns.rdatatype.RRSIG, covers=dns.rdatatype.SOA)
    return soa.serial, tuple(sorted(rrsig.signature for rrsig in signatures or ()))


def served_zone_stamp(place, server: str, origin: str) -> ZoneStamp | None:
    """The stamp of the zone `origin` that `server` answers for now, asked with dig from `place` (anything with a
    NetnsHost's `run`); None while it does not answer the zone's SOA."""
    result = place.run(["dig", f"@{server}", "+dnssec", "+norecurse", "+noall", "+answer", "+time=2", "+tries=1",
                        origin, "SOA"], timeout=15)
    serial, signatures = None, []
    for line in result.stdout.splitlines() if result.returncode == 0 else ():
        fields = line.split(None, 4)
        if len(fields) < 5 or line.startswith(";"):
            continue
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(fields[3]), fields[4])
        if rdata.rdtype == dns.rdatatype.SOA:
            serial = rdata.serial
        elif rdata.rdtype == dns.rdatatype.RRSIG and rdata.type_covered == dns.rdatatype.SOA:
            signatures.append(rdata.signature)
    return None if serial is None else (serial, tuple(sorted(signatures)))


def zone_transfer(place, server: str, origin: str) -> str:
    """Zone `origin` as `server` serves it (AXFR with dig from `place`), one record a line, signatures included: what
    a secondary would load. The SOA that closes a transfer is left out, so the text is a zone file again."""
    result = place.run(["dig", f"@{server}", "+noall", "+answer", "+time=2", "+tries=1", origin, "AXFR"], timeout=30)
    lines = [line for line in result.stdout.splitlines() if line.strip() and not line.startswith(";")]
    if result.returncode != 0 or len(lines) < 2 or "Transfer failed" in result.stdout:
        raise RuntimeError(f"AXFR of {origin} from {server} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return "\n".join(lines[:-1]) + "\n"


def write_named_config(workdir: Path, zones: dict[str, str], address: str, controls: str = "") -> Path:
    """The zone files and a minimal named.conf: authoritative only, on `address` alone, nothing sent out.
    `controls`: the rndc channel (control_channel's clauses); none by default."""
    zone_clauses = []
    for index, (origin, text) in enumerate(zones.items()):
        path = zone_path(workdir, index, origin)
        path.write_text(text)
        zone_clauses.append(f'zone "{origin}" {{ type primary; file "{path}"; }};')
    policy = """recursion no;
    dnssec-validation no;
    notify no;  // a primary would otherwise NOTIFY the zones' (real, remote) NS names"""
    return _write_config(workdir, address, policy, controls, "\n".join(zone_clauses))


def write_resolver_config(workdir: Path, address: str, root_servers: dict[str, str], anchors: str,
                          controls: str = "") -> Path:
    """named.conf of a validating recursive resolver on `address`: it starts from `root_servers` ({name:
    IPv4 address}, its root hints) and trusts only `anchors` (a trust-anchors clause, dns_signing.trust_anchors),
    never BIND's built-in root key; an answer that does not validate from there is SERVFAIL."""
    hints = workdir / "root.hints"
    hints.write_text("".join(f". 3600000 IN NS {name.rstrip('.')}.\n" for name in root_servers)
                     + "".join(f"{name.rstrip('.')}. 3600000 IN A {ip}\n" for name, ip in root_servers.items()))
    policy = """recursion yes;
    allow-recursion { any; };
    dnssec-validation yes;  // with the trust-anchors below only (auto would add the real root's key)
    empty-zones-enable no;  // BIND would answer the documentation ranges' reverse zones empty itself"""
    zones = f'{anchors.strip()}\nzone "." {{ type hint; file "{hints}"; }};'
    return _write_config(workdir, address, policy, controls, zones)


def _write_config(workdir: Path, address: str, policy: str, controls: str, zones: str) -> Path:
    config = workdir / "named.conf"
    config.write_text(
        f"""options {{
    directory "{workdir}";
    pid-file "{workdir / 'named.pid'}";
    session-keyfile "{workdir / 'session.key'}";
    managed-keys-directory "{workdir}";
    listen-on port 53 {{ {address}; }};
    listen-on-v6 {{ none; }};
    allow-query {{ any; }};
    {policy}
}};
{controls or "controls { };  // no rndc channel on 127.0.0.1:953"}
{zones}
"""
    )
    return config


def control_channel(workdir: Path, address: str) -> tuple[str, Path]:
    """An rndc channel on `address`:953 for a named of `workdir`: (the key and controls clauses for its
    named.conf, the rndc.conf that reaches it with the same new key). rndc_argv runs rndc with it."""
    key = f'key "ceres-test" {{ algorithm hmac-sha256; secret "{base64.b64encode(os.urandom(32)).decode()}"; }};'
    rndc_conf = workdir / "rndc.conf"
    rndc_conf.touch(mode=0o600)
    rndc_conf.write_text(f'{key}\noptions {{ default-key "ceres-test"; default-server {address}; default-port 953; }};\n')
    clauses = f'{key}\ncontrols {{ inet {address} port 953 allow {{ any; }} keys {{ "ceres-test"; }}; }};'
    return clauses, rndc_conf


def rndc_argv(rndc_conf: Path, *command: str) -> list[str]:
    """rndc with the channel of `rndc_conf` (control_channel), e.g. ("reload", "com") or ("flush",)."""
    return ["rndc", "-c", str(rndc_conf), *command]


def _wait_until_serving(named: subprocess.Popen, zones: dict[str, str], address: str, log_path: Path) -> None:
    """Poll until named answers SOA with NOERROR for every zone; raise with named's log if it cannot."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = list(zones)
    while True:
        if named.poll() is not None:
            _startup_failed(f"named exited with {named.returncode}", log_path)
        loaded = _has_loaded_all(log_path)  # read before querying, so a late load is never taken as final
        pending = [origin for origin in pending if _soa_rcode(origin, address) != dns.rcode.NOERROR]
        if not pending:
            return
        if loaded:  # named has loaded all it could: a zone still failing will not recover
            _startup_failed(f"named does not serve {pending}", log_path)
        if time.monotonic() > deadline:
            _startup_failed(f"named did not serve {pending} within {STARTUP_TIMEOUT:g} s", log_path)
        time.sleep(POLL_INTERVAL)


def _has_loaded_all(log_path: Path) -> bool:
    """named logs a bare `running` once every zone it could load is loaded."""
    return any(line.endswith(" running") for line in log_path.read_text().splitlines())


def _soa_rcode(origin: str, address: str) -> int | None:
    try:
        return dns.query.udp(dns.message.make_query(origin, "SOA"), address, timeout=QUERY_TIMEOUT).rcode()
    except (dns.exception.Timeout, OSError):
        return None


def _startup_failed(reason: str, log_path: Path) -> None:
    raise RuntimeError(f"{reason}; named's stderr:\n{log_path.read_text()}")


def _stop(named: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; waits, so the port is free when this returns."""
    if named.poll() is not None:
        return
    named.send_signal(signal.SIGTERM)
    try:
        named.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        named.kill()
        named.wait()
