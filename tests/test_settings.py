"""Settings: the committed stacks load; every bad value is refused, naming its key, all at once."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import pulumi
import pytest
import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from hypothesis import HealthCheck, given, settings, strategies as st

from components.settings import reading, rules, values
from components.settings import CONFIG_KEYS, SECRET_KEYS, UNDECLARED_KEYS, Settings, SettingsError, validate
from components.settings.schema import UNTYPED_KEYS
from mailctl.recorder import record
from mailctl.stackfile import load_stack
from mailctl.zone import stack_settings as settings_of_stack
from tests.conftest import PROJECT_DIR, one, refused, self_signed, stack_config
from tests.placeholders import HOST_KEY, SECURE


def test_committed_stacks_load_with_their_values(plans):
    """prod and staging validate; derived values follow the documented defaults."""
    assert plans["prod"].outputs["mailHost"] == "mail.example.com"
    assert plans["prod"].outputs["mailFrom"] == "no-reply@example.com"
    assert plans["staging"].outputs["mailHost"] == "mail.staging.example.net"


PEBBLE_LIKE_CA = self_signed("acme-ca.example.net")[0]
PROVIDED_CERTIFICATE = self_signed("mail.example.com", "mta-sts.example.com")[0]  #: for prod's names

#: the keys of a VM at home behind a VPS, for the rules of the gateway's own keys
WIREGUARD_HOME = {"ceres-mail:gatewayMode": "wireguard", "ceres-mail:ipv4Address": "192.168.77.25/24",
                  "ceres-mail:ipv4Gateway": "192.168.77.1", "ceres-mail:ipv6Address": None, "ceres-mail:ipv6Gateway": None,
                  "ceres-mail:gatewayHost": "vps.example.net", "ceres-mail:gatewayHostKey": HOST_KEY,
                  "ceres-mail:gatewaySshPrivateKey": SECURE}

# (what is wrong, edit to the prod stack, key named in the error, words the operator reads)
BAD_CONFIGS = [
    ("domain missing", {"ceres-mail:domain": None}, "domain", "is required"),
    ("domain with a space", {"ceres-mail:domain": "exa mple.com"}, "domain", "not a valid domain name"),
    ("domain of one label", {"ceres-mail:domain": "localhost"}, "domain", "not a fully qualified domain name"),
    ("mail host outside the domain", {"ceres-mail:mailHost": "mail.example.org"}, "mailHost", "is not inside the mail domain example.com"),
    ("IPv4 without prefix", {"ceres-mail:ipv4Address": "203.0.113.25"}, "ipv4Address", "has no prefix length"),
    ("private IPv4", {"ceres-mail:ipv4Address": "192.168.1.10/24", "ceres-mail:ipv4Gateway": "192.168.1.1"}, "ipv4Address", "cannot be reached from the internet"),
    ("IPv6 given as ipv4Address", {"ceres-mail:ipv4Address": "2001:db8:25::30/64"}, "ipv4Address", "is not an IPv4 address"),
    ("gateway outside the network", {"ceres-mail:ipv4Gateway": "198.51.100.1"}, "ipv4Gateway", "is not inside 203.0.113.0/24"),
    ("IPv6 address without gateway", {"ceres-mail:ipv6Gateway": None}, "ipv6Gateway", "is required when ipv6Address is set"),
    ("SSH open to the world", {"ceres-mail:adminCidrs": ["0.0.0.0/0"]}, "adminCidrs[0]", "whole internet"),
    ("admin CIDR with host bits", {"ceres-mail:adminCidrs": ["198.51.100.1/28"]}, "adminCidrs[0]", "not a network in CIDR form"),
    ("port out of range", {"ceres-mail:smtpPort": 70000}, "smtpPort",
     "70000 is out of range: write a whole number from 1 to 65535 (submission port CERES and Keycloak use"),
    ("a ban for ever, as fail2ban writes it", {"ceres-mail:bruteForceBanMinutes": -1}, "bruteForceBanMinutes",
     "-1 is out of range: write a whole number from 1 to 10080 (how long a fail2ban ban lasts, in minutes); a ban for ever"),
    ("STARTTLS and TLS together", {"ceres-mail:smtpTls": True}, "smtpTls", "both true"),
    ("neither STARTTLS nor TLS", {"ceres-mail:smtpStarttls": False}, "smtpStarttls", "in clear"),
    ("STARTTLS on the implicit-TLS port", {"ceres-mail:smtpPort": 465}, "smtpPort", "STARTTLS submission is port 587"),
    ("STARTTLS on the MX port", {"ceres-mail:smtpPort": 25}, "smtpPort", "STARTTLS submission is port 587"),
    ("TLS on the STARTTLS port", {"ceres-mail:smtpTls": True, "ceres-mail:smtpStarttls": False}, "smtpPort", "implicit TLS submission is port 465"),
    ("VM memory below the stack's floor", {"ceres-mail:vmMemoryMib": 512}, "vmMemoryMib", "below the native stack's minimum of 1024 MiB"),
    ("too little memory for mailcow", {"ceres-mail:mailStack": "mailcow", "ceres-mail:vmMemoryMib": 4096}, "vmMemoryMib", "below the mailcow stack's minimum of 6144 MiB"),
    ("static IP outside its gateway's subnet", {"ceres-mail:ipv4Address": "198.51.100.25/28"}, "ipv4Gateway", "is not inside 198.51.100.16/28"),
    ("absurd core count", {"ceres-mail:vmCores": 500}, "vmCores", "500 is out of range: write a whole number from 0 to 128"),
    ("sender outside the domain", {"ceres-mail:mailFrom": "no-reply@example.org"}, "mailFrom", "DMARC alignment would fail"),
    ("sender not an address", {"ceres-mail:mailFrom": "no-reply"}, "mailFrom", "not a valid email address"),
    ("DMARC policy word", {"ceres-mail:dmarcPolicy": "block"}, "dmarcPolicy", "'block' is not allowed"),
    ("unknown mail stack", {"ceres-mail:mailStack": "exim"}, "mailStack", "'exim' is not allowed"),
    ("too small a disk for mailcow", {"ceres-mail:mailStack": "mailcow", "ceres-mail:vmDiskGib": 16}, "vmDiskGib", "below the mailcow stack's minimum of 20 GiB"),
    ("private ACME CA with mailcow", {"ceres-mail:mailStack": "mailcow", "ceres-mail:acmeCaBundle": PEBBLE_LIKE_CA}, "acmeCaBundle", "not supported by the mailcow stack"),
    ("mailcow on the bare domain", {"ceres-mail:mailStack": "mailcow", "ceres-mail:mailHost": "example.com"}, "mailHost", "the mail host needs a name below it"),
    ("native stack on the bare domain", {"ceres-mail:mailHost": "example.com"}, "mailHost",
     "at the apex its A record would join the website's and its webmail would claim https://example.com/"),
    ("mailcow with webmail off", {"ceres-mail:mailStack": "mailcow", "ceres-mail:vmMemoryMib": 8192, "ceres-mail:vmDiskGib": 40,
                                  "ceres-mail:webmail": False}, "webmail",
     "is set, but the mailcow stack ignores it: mailcow always serves its own SOGo webmail"),
    ("mailcow with fail2ban's retries", {"ceres-mail:mailStack": "mailcow", "ceres-mail:vmMemoryMib": 8192, "ceres-mail:vmDiskGib": 40,
                                         "ceres-mail:bruteForceMaxRetry": 3}, "bruteForceMaxRetry", "its own netfilter container"),
    ("mailcow with fail2ban's ban time", {"ceres-mail:mailStack": "mailcow", "ceres-mail:vmMemoryMib": 8192, "ceres-mail:vmDiskGib": 40,
                                          "ceres-mail:bruteForceBanMinutes": 1440}, "bruteForceBanMinutes", "the mailcow stack ignores it"),
    ("mailcow with never-banned networks", {"ceres-mail:mailStack": "mailcow", "ceres-mail:vmMemoryMib": 8192, "ceres-mail:vmDiskGib": 40,
                                            "ceres-mail:clusterCidrs": ["10.42.0.0/16"]}, "clusterCidrs", "its netfilter whitelist"),
    ("ACME contact mailcow.conf cannot hold", {"ceres-mail:mailStack": "mailcow", "ceres-mail:acmeEmail": "o'neil@example.com"}, "acmeEmail", "cannot be written to mailcow.conf"),
    ("mailcow release that is a branch", {"ceres-mail:mailcowVersion": "master"}, "mailcowVersion", "not a mailcow-dockerized release tag"),
    ("mailcow release not pinned", {"ceres-mail:mailcowVersion": "2027-01"}, "mailcowVersion", "not a release this project pins"),
    ("time zone that does not exist", {"ceres-mail:mailcowTimezone": "Mars/Olympus"}, "mailcowTimezone", "not an IANA time zone"),
    ("broken SSH key", {"ceres-mail:adminSshKeys": ["ssh-ed25519 AAAA"]}, "adminSshKeys[0]", "not an OpenSSH public key"),
    ("plain-HTTP Proxmox API", {"ceres-mail:proxmoxEndpoint": "http://pve1.example.com:8006/"}, "proxmoxEndpoint", "not an https:// URL"),
    ("Proxmox SSH address with a port", {"ceres-mail:proxmoxSshAddress": "10.0.0.2:22"}, "proxmoxSshAddress", "neither an IP address nor a host name"),
    ("Proxmox SSH address of too few octets", {"ceres-mail:proxmoxSshAddress": "10.0.2"}, "proxmoxSshAddress", "neither an IP address nor a host name"),
    ("DKIM selector with underscore", {"ceres-mail:dkimSelector": "mail_2026"}, "dkimSelector", "not a DNS label"),
    ("published DKIM selector not a label", {"ceres-mail:dkimPublishedSelectors": ["ceres 2026"]}, "dkimPublishedSelectors[0]", "not a DNS label"),
    ("published DKIM selector twice", {"ceres-mail:dkimPublishedSelectors": ["next", "next"]}, "dkimPublishedSelectors", "next is listed twice"),
    ("signing selector also published", {"ceres-mail:dkimPublishedSelectors": ["ceres"]}, "dkimPublishedSelectors", "ceres is dkimSelector, the selector that signs"),
    ("published selector with an empty reason", {"ceres-mail:dkimPublishedSelectors": [{"selector": "next", "reason": " "}]},
     "dkimPublishedSelectors[0]", "the reason of 'next' must be one line of 1-200 characters"),
    ("published selector with an unknown field", {"ceres-mail:dkimPublishedSelectors": [{"selector": "next", "why": "x"}]},
     "dkimPublishedSelectors[0]", "is neither a selector nor {selector: <label>, reason: <text>}"),
    ("published selector object twice", {"ceres-mail:dkimPublishedSelectors": ["next", {"selector": "next", "reason": "again"}]},
     "dkimPublishedSelectors", "next is listed twice"),
    ("published TLS key not a label", {"ceres-mail:dane": True, "ceres-mail:tlsPublishedKeys": ["tls 2"]},
     "tlsPublishedKeys[0]", "not a DNS label"),
    ("published TLS key twice", {"ceres-mail:dane": True, "ceres-mail:tlsPublishedKeys": ["tls2", {"selector": "tls2", "reason": "x"}]},
     "tlsPublishedKeys", "tls2 is listed twice"),
    ("served TLS key also published", {"ceres-mail:dane": True, "ceres-mail:tlsPublishedKeys": ["tls1"]}, "tlsPublishedKeys",
     "tls1 is tlsKeySelector, the key the host serves: list only keys whose TLSA is published"),
    ("TLS key published without dane", {"ceres-mail:tlsPublishedKeys": ["tls2"]}, "tlsPublishedKeys",
     "is set but dane is off: the stack owns TLS keys, and publishes their TLSA, only with dane and tlsMode acme"),
    ("TLS key published beside a provided certificate", {"ceres-mail:dane": True, "ceres-mail:tlsMode": "provided",
                                                         "ceres-mail:tlsCertificate": PROVIDED_CERTIFICATE,
                                                         "ceres-mail:tlsPrivateKey": SECURE,
                                                         "ceres-mail:tlsPublishedKeys": ["tls2"]},
     "tlsPublishedKeys", "is set but tlsMode is provided: the stack owns TLS keys only with tlsMode acme"),
    ("LDAP mode word", {"ceres-mail:ldapMode": "ad"}, "ldapMode", "'ad' is not allowed"),
    ("local directory without its client networks", {"ceres-mail:ldapMode": "local"}, "ldapClientCidrs", "is required with ldapMode local"),
    ("directory open to the world", {"ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["::/0"]}, "ldapClientCidrs[0]",
     "would open the directory to the whole internet"),
    ("local directory given a URL", {"ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"],
                                     "ceres-mail:ldapUrl": "ldaps://ldap.example.com"}, "ldapUrl", "the directory is on the mail host"),
    ("external directory without URL", {"ceres-mail:ldapMode": "external", "ceres-mail:ldapBindDn": "cn=mail,dc=example,dc=com",
                                        "ceres-mail:ldapBindPassword": SECURE}, "ldapUrl", "is required with ldapMode external"),
    ("external directory without bind password", {"ceres-mail:ldapMode": "external", "ceres-mail:ldapUrl": "ldaps://ldap.example.com",
                                                  "ceres-mail:ldapBindDn": "cn=mail,dc=example,dc=com"}, "ldapBindPassword", "pulumi config set --secret ldapBindPassword"),
    ("external directory without bind DN", {"ceres-mail:ldapMode": "external", "ceres-mail:ldapUrl": "ldaps://ldap.example.com",
                                           "ceres-mail:ldapBindPassword": SECURE}, "ldapBindDn", "is required with ldapMode external"),
    ("LDAP URL of another scheme", {"ceres-mail:ldapMode": "external", "ceres-mail:ldapUrl": "https://ldap.example.com"}, "ldapUrl",
     "not ldaps://host[:port] or ldap://host[:port]"),
    ("LDAP URL with a path", {"ceres-mail:ldapMode": "external", "ceres-mail:ldapUrl": "ldaps://ldap.example.com/dc=x"}, "ldapUrl",
     "not ldaps://host[:port] or ldap://host[:port]"),
    ("base DN that is not a DN", {"ceres-mail:ldapBaseDn": "example.com"}, "ldapBaseDn", "not an LDAP distinguished name"),
    ("users outside the base", {"ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"],
                                "ceres-mail:ldapUsersDn": "ou=people,dc=example,dc=org"}, "ldapUsersDn", "is not under the base DN dc=example,dc=com"),
    ("local service account named by ou", {"ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"],
                                           "ceres-mail:ldapBindDn": "ou=svc,dc=example,dc=com"}, "ldapBindDn",
     "the service account must be named by cn= or uid="),
    ("local people under a cn container", {"ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"],
                                           "ceres-mail:ldapUsersDn": "cn=people,dc=example,dc=com"}, "ldapUsersDn",
     "makes containers named by dc=, o=, ou=, c=, l=, not cn="),
    ("local service account outside the base", {"ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"],
                                                "ceres-mail:ldapBindDn": "cn=mail,dc=example,dc=org"}, "ldapBindDn",
     "is not under the base DN dc=example,dc=com"),
    ("local multi-valued RDN", {"ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"],
                                "ceres-mail:ldapBindDn": "cn=mail+uid=mail,dc=example,dc=com"}, "ldapBindDn", "a multi-valued RDN"),
    ("LDAP URL while LDAP is off", {"ceres-mail:ldapUrl": "ldaps://ldap.example.com"}, "ldapUrl", "is set but ldapMode is off"),
    ("LDAP with mailcow", {"ceres-mail:mailStack": "mailcow", "ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"]},
     "ldapMode", "not supported with mailStack mailcow: mailcow brings its own identity provider"),
    ("DKIM max age zero", {"ceres-mail:dkimMaxAgeDays": 0}, "dkimMaxAgeDays", "0 is out of range: write a whole number from 1 to 3650"),
    ("TTL Cloudflare refuses", {"ceres-mail:dnsTtl": 30}, "dnsTtl", "Cloudflare accepts 1"),
    ("missing secret token", {"ceres-mail:proxmoxApiToken": None}, "proxmoxApiToken", "is required"),
    ("zone id not a zone id", {"ceres-mail:cloudflareZoneId": "example.com"}, "cloudflareZoneId", "not a Cloudflare zone id"),
    ("resolver given by name", {"ceres-mail:dnsResolvers": ["dns.example.net"]}, "dnsResolvers[0]", "not an IP address"),
    ("typo in a key", {"ceres-mail:domian": "example.com"}, "domian", "is not a key of this project"),
    ("SPF over ten lookups", {"ceres-mail:spfExtra": [f"include:s{i}.example.net" for i in range(10)]}, "spfExtra", "needs 11 DNS lookups"),
    ("SPF that ends itself", {"ceres-mail:spfExtra": ["+all"]}, "spfExtra", "holds 'all'"),
    ("extra domain without zone id", {"ceres-mail:extraDomains": ["example.org"]}, "extraDomains[0]", "<domain>=<32-hex Cloudflare zone id>"),
    ("extra domain that is the primary", {"ceres-mail:extraDomains": ["example.com=11111111111111111111111111111111"]}, "extraDomains", "listed twice (or is the primary domain)"),
    ("MTA-STS mode word", {"ceres-mail:mtaStsMode": "strict"}, "mtaStsMode", "'strict' is not allowed"),
    ("MTA-STS max_age too short", {"ceres-mail:mtaStsMaxAge": 60}, "mtaStsMaxAge", "60 is out of range: write a whole number from 86400 to 31557600"),
    ("ACME directory over plain HTTP", {"ceres-mail:acmeDirectory": "http://acme.example.net/dir"}, "acmeDirectory", "not an https:// URL"),
    ("ACME CA bundle that is not PEM", {"ceres-mail:acmeCaBundle": "not a certificate"}, "acmeCaBundle", "PEM"),
    ("provided TLS without certificate", {"ceres-mail:tlsMode": "provided"}, "tlsCertificate", "is required with tlsMode provided"),
    ("DANE with mailcow", {"ceres-mail:dane": True, "ceres-mail:mailStack": "mailcow"}, "dane", "is not available with mailStack mailcow"),
    ("provided TLS without its key", {"ceres-mail:tlsMode": "provided"}, "tlsPrivateKey", "is required with tlsMode provided"),
    ("TLS mode word", {"ceres-mail:tlsMode": "self-signed"}, "tlsMode", "'self-signed' is not allowed"),
    ("DKIM key too small", {"ceres-mail:dkimKeyBits": 1024}, "dkimKeyBits", "1024 is not allowed"),
    ("DMARC pct over 100", {"ceres-mail:dmarcPct": 150}, "dmarcPct", "150 is out of range: write a whole number from 0 to 100"),
    ("DMARC alignment word", {"ceres-mail:dmarcAdkim": "x"}, "dmarcAdkim", "'x' is not allowed"),
    ("DMARC report address", {"ceres-mail:dmarcRua": "reports"}, "dmarcRua", "not a valid email address"),
    ("CAA iodef not a URL", {"ceres-mail:caaIodef": "postmaster@example.com"}, "caaIodef", "not a mailto: or https: URL"),
    ("import id format", {"ceres-mail:dnsImportIds": ["mx-example.com"]}, "dnsImportIds[0]", "<record key>=<32-hex Cloudflare record id>"),
    ("backup target of no known form", {"ceres-mail:backupTarget": "ftp://backup.example.com/mail"}, "backupTarget",
     "is neither sftp:user@host:/path nor s3:https://endpoint/bucket[/prefix]"),
    ("S3 backups over plain HTTP", {"ceres-mail:backupTarget": "s3:http://s3.example.com/bucket"}, "backupTarget", "is neither"),
    ("sftp backups without the host key", {"ceres-mail:backupHostKey": None}, "backupHostKey",
     "is required with an sftp: backupTarget"),
    ("backup host key that is not a key", {"ceres-mail:backupHostKey": "ssh-ed25519 AAAA"}, "backupHostKey",
     "not an SSH host key"),
    ("S3 backups without credentials", {"ceres-mail:backupTarget": "s3:https://s3.example.com/bucket/mail",
                                        "ceres-mail:backupHostKey": None}, "backupS3SecretKey",
     "is required with an s3: backupTarget: `pulumi config set --secret backupS3SecretKey`"),
    ("a host key with S3 backups", {"ceres-mail:backupTarget": "s3:https://s3.example.com/bucket"}, "backupHostKey",
     "is set but backupTarget is not sftp:"),
    ("backup schedule with a shell character", {"ceres-mail:backupSchedule": "daily; reboot"}, "backupSchedule",
     "not a systemd calendar expression"),
    ("backups kept: none at all", {"ceres-mail:backupKeep": {"daily": 0, "weekly": 0, "monthly": 0}}, "backupKeep",
     "keeps no snapshot at all"),
    ("backups kept: an unknown period", {"ceres-mail:backupKeep": {"hourly": 24}}, "backupKeep", "is not {daily: <n>"),
    ("backups kept: a negative count", {"ceres-mail:backupKeep": {"daily": -1}}, "backupKeep",
     "daily: -1 is not a number of snapshots 0-1000"),
    ("Keycloak URL copied from a realm's page", {"ceres-mail:keycloakUrl": "https://sso.example.com/realms/ceres/account/"},
     "keycloakUrl", "is a page inside Keycloak, not its base URL: write 'https://sso.example.com'"),
    ("Keycloak URL copied from the admin console", {"ceres-mail:keycloakUrl": "https://sso.example.com/auth/admin/master/console/#/ceres"},
     "keycloakUrl", "write 'https://sso.example.com/auth'"),
    ("backup schedule in cron syntax", {"ceres-mail:backupSchedule": "30 3 * * *"}, "backupSchedule",
     "is not a systemd calendar expression"),
    ("backup schedule that never comes again", {"ceres-mail:backupSchedule": "2020-01-01 03:00"}, "backupSchedule",
     "never comes again"),
    ("VM address in carrier-grade NAT space", {"ceres-mail:ipv4Address": "100.64.20.25/24", "ceres-mail:ipv4Gateway": "100.64.20.1"},
     "ipv4Address", "carrier-grade NAT space (RFC 6598)"),
    ("gateway's public address in carrier-grade NAT space", {**WIREGUARD_HOME, "ceres-mail:gatewayPublicIpv4": "100.100.1.25"},
     "gatewayPublicIpv4", "100.100.1.25 cannot be reached from the internet: it is in carrier-grade NAT space"),
    ("VM IPv6 address a unique local one", {"ceres-mail:ipv6Address": "fd00:25::25/64", "ceres-mail:ipv6Gateway": "fd00:25::1"},
     "ipv6Address", "a unique local address (RFC 4193)"),
    ("backup to the mail host's own name", {"ceres-mail:backupTarget": "sftp:restic@mail.example.com:/srv/restic"},
     "backupTarget", "mail.example.com is the mail host's own name: a backup on the machine it backs up is lost with it"),
    ("backup to the mail host's own address", {"ceres-mail:backupTarget": "sftp:restic@203.0.113.25:/srv/restic"},
     "backupTarget", "203.0.113.25 is the mail host's own address"),
    ("backup to S3 on the mail host", {"ceres-mail:backupTarget": "s3:https://localhost:9000/backups", "ceres-mail:backupHostKey": None,
                                        "ceres-mail:backupS3AccessKey": SECURE,
                                        "ceres-mail:backupS3SecretKey": SECURE},
     "backupTarget", "localhost is the mail host itself"),
    ("import of a record not declared", {"ceres-mail:dnsImportIds": ["mx-example.org=372e67954025e0ba6aaa6d586b9e0b59"]}, "dnsImportIds", "is not a record of this stack"),
    ("DNSSEC neither on nor off", {"ceres-mail:dnssec": "maybe"}, "dnssec", "'maybe': input should be a valid boolean"),
]


@pytest.mark.parametrize("edit, key, words", [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS])
def test_bad_value_is_refused_naming_its_key(scratch_project, edit, key, words):
    """Each bad value gives a line `ceres-mail:<key>: <what is wrong>`."""
    lines = str(refused(scratch_project, stack_config("prod", edit))).splitlines()
    matching = [line for line in lines if line.strip().startswith(f"ceres-mail:{key}:")]
    assert matching, f"no line for ceres-mail:{key} in:\n" + "\n".join(lines)
    assert any(words in line for line in matching), f"{words!r} not in {matching}"


def test_all_problems_are_reported_together_before_any_resource(scratch_project):
    """Several bad keys give one error with a line each, and nothing was registered before it."""
    config = stack_config("prod")
    config.update({"ceres-mail:domain": "bad domain", "ceres-mail:smtpPort": 0, "ceres-mail:dmarcPolicy": "maybe"})
    del config["ceres-mail:proxmoxNode"]
    registered = []
    with pytest.raises(SettingsError) as caught:
        record(scratch_project("bad", config), "bad", raw_inputs_hook=lambda urn, *_: registered.append(urn))
    keys = [key for key, _ in caught.value.problems]
    assert {"domain", "smtpPort", "dmarcPolicy", "proxmoxNode"} <= set(keys), keys
    assert str(caught.value).startswith(f"the stack configuration has {len(keys)} problem(s):")
    assert registered == [], f"resources registered before validation failed: {registered}"


def test_settings_error_ends_pulumi_without_a_traceback():
    """The Pulumi language host prints a RunError's message alone, with no traceback."""
    assert issubclass(SettingsError, pulumi.RunError)


