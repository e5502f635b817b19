"""Stands in for pulumi-keycloak: Realm, as an existing realm the program adopts.

The world holds the realms that exist (the tests seed CERES's realm with fields of its own). A realm is
read by its name for the import; an update writes the realm as the engine sends it, so fields the program
ignores keep their imported values, as with the real provider. Creating a realm that exists is refused
as Keycloak refuses it (409 Conflict), which is what an adoption that forgot its import would meet.
"""

from __future__ import annotations

from tests.engine.standins.model import Context, Kind, StandIn, StandInError

REALM = "keycloak:index/realm:Realm"


def _refuse_existing(inputs: dict, context: Context) -> None:
    if context.world.get(REALM, inputs["realm"]) is not None:
        raise StandInError(f"error creating realm {inputs['realm']}: 409 Conflict (Conflict detected. See logs for details)")


STANDIN = StandIn(
    name="keycloak",
    kinds={
        REALM: Kind(
            token=REALM,
            create_hook=_refuse_existing,
            make_id=lambda outputs, context: outputs["realm"],
        ),
    },
)
