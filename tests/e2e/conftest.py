"""The end-to-end layer's world: an empty test internet, CERES's platform, and a project to `pulumi up`.

    dns       BIND, authoritative for the stack's zone (served from the Cloudflare stand-in's records, signed
              with the stand-in's key once its ZoneDnssec exists), the other domain and the reverse zone
              (and cloudflare.com, the addresses of their NS names)
    root-dns, resolver
              the signed tree (tests/testnet/dns_tree.py) delegating those zones to dns, and a validating
              resolver that trusts only its root (tests/mailnet/fixtures.py open_dns_tree)
    acme      pebble, the ACME CA (http-01 validated for real)
    remote    mx.example.net, another domain's MTA, judging DKIM, SPF and DMARC of what arrives
    client    the operator's machine (the deployer: SSH, HTTPS to Keycloak) and where mail clients run
    sso       CERES's Keycloak, real (Maven Central, a JDK from PyPI), with CERES's realm in it
    vm<id>    booted by the Proxmox stand-in when the graph creates the VM; nothing else exists before

k3s (the real Kubernetes API, CERES's Deployment in it) runs on this machine's loopback, as in the engine
layer. Everything that boots once per session is a session fixture; one stack is taken through the
scenario by the tests in order (test_up.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dns.reversename
import pytest

from components.builders.dns_records import DKIM_KEYS_OUTPUT, DKIM_OUTPUT, Record
from tests.conftest import self_signed, stack_config
from tests.e2e.cloud import TestCloud
from tests.e2e.http_call import netns_sender
from tests.e2e.keycloak import Keycloak, KeycloakAdmin, start_keycloak
from tests.e2e.zones import ZoneServer
from tests.engine.fixtures import CERES_DEPLOYMENT, kubeconfig_for, reset_ceres
from tests.engine.harness import EngineProject, EngineRun, run_engine
from tests.engine.k3s import K3s
from tests.engine.standins.cloud import CLOUD_ENV
from tests.engine.standins.cloudflare_dns import seed_zone
from tests.mailnet.acme import PEBBLE_ENV, directory_url, pebble_argv, write_config
from tests.mailnet.fixtures import MAIL_DISKS, installed_packages_snapshot, nocloud_files, open_dns_tree
from tests.mailnet.scenario import ADDRESSES as TEST_INTERNET
from tests.mailnet.scenario import PREFIX, REMOTE_DOMAIN, nameserver_records, remote_domain_records
from tests.testnet import NetnsHost, TestNet, linux
from tests.testnet.dns_tree import DnsTree

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PROBE = HERE.parent / "mailnet" / "probe.py"
REMOTE_MTA = HERE.parent / "mailnet" / "remote_mta.py"
CERES_POD = HERE / "ceres_pod.py"
PYTHON = sys.executable

# the test internet's addresses (the VM's static address as "mail"; "client" is the operator's machine,
# inside adminCidrs), and CERES's Keycloak
ADDRESSES = {**TEST_INTERNET, "sso": "203.0.113.150"}
DOMAIN = "example.com"
PACKAGES_STAGE = "ceres-mail-server-install-packages"
MAIL_HOST = f"mail.{DOMAIN}"
MAILBOX = f"no-reply@{DOMAIN}"  #: the stack's mailbox, which CERES and Keycloak send as
SSO_HOST, SSO_PORT = f"sso.{DOMAIN}", 8443
ADMIN_CIDR = "203.0.113.192/26"  # the client is inside, the remote MTA is not
STACK = "e2e"
REALM = "ceres"
# CERES's realm as it exists before this stack touches it: fields of its own, which must survive
REALM_FIELDS = {"displayName": "CERES", "displayNameHtml": "<b>CERES</b>", "enabled": True, "loginTheme": "keycloak",
                "registrationAllowed": False, "resetPasswordAllowed": True, "accessTokenLifespan": 300}
STACK_CONFIG = {
    # staging's stack file, pointed at the test internet
    "domain": DOMAIN,
    "ipv4Address": f"{ADDRESSES['mail']}/{PREFIX}",
    "ipv4Gateway": "203.0.113.1",
    "adminCidrs": [ADMIN_CIDR],
    "dnsResolvers": [ADDRESSES["dns"]],
    "keycloakUrl": f"https://{SSO_HOST}:{SSO_PORT}",
    "mailFromName": "CERES Platform",
    "mailReplyTo": f"support@{DOMAIN}",
    "ceresDeployment": CERES_DEPLOYMENT,  # rolled when its SMTP settings change
}
CERES_SECRET = ("ceres-staging", "ceres-smtp")  #: staging's ceresNamespace, the default ceresSecretName
SERVICES = ("postfix", "dovecot", "rspamd", "nginx")
CONFIG_FILES = ("/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/dovecot/conf.d/99-ceres-mail.conf",
                "/etc/rspamd/local.d/dkim_signing.conf", "/etc/nginx/sites-available/ceres-mail")


def platform_records(ttl: int) -> list[Record]:
    """What the zones hold without the stack: CERES's SSO host, the PTR of the mail address (set at the
    IP provider), the other domain, and the name servers' addresses."""
    ptr = dns.reversename.from_address(ADDRESSES["mail"]).to_text(omit_final_dot=True)
    return [
        Record(DOMAIN, SSO_HOST, "A", ADDRESSES["sso"], ttl, "test: CERES's Keycloak"),
        Record(ptr.split(".", 1)[1], ptr, "PTR", f"{MAIL_HOST}.", ttl, "test: PTR of the mail address, at the IP provider"),
        *remote_domain_records(ttl),
        *nameserver_records(ttl),
    ]


