"""DNSSEC for the test DNS: zone keys, signed zones, DS records and the signed-zone judge, all by BIND's own tools.

Why: a mail domain is secure only through a chain of signatures from a root a resolver trusts. The tests build
that chain from real parts: `dnssec-keygen` makes a key, `dnssec-signzone` signs a zone text with it,
`dnssec-dsfromkey` gives the DS the parent publishes, and `dnssec-verify` judges a signed zone as a
validator would. Every key is ECDSAP256SHA256 (algorithm 13) with the SEP flag (257) and signs the whole zone
(a combined signing key, as Cloudflare's one key per zone); DS records use SHA-256 (digest type 2).

A key of our own (a PEM a stand-in generated, say) becomes BIND's key files with `key_from_pem`, so the same
tools sign with it and compute its DS. Nothing here listens or sends: files in a directory, and the tools
(bind9-utils, tests/system-packages.txt).
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ECDSAP256SHA256"
ALGORITHM_NUMBER = 13
SEP_FLAGS = 257  #: zone key + secure entry point: the key a DS points at


@dataclass(frozen=True)
class ZoneKey:
    """One zone's key as BIND keeps it: `<base>.key` (the DNSKEY record) and `<base>.private` next to it."""

    zone: str
    base: Path  #: the files' path without suffix, e.g. keys/Kexample.com.+013+12345

    @property
    def dnskey(self) -> str:
        """The DNSKEY record, one line: `<zone>. IN DNSKEY 257 3 13 <base64>`."""
        lines = [line for line in self.base.with_name(self.base.name + ".key").read_text().splitlines()
                 if line.strip() and not line.startswith(";")]
        return " ".join(lines[0].split())

    @property
    def rdata(self) -> str:
        """The DNSKEY's data, as a trust anchor names it: `257 3 13 <base64>`."""
        return self.dnskey.split(" DNSKEY ", 1)[1]

    @property
    def key_tag(self) -> int:
        return int(self.base.name.rsplit("+", 1)[1])


def absolute(name: str) -> str:
    """`name` as BIND's tools write it: lower case, with its final dot."""
    return dns.name.from_text(name).to_text().lower()


def make_key(zone: str, keydir: Path) -> ZoneKey:
    """A new key for `zone` in `keydir`, made by dnssec-keygen."""
    keydir.mkdir(parents=True, exist_ok=True)
    made = _tool(["dnssec-keygen", "-q", "-a", ALGORITHM, "-f", "KSK", "-K", str(keydir), absolute(zone)])
    return ZoneKey(absolute(zone), keydir / made.stdout.strip())


def key_from_pem(zone: str, private_key_pem: str | bytes, keydir: Path) -> ZoneKey:
    """BIND's key files for `zone` from an EC P-256 private key we hold (PEM, PKCS#8 or SEC1), so the tools sign
    with exactly that key and derive its DS: the public key is the DNSKEY, the key tag as RFC 4034 computes it."""
    pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise ValueError(f"a zone key for {ALGORITHM} must be an EC P-256 private key, not {type(private).__name__}")
    public = private.public_key().public_numbers()
    public_key = public.x.to_bytes(32, "big") + public.y.to_bytes(32, "big")  # RFC 6605: Q = x | y
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY,
                                f"{SEP_FLAGS} 3 {ALGORITHM_NUMBER} {base64.b64encode(public_key).decode()}")
    zone = absolute(zone)
    keydir.mkdir(parents=True, exist_ok=True)
    base = keydir / f"K{zone}+{ALGORITHM_NUMBER:03d}+{dns.dnssec.key_id(rdata):05d}"
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    base.with_name(base.name + ".key").write_text(f"{zone} IN DNSKEY {rdata.to_text()}\n")
    secret = base64.b64encode(private.private_numbers().private_value.to_bytes(32, "big")).decode()
    private_file = base.with_name(base.name + ".private")
    private_file.touch(mode=0o600)
    private_file.write_text(f"Private-key-format: v1.3\nAlgorithm: {ALGORITHM_NUMBER} ({ALGORITHM})\n"
                            f"PrivateKey: {secret}\nCreated: {now}\nPublish: {now}\nActivate: {now}\n")
    return ZoneKey(zone, base)


def sign(origin: str, zone_text: str, keys: list[ZoneKey]) -> str:
    """`zone_text` signed by dnssec-signzone with `keys` (their DNSKEYs added at the apex), NSEC, one record a
    line with full names. The serial is kept as the text has it (-N keep): the caller changes it with the text.
    dnssec-signzone checks its own result before it writes it; a zone it cannot sign raises with its output."""
    if not keys:
        raise ValueError(f"{origin}: signing needs at least one key")
    with tempfile.TemporaryDirectory(prefix="signzone-") as tmp:
        unsigned, signed = Path(tmp) / "zone.db", Path(tmp) / "zone.signed"
        unsigned.write_text(zone_text.rstrip("\n") + "\n" + "".join(f"{key.dnskey}\n" for key in keys))
        # -z: each key signs every RRset (one key per zone, no separate zone-signing key); -d: its dsset- file
        # goes here, not into the working directory
        _tool(["dnssec-signzone", "-q", "-z", "-N", "keep", "-O", "full", "-o", absolute(origin), "-d", tmp,
               "-f", str(signed), str(unsigned), *(str(key.base) for key in keys)])
        return signed.read_text()


def ds_of(key: ZoneKey) -> str:
    """The DS record a parent publishes for `key` (SHA-256), by dnssec-dsfromkey: `<zone>. IN DS <tag> 13 2 <HEX>`."""
    made = _tool(["dnssec-dsfromkey", "-2", str(key.base.with_name(key.base.name + ".key"))])
    return " ".join(made.stdout.split())


def verify_signed(origin: str, signed_text: str) -> subprocess.CompletedProcess:
    """dnssec-verify on a signed zone: exit 0 when every RRset has a valid signature of a key at the apex and
    the NSEC chain is whole; stdout holds its findings (stderr merged in)."""
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        path = Path(tmp) / "zone.signed"
        path.write_text(signed_text)
        return subprocess.run(["dnssec-verify", "-z", "-o", absolute(origin), str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def trust_anchors(key: ZoneKey) -> str:
    """A `trust-anchors` clause (named.conf, and delv's -a file) that trusts `key` for its zone and nothing else."""
    flags, protocol, algorithm, public = key.rdata.split(" ", 3)
    return f'trust-anchors {{ "{key.zone}" static-key {flags} {protocol} {algorithm} "{public.replace(" ", "")}"; }};\n'


def _tool(argv: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result
