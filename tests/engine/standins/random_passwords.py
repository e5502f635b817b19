"""Stands in for pulumi-random: RandomPassword draws a real password, RandomBytes real bytes (a WireGuard
key's), both from the OS's random source."""

from __future__ import annotations

import base64
import secrets
import string

from tests.engine.standins.model import Context, Kind, StandIn
from tests.engine.standins.values import secret

DEFAULT_SPECIAL = "!@#$%&*()-_=+[]{}<>:?"


def draw_password(inputs: dict) -> str:
    """A password of `length` characters from the enabled classes, with each class's minimum, as the
    real provider draws it."""
    classes = [
        (inputs.get("lower", True), string.ascii_lowercase, inputs.get("minLower", 0)),
        (inputs.get("upper", True), string.ascii_uppercase, inputs.get("minUpper", 0)),
        (inputs.get("numeric", inputs.get("number", True)), string.digits, inputs.get("minNumeric", 0)),
        (inputs.get("special", True), inputs.get("overrideSpecial") or DEFAULT_SPECIAL, inputs.get("minSpecial", 0)),
    ]
    alphabet = "".join(chars for enabled, chars, _ in classes if enabled)
    chosen = [secrets.choice(chars) for enabled, chars, minimum in classes if enabled for _ in range(minimum)]
    chosen += [secrets.choice(alphabet) for _ in range(inputs["length"] - len(chosen))]
    secrets.SystemRandom().shuffle(chosen)
    return "".join(chosen)


def _compute(inputs: dict, context: Context) -> dict:
    # bcryptHash is left out: the program never reads it, and no bcrypt library is pinned for the tests
    return {"result": secret(draw_password(inputs))}


def _bytes(inputs: dict, context: Context) -> dict:
    drawn = secrets.token_bytes(int(inputs["length"]))
    return {"base64": secret(base64.b64encode(drawn).decode()), "hex": secret(drawn.hex())}


STANDIN = StandIn(
    name="random",
    kinds={
        "random:index/randomPassword:RandomPassword": Kind(
            token="random:index/randomPassword:RandomPassword",
            defaults={"lower": True, "upper": True, "numeric": True, "number": True, "special": True,
                      "minLower": 0, "minUpper": 0, "minNumeric": 0, "minSpecial": 0},
            # every input of a random resource replaces it: that is how a password is rotated
            replace_on=("*",),
            compute=_compute,
            computed=("result",),
            make_id=lambda outputs, context: "none",
            state_only=True,
        ),
        "random:index/randomBytes:RandomBytes": Kind(
            token="random:index/randomBytes:RandomBytes",
            defaults={},
            replace_on=("*",),
            compute=_bytes,
            computed=("base64", "hex"),
            make_id=lambda outputs, context: "none",
            state_only=True,
        ),
    },
)