@dataclass
class EndToEnd:
    """The test internet, the platform in it, and the one stack the scenario takes through its life."""

    net: TestNet
    cloud: TestCloud
    zones: ZoneServer
    client: NetnsHost
    remote: NetnsHost
    k3s: K3s
    sso: Keycloak  #: the server (what it trusts, its log)
    keycloak: KeycloakAdmin  #: its admin API, as CERES's administrators use it
    project: EngineProject
    stack: object  #: pulumi.automation.Stack
    workdir: Path
    inbox: Path
    pebble_root: Path
    dns_tree: DnsTree  #: the signed tree: its resolver, the registrar's step (register_ds)

    def up(self, **options) -> EngineRun:
        started = time.monotonic()
        run = run_engine(self.stack.up, **options)
        log.info("pulumi up: %s in %.0f s", "ok" if run.ok else "FAILED", time.monotonic() - started)
        return run

    def probe(self, name: str, *args: str, timeout: float = 60, host: NetnsHost | None = None) -> dict:
        """A probe (tests/mailnet/probe.py) from the client, or from `host`; its JSON answer."""
        result = (host or self.client).run([PYTHON, str(PROBE), name, *args], timeout=timeout)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def verdict(self, wanted: Callable[[dict], bool], timeout: float = 120) -> dict:
        """The remote MTA's verdict on the first message `wanted` accepts, once it arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in sorted(self.inbox.glob("*.json")):
                verdict = json.loads(path.read_text())
                if wanted(verdict):
                    return verdict
            time.sleep(1)
        raise AssertionError(f"no such message reached the remote MTA in {timeout:g} s; it has "
                             f"{[json.loads(p.read_text())['subject'] for p in self.inbox.glob('*.json')]}")

    def ceres_secret_env(self) -> dict[str, str]:
        """The CERES Secret as a pod gets it with envFrom: read from k3s's API, each key a variable."""
        namespace, name = CERES_SECRET
        secret = self.k3s.get("secret", name, namespace)
        assert secret is not None, f"no Secret {namespace}/{name} in the cluster"
        return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}

    def ceres_send(self, to: str, subject: str, env: dict[str, str] | None = None) -> dict:
        """CERES (tests/e2e/ceres_pod.py) sends, its environment exactly the Secret's."""
        pod_env = {"PATH": os.environ["PATH"], **(env if env is not None else self.ceres_secret_env())}
        result = self.client.run([PYTHON, str(CERES_POD), "--to", to, "--subject", subject,
                                  "--cafile", str(self.pebble_root)], env=pod_env, timeout=90)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def stages_started_since(e2e: EndToEnd, since: float) -> list[str]:
    """The install stages (remote commands) that started since `since` (monotonic), in order."""
    return [name for at, op, name in e2e.cloud.journal.entries if op == "ssh.start" and at >= since]


def host_state(e2e: EndToEnd, files: tuple[str, ...] = CONFIG_FILES, services: tuple[str, ...] = SERVICES
               ) -> dict[str, str]:
    """The rendered configuration's bytes and each service's start time on the VM."""
    host = e2e.cloud.vm_host()
    state = {path: hashlib.sha256(host.path(path).read_bytes()).hexdigest() for path in files}
    for service in services:
        state[service] = host.exec(["systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", service]).stdout.strip()
    return state


