"""The offline stand-in for the providers: what each resource type returns when "created".

In a preview (the default) providers return their inputs and every computed value is unknown, exactly
what `pulumi preview` shows for new resources. With `known_outputs` the mocks compute realistic values
(real keys from `cryptography`, a random password, numeric ids) as an apply would; tests use that mode to
prove known secrets are redacted too.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks

from components.builders.dnssec import RESOURCE_INFIX, zone_key_report

#: the order of the P-256 group (SEC 2 2.4.2): a private key is a number from 1 to this, less one
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


# Keys made once per resource name and process: two recordings of a stack then differ only where their
# inputs differ (the tests rotate one value and compare), and RSA generation is paid once.
# (The serialized forms are kept, not the key: OpenSSH serialization salts its check bytes anew each time.)
_KEYS: dict[tuple[str, str, int], dict[str, str]] = {}


def _private_key_outputs(name: str, algorithm: str, bits: int) -> dict[str, str]:
    cache_key = (name, algorithm, bits)
    if cache_key not in _KEYS:
        key = (ed25519.Ed25519PrivateKey.generate() if algorithm == "ED25519"
               else ec.generate_private_key(ec.SECP256R1()) if algorithm == "ECDSA"
               else rsa.generate_private_key(65537, bits))
        _KEYS[cache_key] = _serialized(key)
    return dict(_KEYS[cache_key])


def _serialized(key) -> dict[str, str]:
    public = key.public_key()
    return {
        "privateKeyPem": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "privateKeyOpenssh": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode(),
        "publicKeyPem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "publicKeyOpenssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        + "\n",
    }


def offline_zone_key(zone_id: str) -> ec.EllipticCurvePrivateKey:
    """The key the offline stand-in signs zone `zone_id` with: derived from the zone id, so every recording of
    a stack gives the same DS, and a test DNS server can sign the zone with the very key whose DS the plan
    exports."""
    seed = int.from_bytes(hashlib.sha256(f"ceres-mail offline zone key {zone_id}".encode()).digest(), "big")
    return ec.derive_private_key(seed % (P256_ORDER - 1) + 1, ec.SECP256R1())


def _zone_dnssec_outputs(name: str, zone_id: str) -> dict:
    """What Cloudflare reports once it signs a zone: its key (offline_zone_key) and the DS. Cloudflare knows the
    zone's name by its id; the offline stand-in has no account to ask, so it reads the domain from the
    resource's name (`<dns>-dnssec-<domain>`)."""
    key = offline_zone_key(zone_id)
    return {**zone_key_report(name.rpartition(RESOURCE_INFIX)[2], key.public_key()), "status": "active"}


def _computed_outputs(args: MockResourceArgs) -> dict:
    """What the provider of `args.typ` computes on create (only the fields the program reads)."""
    if args.typ == "tls:index/privateKey:PrivateKey":
        return _private_key_outputs(args.name, args.inputs.get("algorithm", "RSA"), int(args.inputs.get("rsaBits", 2048)))
    if args.typ == "random:index/randomPassword:RandomPassword":
        alphabet = string.ascii_letters + string.digits + ("" if args.inputs.get("special") is False else "!#%*+-=?@_")
        return {"result": "".join(secrets.choice(alphabet) for _ in range(int(args.inputs.get("length", 32))))}
    if args.typ == "random:index/randomBytes:RandomBytes":
        drawn = secrets.token_bytes(int(args.inputs.get("length", 32)))
        return {"base64": base64.b64encode(drawn).decode(), "hex": drawn.hex()}
    if args.typ == "proxmoxve:index/vmLegacy:VmLegacy":
        return {"vmId": args.inputs.get("vmId") or 100}
    if args.typ == "cloudflare:index/zoneDnssec:ZoneDnssec":
        return _zone_dnssec_outputs(args.name, args.inputs["zoneId"])
    if args.typ == "command:remote:Command":
        return {"stdout": "ceres-mail: ready\n", "stderr": ""}
    return {}


class OfflineMocks(Mocks):
    def __init__(self, known_outputs: bool = False, overrides: dict[str, dict] | None = None):
        self.known_outputs = known_outputs
        self.overrides = overrides or {}  #: resource name -> computed outputs to return instead

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        if not self.known_outputs:
            # preview: no id yet and only the inputs are known
            return "", dict(args.inputs)
        return f"{args.name}-id", {**args.inputs, **_computed_outputs(args), **self.overrides.get(args.name, {})}

    def call(self, args: MockCallArgs) -> tuple[dict, list | None]:
        return {}, None
