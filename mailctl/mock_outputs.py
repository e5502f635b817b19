"""The offline stand-in for the providers: what each resource type returns when "created".

In a preview (the default) providers return their inputs and every computed value is unknown, exactly
what `pulumi preview` shows for new resources. With `known_outputs` the mocks compute realistic values
(real keys from `cryptography`, a random password, numeric ids) as an apply would; tests use that mode to
prove known secrets are redacted too.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs, Mocks


def _private_key_outputs(algorithm: str) -> dict[str, str]:
    key = ed25519.Ed25519PrivateKey.generate() if algorithm == "ED25519" else rsa.generate_private_key(65537, 2048)
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


def _computed_outputs(args: MockResourceArgs) -> dict:
    """What the provider of `args.typ` computes on create (only the fields the program reads)."""
    if args.typ == "tls:index/privateKey:PrivateKey":
        return _private_key_outputs(args.inputs.get("algorithm", "RSA"))
    if args.typ == "random:index/randomPassword:RandomPassword":
        return {"result": secrets.token_urlsafe(24)}
    if args.typ == "proxmoxve:index/vmLegacy:VmLegacy":
        return {"vmId": args.inputs.get("vmId") or 100}
    if args.typ == "command:remote:Command":
        return {"stdout": "ceres-mail: ready\n", "stderr": ""}
    return {}


class OfflineMocks(Mocks):
    def __init__(self, known_outputs: bool = False):
        self.known_outputs = known_outputs

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        if not self.known_outputs:
            # preview: no id yet and only the inputs are known
            return "", dict(args.inputs)
        return f"{args.name}-id", {**args.inputs, **_computed_outputs(args)}

    def call(self, args: MockCallArgs) -> tuple[dict, list | None]:
        return {}, None
