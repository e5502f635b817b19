"""Stands in for pulumi-keycloak: Realm, as an existing realm the program adopts, and ldap.UserFederation.

In the engine layer the world holds the realms that exist (the tests seed CERES's realm with fields of its
own). A realm is read by its name for the import; an update writes the realm as the engine sends it, so
fields the program ignores keep their imported values, as with the real provider. Creating a realm that
exists is refused as Keycloak refuses it (409 Conflict), which is what an adoption that forgot its import
would meet.

With a test internet behind it (cloud.py), the realm lives in a REAL Keycloak, reached over HTTPS at the
provider's `url` and logged in as the provider logs in (client credentials of its admin client). Read maps
Keycloak's representation to the provider's properties; Update sends every mapped field back as the
engine gives it (an input the program leaves out goes as the provider's default, which is how a field the
program forgot to ignore would be reset), and the SMTP block as a whole, as the real provider does. A user
federation is a component of the realm there (keycloak_federation.py); in the engine layer, a world file.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse

from tests.engine.standins import cloud
from tests.engine.standins.keycloak_federation import PROVIDER_TYPE, USER_FEDERATION, component, properties_of
from tests.engine.standins.model import Context, Kind, StandIn, StandInError
from tests.engine.standins.values import plain

REALM = "keycloak:index/realm:Realm"

# provider property -> the provider's value when the program leaves it out; each has the same name in
# Keycloak's realm representation. The SMTP block and the durations are mapped apart.
REALM_FIELDS = {
    "displayName": "",
    "displayNameHtml": "",
    "enabled": True,
    "loginTheme": "",
    "accountTheme": "",
    "adminTheme": "",
    "emailTheme": "",
    "registrationAllowed": False,
    "registrationEmailAsUsername": False,
    "resetPasswordAllowed": False,
    "rememberMe": False,
    "verifyEmail": False,
    "loginWithEmailAllowed": True,
    "duplicateEmailsAllowed": False,
    "editUsernameAllowed": False,
    "sslRequired": "external",
}
DURATIONS = ("accessTokenLifespan", "ssoSessionIdleTimeout", "ssoSessionMaxLifespan")  #: "5m0s" <-> seconds
SMTP_TEXT = ("host", "port", "from", "fromDisplayName", "replyTo", "replyToDisplayName", "envelopeFrom")
SMTP_FLAGS = ("starttls", "ssl")


def go_duration(seconds: int) -> str:
    """Seconds as the provider writes a duration (Go's time.Duration: 300 -> "5m0s", 3600 -> "1h0m0s")."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def seconds_of(duration: str) -> int:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    if not duration or not parts:
        raise StandInError(f"{duration!r} is not a duration such as 5m0s")
    hours, minutes, secs = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def realm_properties(representation: dict) -> dict:
    """Keycloak's realm representation as the provider's Realm properties (the SMTP password reads back
    masked, so it is left out: the state keeps the one the program gave)."""
    properties = {"realm": representation["realm"]}
    properties |= {name: representation[name] for name in REALM_FIELDS if name in representation}
    properties |= {name: go_duration(representation[name]) for name in DURATIONS if representation.get(name)}
    smtp = representation.get("smtpServer") or {}
    if smtp:
        block = {name: smtp[name] for name in SMTP_TEXT if smtp.get(name)}
        block |= {name: smtp.get(name) == "true" for name in SMTP_FLAGS}
        if smtp.get("auth") == "true":
            block["auth"] = {"username": smtp.get("user", "")}
        properties["smtpServer"] = block
    return properties


def realm_representation(properties: dict) -> dict:
    """The provider's Realm properties as the representation it PUTs: every mapped field, the SMTP block
    whole (Keycloak replaces the block, so a key left out is deleted)."""
    representation = {"realm": properties["realm"]}
    representation |= {name: properties.get(name, default) for name, default in REALM_FIELDS.items()}
    representation |= {name: seconds_of(properties[name]) for name in DURATIONS if properties.get(name)}
    smtp = properties.get("smtpServer") or {}
    block = {name: str(smtp[name]) for name in SMTP_TEXT if smtp.get(name)}
    block |= {name: "true" if smtp.get(name) else "false" for name in SMTP_FLAGS}
    auth = smtp.get("auth") or {}
    block |= {"auth": "true", "user": auth["username"], "password": auth.get("password", "")} if auth else {"auth": "false"}
    representation["smtpServer"] = block if smtp else {}
    return representation


class KeycloakApi:
    """Keycloak's admin REST API, as the provider uses it: its `url`, its admin realm, its client."""

    def __init__(self, config: dict):
        missing = [key for key in ("url", "clientId", "clientSecret") if not config.get(key)]
        if missing:
            raise StandInError(f"the keycloak provider has no {', '.join(missing)}")
        self.url = config["url"].rstrip("/")
        self.config = config
        self._token = ""

    def _send(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        answer = cloud.call("http", method=method, url=self.url + path, headers=headers or {},
                            body_b64=base64.b64encode(body).decode() if body is not None else None)
        if answer["status"] == 0:
            raise StandInError(f"{method} {self.url}{path}: {answer.get('error', 'no answer')}")
        return answer["status"], base64.b64decode(answer["body_b64"])

    def _login(self) -> str:
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": self.config["clientId"],
                                       "client_secret": self.config["clientSecret"]}).encode()
        admin_realm = self.config.get("realm") or "master"
        status, body = self._send("POST", f"/realms/{admin_realm}/protocol/openid-connect/token", form,
                                  {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise StandInError(f"error logging in to Keycloak as client {self.config['clientId']}: {status}")
        return json.loads(body)["access_token"]

    def request(self, method: str, path: str, document: dict | None = None) -> tuple[int, bytes]:
        self._token = self._token or self._login()
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        return self._send(method, f"/admin/realms{path}", json.dumps(document).encode() if document is not None else None,
                          headers)


class KeycloakRealms(StandIn):
    """Realms and their LDAP federations, in the world (engine layer) or in the test internet's Keycloak
    (end-to-end layer)."""

    def _api(self) -> KeycloakApi:
        return KeycloakApi(self.config)

    def read(self, token, resource_id, properties, inputs=None):
        if not cloud.backed():
            return super().read(token, resource_id, properties, inputs)
        if token == USER_FEDERATION:
            return self._read_federation(resource_id, properties or {}, inputs)
        status, body = self._api().request("GET", f"/{urllib.parse.quote(resource_id)}")
        if status == 404:
            return None
        if status != 200:
            raise StandInError(f"error reading realm {resource_id}: {status} {body[:200]!r}")
        outputs = realm_properties(json.loads(body))
        held = (properties or {}).get("smtpServer") or {}
        if "auth" in outputs.get("smtpServer", {}) and (held.get("auth") or {}).get("password"):
            outputs["smtpServer"]["auth"]["password"] = held["auth"]["password"]  # Keycloak only shows a mask
        return outputs, self.inputs_read_back(token, outputs, inputs)

    def create(self, token, urn, inputs):
        if not cloud.backed():
            return super().create(token, urn, inputs)
        if token == USER_FEDERATION:
            return self._create_federation(plain(inputs)), inputs
        status, body = self._api().request("POST", "", realm_representation(plain(inputs)))
        if status == 409:
            raise StandInError(f"error creating realm {inputs['realm']}: 409 Conflict (Conflict detected. See logs for details)")
        if status != 201:
            raise StandInError(f"error creating realm {inputs['realm']}: {status} {body[:200]!r}")
        return inputs["realm"], inputs

    def update(self, token, urn, resource_id, olds, news):
        if not cloud.backed():
            return super().update(token, urn, resource_id, olds, news)
        if token == USER_FEDERATION:
            realm = plain(news)["realmId"]
            status, body = self._api().request("PUT", f"/{urllib.parse.quote(realm)}/components/{resource_id}",
                                               {**component(plain(news), self._realm_internal_id(realm)), "id": resource_id})
            if status != 204:
                raise StandInError(f"error updating ldap user federation {resource_id}: {status} {body[:200]!r}")
            return {**olds, **news}
        status, body = self._api().request("PUT", f"/{urllib.parse.quote(resource_id)}", realm_representation(plain(news)))
        if status != 204:
            raise StandInError(f"error updating realm {resource_id}: {status} {body[:200]!r}")
        return {**olds, **news}

    def delete(self, token, resource_id, properties, urn=""):
        if not cloud.backed():
            return super().delete(token, resource_id, properties, urn)
        path = (f"/{urllib.parse.quote(plain(properties)['realmId'])}/components/{resource_id}" if token == USER_FEDERATION
                else f"/{urllib.parse.quote(resource_id)}")
        status, body = self._api().request("DELETE", path)
        if status not in (204, 404):
            raise StandInError(f"error deleting {resource_id}: {status} {body[:200]!r}")

    # --- user federation: a component of the realm ------------------------------------------------------

    def _realm_internal_id(self, realm: str) -> str:
        """A component's parent is the realm's internal id, which need not be its name."""
        status, body = self._api().request("GET", f"/{urllib.parse.quote(realm)}")
        if status != 200:
            raise StandInError(f"error reading realm {realm}: {status} {body[:200]!r}")
        return json.loads(body)["id"]

    def _create_federation(self, inputs: dict) -> str:
        realm = inputs["realmId"]
        parent = self._realm_internal_id(realm)
        status, body = self._api().request("POST", f"/{urllib.parse.quote(realm)}/components", component(inputs, parent))
        if status != 201:
            raise StandInError(f"error creating ldap user federation: {status} {body[:300]!r}")
        # Keycloak names the new id in a Location header; the same answer comes from a lookup by name
        query = urllib.parse.urlencode({"parent": parent, "type": PROVIDER_TYPE, "name": inputs.get("name") or "ldap"})
        status, body = self._api().request("GET", f"/{urllib.parse.quote(realm)}/components?{query}")
        found = json.loads(body) if status == 200 else []
        if len(found) != 1:
            raise StandInError(f"the new ldap user federation of realm {realm} is not found once: {status} {body[:200]!r}")
        return found[0]["id"]

    def _read_federation(self, resource_id: str, held: dict, inputs: dict | None):
        realm = held.get("realmId", "")
        status, body = self._api().request("GET", f"/{urllib.parse.quote(realm)}/components/{resource_id}")
        if status == 404:
            return None
        if status != 200:
            raise StandInError(f"error reading ldap user federation {resource_id}: {status} {body[:200]!r}")
        outputs = properties_of(json.loads(body), realm, held)
        return outputs, self.inputs_read_back(USER_FEDERATION, outputs, inputs)


def _refuse_existing(inputs: dict, context: Context) -> None:
    if context.world.get(REALM, inputs["realm"]) is not None:
        raise StandInError(f"error creating realm {inputs['realm']}: 409 Conflict (Conflict detected. See logs for details)")


STANDIN = KeycloakRealms(
    name="keycloak",
    kinds={
        REALM: Kind(
            token=REALM,
            create_hook=_refuse_existing,
            make_id=lambda outputs, context: outputs["realm"],
        ),
        USER_FEDERATION: Kind(token=USER_FEDERATION),
    },
)
