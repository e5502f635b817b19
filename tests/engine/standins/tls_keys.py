"""Stands in for pulumi-tls: PrivateKey generates a real key (cryptography) in every format it exports."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.engine.standins.model import Context, Kind, StandIn
from tests.engine.standins.values import secret

CURVES = {"P224": ec.SECP224R1, "P256": ec.SECP256R1, "P384": ec.SECP384R1, "P521": ec.SECP521R1}
Encoding, PrivateFormat, PublicFormat = serialization.Encoding, serialization.PrivateFormat, serialization.PublicFormat


def _generate(inputs: dict):
    algorithm = inputs["algorithm"]
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(inputs.get("rsaBits", 2048)))
    if algorithm == "ECDSA":
        return ec.generate_private_key(CURVES[inputs.get("ecdsaCurve", "P224")]())
    if algorithm == "ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"invalid algorithm {algorithm!r}: expected RSA, ECDSA or ED25519")


def _compute(inputs: dict, context: Context) -> dict:
    key = _generate(inputs)
    none = serialization.NoEncryption()
    # the provider's "PEM" is PKCS#1 for RSA and SEC1 for ECDSA; Ed25519 only has PKCS#8
    traditional = PrivateFormat.PKCS8 if inputs["algorithm"] == "ED25519" else PrivateFormat.TraditionalOpenSSL
    public = key.public_key()
    openssh = public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    blob = base64.b64decode(openssh.split()[1])
    md5 = hashlib.md5(blob).hexdigest()
    return {
        "privateKeyPem": secret(key.private_bytes(Encoding.PEM, traditional, none).decode()),
        "privateKeyPemPkcs8": secret(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, none).decode()),
        "privateKeyOpenssh": secret(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, none).decode()),
        "publicKeyPem": public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode(),
        "publicKeyOpenssh": openssh.decode() + "\n",
        "publicKeyFingerprintMd5": ":".join(md5[i:i + 2] for i in range(0, len(md5), 2)),
        "publicKeyFingerprintSha256": "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("="),
    }


def _key_id(outputs: dict, context: Context) -> str:
    # the real provider's id is a hash of the public key
    return hashlib.sha1(outputs["publicKeyPem"].encode()).hexdigest()


STANDIN = StandIn(
    name="tls",
    kinds={
        "tls:index/privateKey:PrivateKey": Kind(
            token="tls:index/privateKey:PrivateKey",
            defaults={"rsaBits": 2048, "ecdsaCurve": "P224"},
            replace_on=("*",),  # a key's parameters cannot change: a new key is a new resource
            compute=_compute,
            computed=("privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh", "publicKeyPem",
                      "publicKeyOpenssh", "publicKeyFingerprintMd5", "publicKeyFingerprintSha256"),
            make_id=_key_id,
        ),
    },
)