def password_file(e2e: EndToEnd, name: str, password: str) -> str:
    """A file (mode 0600 before anything is in it) holding `password`, for a client that reads it from one."""
    path = e2e.workdir / name
    path.touch(mode=0o600)
    path.write_text(password)
    return str(path)


def mailctl_verify(e2e: EndToEnd, host: NetnsHost | None = None, resolver: str = ADDRESSES["dns"]
                   ) -> subprocess.CompletedProcess:
    """`mailctl verify --stack --json` from the operator's machine (or `host`: the directory is open to
    ldapClientCidrs only, and verify checks it from where it runs), as the README has operators run it: the
    stack's DKIM keys (every selector's) from its outputs, the mailbox password from a file. It asks
    `resolver`: the zones' server by default; the signed tree's validating resolver where DNSSEC is judged
    (an authoritative server never sets the AD bit)."""
    outputs = e2e.stack.outputs()
    dkim_json = e2e.workdir / "outputs.json"
    dkim_json.write_text(json.dumps({key: outputs[key].value for key in (DKIM_OUTPUT, DKIM_KEYS_OUTPUT)}))
    password = password_file(e2e, "verify-pass", outputs["ceresSmtpPass"].value)
    return (host or e2e.client).run([str(Path(PYTHON).parent / "mailctl"), "-C", str(e2e.project.work_dir), "verify",
                                     "--stack", STACK, "--resolver", resolver, "--ca-file", str(e2e.pebble_root),
                                     "--password-file", password, "--dkim-public-key", str(dkim_json), "--json"],
                                    timeout=300)


def submit(e2e: EndToEnd, password_path: str, subject: str, port: int = 587, user: str = MAILBOX) -> dict:
    """A mail client logs in as `user` (on 587 with STARTTLS, or 465) and sends as `user` to the other
    domain: the probe's answer ({"sent": ...}, or {"exception": ...} with the server's refusal)."""
    return e2e.probe("submit", "--host", ADDRESSES["mail"], "--name", MAIL_HOST, "--port", str(port),
                     *(("--tls-mode", "implicit") if port == 465 else ()), "--cafile", str(e2e.pebble_root),
                     "--user", user, "--password-file", password_path,
                     "--sender", user, "--to", f"probe@{REMOTE_DOMAIN}", "--subject", subject)


def imap_login(e2e: EndToEnd, password_path: str, user: str = MAILBOX) -> dict:
    """An IMAPS login on 993 as `user` (and a look for a message that is not there): {"found": False} once
    logged in, {"exception": ...} when refused."""
    return e2e.probe("imap", "--host", ADDRESSES["mail"], "--name", MAIL_HOST, "--port", "993",
                     "--cafile", str(e2e.pebble_root), "--user", user, "--password-file", password_path,
                     "--subject", "none", "--wait", "0")


def tcp_open(host: NetnsHost, port: int) -> bool:
    """Whether a TCP connection from `host` to the mail address's `port` is accepted (within 3 s): what the
    VM's firewall, and then the host, let through."""
    code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
            "except OSError:\n sys.exit(1)\n")
    return host.run([PYTHON, "-c", code, ADDRESSES["mail"], str(port)], timeout=20).returncode == 0


