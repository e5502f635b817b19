"""pulumi-keycloak's `ldap.UserFederation` as Keycloak's admin API holds it: a component of the realm.

Keycloak keeps a user federation as a component (`/admin/realms/{realm}/components`): providerId `ldap`,
providerType `org.keycloak.storage.UserStorageProvider`, its parent the realm's internal id, and a config
map of string lists. These functions translate between that and the provider's properties, as the real
provider does: the names it renames (usernameLdapAttribute -> usernameLDAPAttribute), the enumerations it
spells otherwise (searchScope ONE_LEVEL -> "1", useTruststoreSpi ALWAYS -> "always"), and the bind
password, which Keycloak reads back masked and the state keeps as the program gave it.
"""

from __future__ import annotations

USER_FEDERATION = "keycloak:ldap/userFederation:UserFederation"
PROVIDER_TYPE = "org.keycloak.storage.UserStorageProvider"
MASK = "**********"

# provider property -> (Keycloak config key, the provider's value when the program leaves it out)
TEXT = {
    "editMode": ("editMode", "READ_ONLY"),
    "usernameLdapAttribute": ("usernameLDAPAttribute", None),
    "rdnLdapAttribute": ("rdnLDAPAttribute", None),
    "uuidLdapAttribute": ("uuidLDAPAttribute", None),
    "connectionUrl": ("connectionUrl", None),
    "usersDn": ("usersDn", None),
    "bindDn": ("bindDn", ""),
    "customUserSearchFilter": ("customUserSearchFilter", ""),
}
FLAGS = {
    "enabled": ("enabled", True),
    "importEnabled": ("importEnabled", True),
    "syncRegistrations": ("syncRegistrations", False),
    "startTls": ("startTls", False),
    "usePasswordModifyExtendedOp": ("usePasswordModifyExtendedOp", False),
    "trustEmail": ("trustEmail", False),
    "validatePasswordPolicy": ("validatePasswordPolicy", False),
    "pagination": ("pagination", True),
    "connectionPooling": ("connectionPooling", True),
}
SEARCH_SCOPES = {"ONE_LEVEL": "1", "SUBTREE": "2"}
TRUSTSTORE = {"ALWAYS": "always", "ONLY_FOR_LDAPS": "ldapsOnly", "NEVER": "never"}
VENDORS = {"OTHER": "other", "AD": "ad", "RHDS": "rhds", "TIVOLI": "tivoli", "EDIRECTORY": "edirectory"}


def component(properties: dict, parent_id: str) -> dict:
    """The provider's properties as the component it POSTs or PUTs."""
    config: dict[str, list[str]] = {}
    for name, (key, default) in TEXT.items():
        value = properties.get(name, default)
        if value is not None:
            config[key] = [str(value)]
    for name, (key, default) in FLAGS.items():
        config[key] = ["true" if properties.get(name, default) else "false"]
    config["userObjectClasses"] = [", ".join(properties.get("userObjectClasses") or ["inetOrgPerson", "organizationalPerson"])]
    config["searchScope"] = [SEARCH_SCOPES[properties.get("searchScope") or "ONE_LEVEL"]]
    config["useTruststoreSpi"] = [TRUSTSTORE[properties.get("useTruststoreSpi") or "ALWAYS"]]
    config["vendor"] = [VENDORS[properties.get("vendor") or "OTHER"]]
    config["priority"] = [str(properties.get("priority", 0))]
    config["authType"] = ["simple" if properties.get("bindDn") else "none"]
    if properties.get("bindCredential"):
        config["bindCredential"] = [properties["bindCredential"]]
    config["fullSyncPeriod"] = [str(properties.get("fullSyncPeriod", -1))]
    config["changedSyncPeriod"] = [str(properties.get("changedSyncPeriod", -1))]
    return {"name": properties.get("name") or "ldap", "providerId": "ldap", "providerType": PROVIDER_TYPE,
            "parentId": parent_id, "config": config}


def properties_of(representation: dict, realm_id: str, held: dict) -> dict:
    """A component as the provider's properties; the bind password from `held` (Keycloak masks it)."""
    config = {key: values[0] for key, values in (representation.get("config") or {}).items() if values}
    properties = {"realmId": realm_id, "name": representation.get("name", "")}
    properties |= {name: config[key] for name, (key, _) in TEXT.items() if key in config}
    properties |= {name: config[key] == "true" for name, (key, _) in FLAGS.items() if key in config}
    if config.get("userObjectClasses"):
        properties["userObjectClasses"] = [c.strip() for c in config["userObjectClasses"].split(",") if c.strip()]
    scopes = {number: name for name, number in SEARCH_SCOPES.items()}
    properties["searchScope"] = scopes.get(config.get("searchScope", "1"), "ONE_LEVEL")
    stores = {value: name for name, value in TRUSTSTORE.items()}
    properties["useTruststoreSpi"] = stores.get(config.get("useTruststoreSpi", "always"), "ALWAYS")
    properties["vendor"] = {value: name for name, value in VENDORS.items()}.get(config.get("vendor", "other"), "OTHER")
    if config.get("bindCredential"):
        properties["bindCredential"] = held.get("bindCredential") if config["bindCredential"] == MASK else config["bindCredential"]
    return properties