def test_settings_are_frozen(project_dir):
    """Components cannot change settings behind each other's back."""
    settings = settings_of_stack(project_dir, "prod")
    assert settings.vm_size.memory_mib == 2048
    with pytest.raises(ValidationError):
        settings.domain = "example.org"


# --- Pulumi.yaml and Settings describe the same keys -----------------------------------------------


def declared(project_dir):
    return yaml.safe_load((project_dir / "Pulumi.yaml").read_text())["config"]


def test_pulumi_yaml_declares_exactly_the_settings_keys(project_dir):
    """Every key but the optional secrets Pulumi cannot declare (see UNDECLARED_KEYS)."""
    assert set(declared(project_dir)) == CONFIG_KEYS - UNDECLARED_KEYS
    assert UNDECLARED_KEYS <= SECRET_KEYS


def test_secret_keys_are_declared_secret_and_only_they(project_dir):
    """Pulumi.yaml declares secret every secret key it can and no other, so the CLI refuses those in clear."""
    assert {k for k, d in declared(project_dir).items() if d.get("secret")} == SECRET_KEYS - UNDECLARED_KEYS


def test_no_secret_carries_a_default(project_dir):
    """The Pulumi CLI refuses a plaintext default for a secret key ("must be encrypted")."""
    assert not [k for k, d in declared(project_dir).items() if d.get("secret") and "default" in d]