@pytest.fixture(scope="session")
def e2e(tmp_path_factory, engine_tools, k3s, shared_apt_proxy):
    workdir = tmp_path_factory.mktemp("e2e")
    cidr = {name: f"{address}/{PREFIX}" for name, address in ADDRESSES.items()}
    with TestNet(apt_proxy=shared_apt_proxy) as net:
        dns_host = net.add_netns_host("dns", cidr["dns"])
        client = net.add_netns_host("client", cidr["client"], nameserver=ADDRESSES["dns"])
        sso = net.add_netns_host("sso", cidr["sso"], nameserver=ADDRESSES["dns"])
        acme = net.add_netns_host("acme", cidr["acme"])
        remote = net.add_netns_host("remote", cidr["remote"])

        project = EngineProject(workdir / "project", engine_tools, kubeconfig=kubeconfig_for(k3s, "staging"))
        staging = stack_config("staging")
        zone_id = staging["ceres-mail:cloudflareZoneId"]
        seed_zone(project.world, zone_id, DOMAIN)  # the account's zone, as it exists before any stack
        zones = ZoneServer(dns_host, workdir / "named", {zone_id: DOMAIN}, platform_records(300), ttl=300).start()
        dns_tree = open_dns_tree(net, workdir / "dns-tree", zones.origins)

        pebble_files = write_config(workdir / "pebble", ADDRESSES["acme"])
        acme.popen(pebble_argv(pebble_files, ADDRESSES["dns"]), env={**os.environ, **PEBBLE_ENV},
                   stdout=(workdir / "pebble.log").open("w"), stderr=subprocess.STDOUT)
        listener_ca = workdir / "pebble-listener.pem"
        listener_ca.write_text(pebble_files.listener_cert_pem)
        pebble_root = workdir / "pebble-root.pem"

        def pebble_root_fetched() -> bool:
            result = client.run([PYTHON, str(PROBE), "fetch", "--host", ADDRESSES["acme"], "--cafile", str(listener_ca),
                                 "--path", f"https://{ADDRESSES['acme']}:15000/roots/0"], timeout=10)
            fetched = json.loads(result.stdout) if result.returncode == 0 else {}
            if fetched.get("status") == 200:
                pebble_root.write_text(fetched["body"])
            return pebble_root.exists()

        linux.wait_until(pebble_root_fetched, 30, "pebble")

        inbox = workdir / "inbox"
        remote.popen([PYTHON, str(REMOTE_MTA), ADDRESSES["remote"], ADDRESSES["dns"], str(inbox)],
                     stdout=(workdir / "remote.log").open("w"), stderr=subprocess.STDOUT)

        # CERES's Keycloak: HTTPS with a certificate the operator's machine trusts, SMTP trusting the ACME CA
        sso_cert, sso_key = self_signed(SSO_HOST)
        sso_ca = workdir / "sso-ca.pem"
        sso_ca.write_text(sso_cert)
        admin_password = base64.b64encode(os.urandom(18)).decode()
        sso_server = start_keycloak(sso, workdir / "keycloak", hostname=SSO_HOST, https_port=SSO_PORT, tls_cert_pem=sso_cert,
                       tls_key_pem=sso_key, trusted_ca_pem=pebble_root.read_text(), admin_password=admin_password)
        send = netns_sender(client, str(sso_ca))
        keycloak = KeycloakAdmin(f"https://{SSO_HOST}:{SSO_PORT}", send, password=admin_password)
        client_secret = keycloak.create_provider_client(staging["ceres-mail:keycloakClientId"])
        keycloak.create_realm({"realm": REALM, **REALM_FIELDS})

        def vm_layers(user_data: str) -> tuple[Path, ...]:
            """The first VM boots the bare image: the first up installs it fresh, this world's proof of a fresh
            install. A VM made once one was installed (the replaced VM) boots over the installed snapshot of
            what that install's packages stage ran (tests/testnet/snapshots.py): every stage still runs on it,
            the packages stage on its converge path, and the world is spared a second full install."""
            stage = cloud.commands_run.get(PACKAGES_STAGE)
            return () if stage is None else (installed_packages_snapshot(net, user_data, *stage),)

        cloud = TestCloud(net, workdir / "cloud", zones=zones, deployer=client, nameserver=ADDRESSES["dns"],
                          vm_files=lambda vm_id, user_data, vendor_data: nocloud_files(user_data, vendor_data, f"vm-{vm_id}"),
                          vm_disks=MAIL_DISKS, http_sender=send, vm_layers=vm_layers)
        (workdir / "cloud").mkdir()
        reset_ceres(k3s)
        with cloud.serve(workdir / "cloud.sock") as socket_path:
            project.env[CLOUD_ENV] = str(socket_path)
            stack = project.stack(STACK, source="staging", config={
                **STACK_CONFIG, "acmeDirectory": directory_url(ADDRESSES["acme"]),
                "acmeCaBundle": pebble_files.listener_cert_pem,
            }, secret_config={"keycloakClientSecret": client_secret})
            yield EndToEnd(net, cloud, zones, client, remote, k3s, sso_server, keycloak, project, stack, workdir, inbox,
                           pebble_root, dns_tree)
        zones.stop()
        reset_ceres(k3s)


@pytest.fixture(scope="session")
def deployed(e2e):
    """The first `pulumi up`, from an empty test internet: (its run, when it started)."""
    assert e2e.cloud.vms == {}, "the test internet starts empty"
    started = time.monotonic()
    run = e2e.up()
    assert run.ok, run.output[-6000:]
    return run, started


@pytest.fixture(scope="session")
def mailbox_password(e2e, deployed) -> Path:
    """A file (mode 0600) with the mailbox password as the Secret gives it to CERES, read when asked."""
    path = e2e.workdir / "mailbox-password"
    path.touch(mode=0o600)
    path.write_text(e2e.ceres_secret_env()["CERES_SMTP_PASS"])
    return path