def test_every_declaration_has_a_type_and_a_description(project_dir):
    """A type for every key but the lists of strings and objects, which Pulumi has no type for."""
    for key, declaration in declared(project_dir).items():
        wanted = {None} if key in UNTYPED_KEYS else {"string", "integer", "boolean", "array"}
        assert declaration.get("type") in wanted, key
        assert len(declaration.get("description", "")) > 15, key


def test_defaults_in_pulumi_yaml_are_the_settings_defaults(project_dir):
    """The CLI applies Pulumi.yaml's defaults and Settings has its own: they must be the same."""
    fields = {to_camel(name): field for name, field in Settings.model_fields.items()}
    assert all(not fields[key].is_required() for key in UNDECLARED_KEYS), "an undeclared key must be optional"
    for key, declaration in declared(project_dir).items():
        field = fields[key]
        if "default" in declaration:
            assert not field.is_required(), key
            default = field.get_default(call_default_factory=True)
            if dataclasses.is_dataclass(default):
                default = dataclasses.asdict(default)
            assert (list(default) if isinstance(default, tuple) else default) == declaration["default"], key
        else:
            assert field.is_required(), f"{key} has no default in Pulumi.yaml but is optional in Settings"


@pytest.mark.parametrize("stack", ["prod", "staging"])
def test_committed_stacks_hold_secrets_only_encrypted(stack):
    """A secret key in a stack file is a `secure:` value, never plain text."""
    config = stack_config(stack)
    for key in SECRET_KEYS:
        value = config.get(f"ceres-mail:{key}")
        assert value is None or (isinstance(value, dict) and set(value) == {"secure"}), key


# --- value rules over open inputs (hypothesis) -----------------------------------------------------

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(st.lists(labels, min_size=1, max_size=4), st.sampled_from(["com", "net", "org", "example"]))
def test_any_ldh_domain_is_accepted_and_its_mail_host_is_inside(parts, tld):
    """Any letter-digit-hyphen domain is taken, case and final dot dropped, with its mail host inside (RFC 1035 2.3.1)."""
    domain = ".".join([*parts, tld])
    assert values.domain_name(domain.upper() + ".") == domain
    assert rules.within(f"mail.{domain}", domain)


forbidden = st.builds(lambda a, bad, b: a + bad + b, st.text(max_size=10), st.sampled_from(" _/@!*:"), st.text(max_size=10))


@given(forbidden)
def test_names_with_forbidden_characters_are_refused(name):
    """Inside a name, that is: surrounding blanks are trimmed on purpose (a stack file's stray space)."""
    with pytest.raises(ValueError):
        values.domain_name(f"x{name}x.example.com")


def prod_raw() -> dict[str, object]:
    """The prod stack's values as the CLI hands them to the program (strings, lists and objects as JSON),
    keyed by config key; a secret stands as a placeholder, which `validate` passes through unread."""
    config = load_stack(PROJECT_DIR, "prod")
    return {full_key.split(":", 1)[1]: value for full_key, value in config.values.items()
            if full_key.startswith("ceres-mail:")}


PROD_RAW = prod_raw()
#: a well-formed ECDSA key on a curve the parser does not know: it raised UnsupportedAlgorithm, not ValueError
UNKNOWN_CURVE_KEY = "ecdsa-sha2-nistp999 AAAAE2VjZHNhLXNoYTItbmlzdHA5OTkAAAAIbmlzdHA5OTkAAAAA"
PLAIN_KEYS = sorted(CONFIG_KEYS - set(SECRET_KEYS))
#: anything an operator could paste: text, numbers, and YAML/JSON structures, as themselves or as the JSON
#: text the CLI would hand over
structures = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)
pasted = st.one_of(st.text(max_size=200), structures, structures.map(lambda v: json.dumps(v, allow_nan=True)),
                   st.sampled_from(["", " ", "\n", "0", "-1", "1e309", "[]", "{}", "null", "true", "[[]]",
                                    '{"selector": 1}', "ssh-ed25519", "ecdsa-sha2-nistp256 AAAA", UNKNOWN_CURVE_KEY]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(PLAIN_KEYS), value=pasted)
def test_no_value_of_any_key_escapes_as_a_traceback(key, value):
    """Whatever a key is given, the answer is the stack or a `SettingsError` naming its keys: never another
    exception out of a value's parser (that would be a traceback, not an error an operator can act on)."""
    try:
        validate({**PROD_RAW, key: value})
    except SettingsError as error:
        assert error.problems and all(isinstance(k, str) and why for k, why in error.problems)


@pytest.mark.parametrize("pasted_line", [
    f"backup.example.com {HOST_KEY}",  # ssh-keyscan -t ed25519 backup.example.com
    f"[backup.example.com]:2222 {HOST_KEY}",  # ssh-keyscan -p 2222
    f"# backup.example.com:22 SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\nbackup.example.com {HOST_KEY}\n",
    f"{HOST_KEY} root@backup",
])
def test_a_host_key_is_taken_as_ssh_keyscan_prints_it(scratch_project, pasted_line):
    """The README's `ssh-keyscan -t ed25519 <host>` line is pasted as it comes (2>&1 included): the key is
    pinned without the host name."""
    config = stack_config("prod", {"ceres-mail:backupTarget": "sftp:restic@backup.example.com:/srv/restic",
                                   "ceres-mail:backupHostKey": pasted_line})
    assert record(scratch_project("keyscan", config), "keyscan") is not None
    assert values.ssh_host_key(pasted_line).startswith(HOST_KEY)


@pytest.mark.parametrize("key", ["backupHostKey", "gatewayHostKey"])
@pytest.mark.parametrize("pasted_line, words", [
    (f"backup.example.com {UNKNOWN_CURVE_KEY}", "not an SSH host key"),
    ("backup.example.com", "not an SSH host key"),
    (f"{HOST_KEY}\n{HOST_KEY}", "holds 2 key lines"),
])
def test_a_host_key_that_is_not_one_is_refused_naming_its_key(key, pasted_line, words):
    """A backup or gateway host key that is not exactly one SSH host key line is refused, naming its key."""
    with pytest.raises(SettingsError) as caught:
        validate({**PROD_RAW, key: pasted_line})
    assert any(k == key and words in why for k, why in caught.value.problems), caught.value.problems


def test_list_entries_are_parsed_once_into_pairs(scratch_project):
    """`<name>=<id>` entries are split by their value type only; every reader takes the pair."""
    zone, record_id = "1" * 32, "2" * 32
    config = {**stack_config("prod"), "ceres-mail:extraDomains": [f"Example.ORG.={zone}"],
              "ceres-mail:dnsImportIds": [f"mx-example.org={record_id}"]}
    settings = settings_of_stack(scratch_project("pairs", config), "pairs")
    assert list(settings.extra_domains) == [values.ZoneEntry(domain="example.org", zone_id=zone)]
    assert settings.mail_domains == ("example.com", "example.org")
    assert settings.zone_ids == {"example.com": "023e105f4ecef8ad9ca31a8372d0c353", "example.org": zone}
    assert settings.import_ids == {"mx-example.org": record_id}


def test_dnssec_is_off_unless_the_stack_turns_it_on(project_dir, scratch_project):
    """No committed stack signs its zones yet; `dnssec: true` reaches MailDns's inputs, for every mail domain."""
    assert not any(settings_of_stack(project_dir, stack).dns_zone_inputs.dnssec for stack in ("prod", "staging", "home"))
    config = stack_config("prod", {"ceres-mail:dnssec": True, "ceres-mail:extraDomains": [f"example.org={'1' * 32}"]})
    zones = settings_of_stack(scratch_project("signed", config), "signed").dns_zone_inputs
    assert zones.dnssec and zones.records.mail_domains == ("example.com", "example.org")


def test_install_inputs_alias_the_role_and_report_addresses_to_the_mailbox(project_dir):
    """RFC 2142 postmaster@/abuse@ of every domain and the report mailboxes all reach the one mailbox."""
    settings = settings_of_stack(project_dir, "prod")
    inputs = settings.install_inputs
    assert inputs.mailbox == "no-reply@example.com"
    assert inputs.aliases == (
        "abuse@example.com",
        "dmarc@example.com",
        "postmaster@example.com",
        "tls-reports@example.com",
    )
    assert inputs.certificate_names == ("mail.example.com", "mta-sts.example.com")
    assert "mx: mail.example.com" in inputs.mta_sts_policy




def test_provided_certificate_must_name_the_mail_and_mta_sts_hosts(scratch_project):
    """A provided certificate lacking the mail host or an mta-sts host is refused, naming the name it lacks."""
    config = stack_config("prod")
    config.update({"ceres-mail:tlsMode": "provided", "ceres-mail:tlsCertificate": self_signed("mail.example.com")[0],
                   "ceres-mail:tlsPrivateKey": SECURE})
    lines = str(refused(scratch_project, config)).splitlines()
    assert any("ceres-mail:tlsCertificate: does not name mta-sts.example.com" in line for line in lines), lines


def test_provided_certificate_goes_to_the_tls_stage_with_its_key_as_a_secret(scratch_project):
    """A provided certificate goes to the tls stage, its private key on stdin as a secret, never in the command."""
    config = stack_config("prod")
    config.update({"ceres-mail:tlsMode": "provided",
                   "ceres-mail:tlsCertificate": self_signed("mail.example.com", "mta-sts.example.com")[0],
                   "ceres-mail:tlsPrivateKey": SECURE})
    plan = record(scratch_project("tls", config), "tls")
    [tls] = [r for r in plan.of_type("command:remote:Command") if r.name.endswith("-install-tls")]
    assert tls.inputs["stdin"] == "[secret]"
    assert "TLS_MODE=provided" in tls.inputs["create"] and "CERT_DIR=/etc/ceres-mail/tls" in tls.inputs["create"]


def test_a_link_local_ipv6_gateway_is_taken_as_hosters_give_it(scratch_project):
    """Many hosters route a server's /64 through fe80::1: on the link by definition, not inside the /64."""
    config = stack_config("prod", {"ceres-mail:ipv6Gateway": "fe80::1"})
    plan = record(scratch_project("hoster", config), "hoster")
    vm = one(plan, "proxmoxve:index/vmLegacy:VmLegacy")
    assert vm.inputs["initialization"]["ipConfigs"][0]["ipv6"]["gateway"] == "fe80::1"


#: stacks as an operator writes them, every feature on at once: company -> (the committed stack it starts from, its keys)
EVERY_FEATURE = {
    # at home behind a VPS: its own directory, sftp backups, webmail and fail2ban tuned, a DKIM rotation at step 2
    "home": ("home", {
        "ceres-mail:ldapMode": "local", "ceres-mail:ldapClientCidrs": ["10.42.0.0/16"],
        "ceres-mail:backupTarget": "sftp:restic@backup.home.example.org:/srv/restic",
        "ceres-mail:backupHostKey": f"backup.home.example.org {HOST_KEY}",  # as ssh-keyscan prints it
        "ceres-mail:backupSchedule": "Mon..Fri 02:30", "ceres-mail:backupKeep": {"daily": 14, "monthly": 12},
        "ceres-mail:bruteForceMaxRetry": 4, "ceres-mail:bruteForceBanMinutes": 1440, "ceres-mail:clusterCidrs": ["10.42.0.0/16"],
        "ceres-mail:dkimSelector": "ceres2027",
        "ceres-mail:dkimPublishedSelectors": [{"selector": "ceres", "reason": "previous key, signed until 2026-12-01; "
                                                                            "retire on 2026-12-08 or later"}],
    }),
    # a company with its own directory and S3, at a hoster that routes IPv6 through fe80::1, with DANE and its
    # TLS key rolled over to tls2 (step 2)
    "corp": ("prod", {
        "ceres-mail:ldapMode": "external", "ceres-mail:ldapUrl": "ldaps://ldap.corp.example.com",
        "ceres-mail:ldapBindDn": "cn=mail,ou=services,dc=example,dc=com", "ceres-mail:ldapBindPassword": SECURE,
        "ceres-mail:backupTarget": "s3:https://s3.eu-central-1.amazonaws.com/corp-backups/mail", "ceres-mail:backupHostKey": None,
        "ceres-mail:backupS3AccessKey": SECURE, "ceres-mail:backupS3SecretKey": SECURE,
        "ceres-mail:ipv6Gateway": "fe80::1", "ceres-mail:keycloakUrl": "https://sso.example.com/",
        "ceres-mail:webmail": False, "ceres-mail:dnssec": True, "ceres-mail:dane": True, "ceres-mail:tlsKeySelector": "tls2",
        "ceres-mail:tlsPublishedKeys": [{"selector": "tls1", "reason": "previous key, served until 2026-12-01; "
                                                                      "retire on 2026-12-02 or later"}],
    }),
}


@pytest.mark.parametrize("company, base, features", [(company, *stack) for company, stack in EVERY_FEATURE.items()])
def test_a_new_operators_stack_with_every_feature_plans_cleanly(scratch_project, company, base, features):
    """Stacks as an operator writes them, every feature on at once, secrets set with --secret: the plan
    passes with no problem and no mandatory policy violation."""
    plan = record(scratch_project(company, stack_config(base, features)), company)
    assert [v for v in plan.policy if v["level"] == "mandatory"] == []
    names = [r.name for r in plan.resources]
    assert any(name.endswith("-install-backup") for name in names), "backups planned"
    assert any(name.endswith("-directory-federation") for name in names), "Keycloak federates the directory"


# --- each cross-field rule reads what it names -----------------------------------------------------


class StrayKey(Exception):
    """A rule asked for a field it does not name in its reads."""


class OnlyItsReads(Mapping):
    """The checked values as one rule is given them: the fields it names, and none other (asking for one,
    by v[...], v.get or `in`, raises StrayKey)."""

    def __init__(self, good: Mapping[str, object], reads: tuple[str, ...]):
        self.good, self.reads, self.used = good, reads, set()

    def __getitem__(self, name: str) -> object:
        if name not in self.reads:
            raise StrayKey(name)
        self.used.add(name)
        return self.good[name]

    def __iter__(self):
        return iter(self.reads)

    def __len__(self) -> int:
        return len(self.reads)


def test_each_cross_field_rule_reads_all_the_keys_it_names_and_no_other(monkeypatch, scratch_project):
    """A rule runs once the keys it names passed their checks, so it reads just those: no bad key skews it, none is left unchecked."""
    used: dict[int, set[str]] = {index: set() for index in range(len(rules.CROSS_RULES))}
    strays: set[tuple[str, str]] = set()
    checked = reading.cross_field_problems

    def through_views(good):
        for index, rule in enumerate(rules.CROSS_RULES):
            if rules.has_all(good, *rule.reads):
                view = OnlyItsReads(good, rule.reads)
                try:
                    rule.check(view)
                except StrayKey as stray:
                    strays.add((f"{rule.check.__qualname__}{rule.reads}", str(stray)))
                used[index] |= view.used
        return checked(good)

    monkeypatch.setattr(reading, "cross_field_problems", through_views)
    certificate = self_signed("mail.example.com", "mta-sts.example.com")[0]
    samples = [stack_config(stack) for stack in ("prod", "staging", "home")]
    samples += [stack_config("prod", edit) for _, edit, _, _ in BAD_CONFIGS]
    samples += [stack_config(base, features) for base, features in EVERY_FEATURE.values()]
    samples.append(stack_config("prod", {"ceres-mail:tlsMode": "provided", "ceres-mail:tlsCertificate": certificate,
                                         "ceres-mail:tlsPrivateKey": SECURE}))
    for config in samples:
        try:
            settings_of_stack(scratch_project("sample", config), "sample")
        except SettingsError:
            pass
    assert not strays, f"(rule, a field it reads but does not name): {sorted(strays)}"
    unread = {f"{rule.check.__qualname__}{rule.reads}": sorted(set(rule.reads) - used[index])
              for index, rule in enumerate(rules.CROSS_RULES) if set(rule.reads) - used[index]}
    assert not unread, f"fields a rule names but never read in any sample: {unread}"
