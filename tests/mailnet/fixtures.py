"""The test "internet" of the end-to-end tests (docs/testing.md), as one session fixture.

    dns     BIND, authoritative for example.com (the stack's zone, its DKIM key), example.net, the reverse zone
            (and cloudflare.com: the addresses of the zones' NS names)
    root-dns, resolver
            the signed tree (tests/testnet/dns_tree.py): a root and TLDs of the test's own delegating those
            zones to dns, insecurely until a test registers a DS; a validating resolver that trusts only that
            root. Additive: every host and probe asks dns directly, as before
    acme    pebble, the ACME CA the stack's certbot talks to (http-01 validated for real)
    remote  mx.example.net, an MTA of another domain that judges DKIM, SPF and DMARC of what arrives
    client  where the probes run: mail clients, a sending MTA, an attacker
    mail    a fresh Debian 12 booted with systemd, first-booted by cloud-init from the stack's own snippets,
            then installed over SSH, host key pinned, with the stack's own commands

All on one bridge of the test's own (tests/testnet); apt reaches Debian only through the test's apt proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from components.builders.cloud_init import DATA_DISK_LABEL, DATA_MOUNT_POINT
from components.builders.dns_records import Record
from components.builders.zone_file import render_zone
from tests.dns_harness import (control_channel, named_argv, replace_zone_file, rndc_argv, served_zone_stamp,
                               write_named_config, zone_path, zone_stamp)
from tests.mailnet.acme import PEBBLE_ENV, directory_url, pebble_argv, write_config
from tests.mailnet.host_checks import stdin_secrets
from tests.mailnet.scenario import (ADDRESSES, NAMESERVER_ZONE, NAMESERVERS, PREFIX, Deployment, deploy,
                                    nameserver_records)
from tests.testnet import NetnsHost, SystemHost, TestNet, linux
from tests.testnet.aptproxy import AptBridge, joined
from tests.testnet.dns_tree import DnsTree
from tests.testnet.snapshots import installed_snapshot

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PROBE = HERE / "probe.py"
REMOTE_MTA = HERE / "remote_mta.py"
PYTHON = sys.executable
#: the generated secrets an applied stack's state keeps (their resources' names)
MAILBOX_PASSWORD = "ceres-mail-mailbox-password"
#: stage suffix -> (the generated secret's resource, the stdin variable the stage reads it from)
KEPT_STAGE_SECRETS = {"-install-webmail": ("ceres-mail-server-native-roundcube-des-key", "ROUNDCUBE_DES_KEY"),
                      "-install-backup": ("ceres-mail-backup-password", "BACKUP_PASSWORD")}
COMMAND_TIMEOUT = 1200.0  # one install stage, apt through a cold proxy included
NAMESERVER_TTL = 300  # of the name servers' addresses in their zone
# The VM's mail data disk: a filesystem of its own on the mail directory (cloud-init's disk_setup does
# not run in the test host), named as the stack labels it
MAIL_DISKS = {DATA_MOUNT_POINT: DATA_DISK_LABEL}

# TEST IMAGE ONLY: the harness has no disks to partition or grow and no clock to set (its hosts run
# without CAP_SYS_TIME), so those cloud-init modules are left out; everything else runs as on the VM.
TEST_IMAGE_CLOUD_CFG = """\
# TEST IMAGE ONLY (tests/mailnet): no block devices and no clock in the test harness
datasource_list: [NoCloud, None]
network: {config: disabled}
cloud_init_modules: [migrator, seed_random, bootcmd, write-files, set_hostname, update_hostname,
  update_etc_hosts, ca-certs, rsyslog, users-groups, ssh]
cloud_config_modules: [keyboard, locale, set-passwords, apt-pipelining, apt-configure, timezone, runcmd]
cloud_final_modules: [package-update-upgrade-install, write-files-deferred, scripts-vendor, scripts-per-once,
  scripts-per-boot, scripts-per-instance, scripts-user, ssh-authkey-fingerprints, final-message]
"""


@dataclass(frozen=True)
class Placement:
    """Where the stack's mail host boots, and where its install commands run from. By default on the
    internet at the mail address, installed from the client; a VM at home (gatewayMode wireguard,
    tests/mailnet/gateway_net.py) sits on another segment and is installed by an operator there."""

    ipv4_cidr: str = f"{ADDRESSES['mail']}/{PREFIX}"
    options: dict = field(default_factory=dict)  #: more keywords of add_system_host: segment, gateway, devices
    operator: NetnsHost | None = None  #: where the SSH commands run (None: the client)


@dataclass
class MailNet:
    net: TestNet
    deployment: Deployment
    mail: SystemHost
    client: NetnsHost
    remote: NetnsHost
    acme: NetnsHost
    dns: NetnsHost
    workdir: Path
    inbox: Path  #: where the remote MTA writes its verdicts
    pebble_listener_ca: Path
    placement: Placement = field(default_factory=Placement)
    #: the mail host boots (and is rebuilt) over the installed snapshot of its packages: see open_mailnet
    installed_base: bool = False
    dns_tree: DnsTree | None = None  #: the signed tree: its resolver, the registrar's step (register_ds)
    zone_files: dict[str, Path] = field(default_factory=dict)  #: origin -> the file the dns host serves it from
    dns_rndc: Path | None = None  #: the rndc.conf that reaches the dns host's named

    @property
    def operator(self) -> NetnsHost:
        """Where the install commands and every SSH to a host of the stack run from."""
        return self.placement.operator or self.client

    def probe(self, name: str, *args: str, host: NetnsHost | None = None, timeout: float = 60) -> dict:
        """Run a probe (tests/mailnet/probe.py) in the client namespace (or `host`) and return its JSON."""
        result = (host or self.client).run([PYTHON, str(PROBE), name, *args], timeout=timeout)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def pebble_root(self, name: str = "pebble-root.pem") -> str:
        """pebble's root certificate (what the mail host's certificate chains to), fetched from pebble's
        management port into the workdir: the CA a client of the test internet trusts. Its path."""
        fetched = self.probe("fetch", "--host", ADDRESSES["acme"], "--cafile", str(self.pebble_listener_ca),
                             "--path", f"https://{ADDRESSES['acme']}:15000/roots/0")
        path = self.workdir / name
        path.write_text(fetched["body"])
        return str(path)

    def _ssh_argv(self, remote_command: str, extra: tuple[str, ...] = (), key: str = "deploy_key",
                  known_hosts: str = "known_hosts", login: str | None = None) -> list[str]:
        """ssh as pulumi-command connects: the deploy key (or the workdir's `key`), and only the pinned host
        key (of the workdir's `known_hosts`) trusted; to the mail host, or to `login` (user@host)."""
        # ssh keeps the first value of an option: the caller's extra options go first
        return [
            "ssh", "-F", "/dev/null", *extra, "-i", str(self.workdir / key),
            "-o", f"UserKnownHostsFile={self.workdir / known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            login or f"{self.deployment.ssh_user}@{self.deployment.ssh_host}", remote_command,
        ]

    def ssh(self, remote_command: str, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT,
            extra: tuple[str, ...] = (), **target: str) -> subprocess.CompletedProcess:
        """Run a command on the mail host (or `_ssh_argv`'s `target`) over SSH from the operator, standard
        input as the command's `stdin`."""
        return self.operator.run(self._ssh_argv(remote_command, extra, **target), timeout=timeout,
                                 input=stdin if stdin is not None else "", stdin=None)

    def ssh_background_install(self) -> subprocess.Popen:
        """The whole install running in the background (to be interrupted); stdin files are mode 0600."""
        lines = ["set -e"]
        for index, command in enumerate(self.deployment.commands):
            stdin_file = self.workdir / f"stdin-{index}"
            stdin_file.write_text(command.stdin or "")
            stdin_file.chmod(0o600)
            lines.append(f"{shlex.join(self._ssh_argv(command.create))} < {shlex.quote(str(stdin_file))}")
        script = self.workdir / "install.sh"
        script.write_text("\n".join(lines) + "\n")
        return self.operator.popen(["bash", str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kept_secrets(self) -> dict[str, dict]:
        """What the state of an applied stack keeps across a change of its stack file, as mock_overrides for
        a new recording (tests/mailnet/scenario.py's deploy): the generated mailbox password and, where the
        stack has their stages, Roundcube's des_key and the backup repository's password (a new one would
        not open the repository)."""
        kept = {MAILBOX_PASSWORD: {"result": self.deployment.ceres_env["CERES_SMTP_PASS"]}}
        for suffix, (resource, variable) in KEPT_STAGE_SECRETS.items():
            if any(c.name.endswith(suffix) for c in self.deployment.commands):
                kept[resource] = {"result": stdin_secrets(self, suffix)[variable]}
        return kept

    def apply(self, deployment: Deployment) -> list[tuple[str, subprocess.CompletedProcess]]:
        """Another recording of the stack applied to the running host as `pulumi up` applies it: each
        remote command whose script or standard input changed runs again, in the graph's order
        (pulumi-command runs an updated Command's create again; a Command no longer declared has no delete
        step and leaves the host as it is). The (stage, CompletedProcess) of each; stops at a failure."""
        before = set(self.deployment.commands)
        self.deployment = deployment
        ran = []
        for command in (c for c in deployment.commands if c not in before):
            result = self.ssh(command.create, command.stdin)
            ran.append((command.name.rsplit("-install-", 1)[-1], result))
            if result.returncode != 0:
                break
        return ran

    def serve_zone(self, origin: str, text: str, timeout: float = 20) -> None:
        """The dns host serves `text` as zone `origin` from now on, as a DNS provider publishes a change: the file
        replaced, named told to reload it; returns once it answers with the new zone (its serial, and in a signed
        zone the new signatures). Resolvers that cached the old answers keep them for their TTL."""
        replace_zone_file(self.zone_files[origin], text)
        self.dns.run(rndc_argv(self.dns_rndc, "reload", origin), check=True, timeout=30)
        wanted = zone_stamp(origin, text)
        linux.wait_until(lambda: served_zone_stamp(self.dns, ADDRESSES["dns"], origin) == wanted, timeout,
                         f"the dns host to serve the new {origin}")

    def rebuild_mail_host(self) -> None:
        """A fresh mail host at the same address, first-booted from the deployment's snippets."""
        self.net.remove_host("mail")
        self.mail = boot_mail_host(self.net, self.deployment, self.placement, self.installed_base)
        self.mail.wait_running(timeout=300)
        # the new host has a new MAC: peers must not keep sending to the old one
        tree_hosts = {self.dns_tree.root_host, self.dns_tree.resolver_host} if self.dns_tree else set()
        for host in {self.client, self.remote, self.acme, self.dns, self.operator, *tree_hosts}:
            host.run(["ip", "neigh", "flush", "all"])

    def install(self) -> list[subprocess.CompletedProcess]:
        """Every remote command of the graph, in its order; stops at the first failure."""
        results = []
        for command in self.deployment.commands:
            started = time.monotonic()
            result = self.ssh(command.create, command.stdin)
            log.info("%s: exit %d in %.0f s", command.name, result.returncode, time.monotonic() - started)
            results.append(result)
            if result.returncode != 0:
                break
        return results

    def verdicts(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.inbox.glob("*.json"), key=lambda p: int(p.stem))]

    def file_hashes(self, paths: Iterable[str], host: SystemHost | None = None) -> dict[str, str]:
        """The sha256 of each of the mail host's (or `host`'s) files: what a re-run must leave as it was."""
        host = host or self.mail
        return {path: hashlib.sha256(host.path(path).read_bytes()).hexdigest() for path in paths}

    def service_starts(self, services: Iterable[str], host: SystemHost | None = None) -> dict[str, str]:
        """When each service last started, and its state: a re-run that restarts nothing leaves these."""
        starts = {}
        for service in services:
            shown = (host or self.mail).exec(["systemctl", "show", "-p", "ActiveEnterTimestampMonotonic,ActiveState",
                                              service])
            starts[service] = shown.stdout.strip()
        return starts


def boot_mail_host(net: TestNet, deployment: Deployment, placement: Placement,
                   installed_base: bool = False) -> SystemHost:
    """The stack's mail host, first-booted from the deployment's snippets where `placement` puts it; with
    `installed_base`, over the installed snapshot of what the deployment installs (packages_snapshot)."""
    layers = (packages_snapshot(net, deployment),) if installed_base else ()
    return net.add_system_host("mail", placement.ipv4_cidr, nameserver=ADDRESSES["dns"],
                               files=mail_host_files(deployment), disks=MAIL_DISKS, layers=layers,
                               **placement.options)


def packages_snapshot(net: TestNet, deployment: Deployment) -> Path:
    """The installed snapshot (tests/testnet/snapshots.py) of what the deployment installs: the packages its
    cloud-config installs at first boot, then its own rendered packages stage; keyed by both. A host booted
    with it has every one of those packages, so cloud-init and the stage, when they run, find them present and
    take their converge path, as on a re-run."""
    [stage] = [c for c in deployment.commands if c.name.endswith("-install-packages")]
    return installed_packages_snapshot(net, deployment.user_data, stage.create, stage.stdin or "")


def installed_packages_snapshot(net: TestNet, user_data: str, stage_script: str, stage_stdin: str) -> Path:
    """packages_snapshot from its parts: the cloud-config (user-data) and the packages stage's command and
    standard input as the graph renders them."""
    first_boot = yaml.safe_load(user_data).get("packages", [])
    # as cloud-init's package module installs them (recommends included, the package's config files kept)
    cloud_init_install = ["apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confold", "install", *first_boot]

    steps = (("cloud-init's packages", ["sh", "-c", f"apt-get -q update && {shlex.join(cloud_init_install)}"], ""),
             ("the packages stage", ["bash", "-c", stage_script], stage_stdin))

    def install(host: SystemHost) -> None:
        for what, argv, stdin in steps:
            result = host.exec(argv, input=stdin, timeout=COMMAND_TIMEOUT)
            if result.returncode != 0:
                raise RuntimeError(f"{what} failed on the snapshot's host ({result.returncode}):\n"
                                   f"{result.stdout[-4000:]}{result.stderr[-4000:]}")

    return installed_snapshot(net, "mail", (shlex.join(cloud_init_install), stage_script, stage_stdin), install)


def mail_host_files(deployment: Deployment) -> dict[str, str]:
    """What the mail host boots with: the cloud-init NoCloud seed from the deployment's own snippets."""
    return nocloud_files(deployment.user_data, deployment.vendor_data)


def nocloud_files(user_data: str, vendor_data: str, instance_id: str = "ceres-mail-e2e") -> dict[str, str]:
    """A host first-booted by cloud-init from these snippets (NoCloud seed), as Proxmox's cloud-init
    drive hands them to a VM; a new instance id is a new machine to cloud-init."""
    seed = "/var/lib/cloud/seed/nocloud"
    return {
        f"{seed}/user-data": user_data,
        f"{seed}/vendor-data": vendor_data,
        f"{seed}/meta-data": f"instance-id: {instance_id}\nlocal-hostname: mail\n",
        "/etc/cloud/cloud.cfg.d/99-test-image.cfg": TEST_IMAGE_CLOUD_CFG,
    }


@pytest.fixture(scope="session")
def shared_apt_proxy():
    """The run's apt proxy, for every test internet of the session: the one proxy holds the persistent
    package cache, so a second proxy would start with an empty one and download everything again (under
    pytest's workers, each joins the proxy tools/run_tests.py runs: tests/testnet/aptproxy.py)."""
    if os.geteuid() != 0:
        pytest.skip("the test internet needs root (network namespaces, booting a Debian host)")
    with joined() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def mailnet(tmp_path_factory, shared_apt_proxy):
    with open_mailnet(tmp_path_factory.mktemp("mailnet"), shared_apt_proxy) as net:
        yield net


@contextlib.contextmanager
def open_mailnet(workdir: Path, apt_proxy: AptBridge, extra_config: dict | None = None,
                 extra_records: tuple[Record, ...] = (),
                 place_mail: Callable[[TestNet, Deployment], Placement] | None = None,
                 installed_base: bool = False) -> Iterator[MailNet]:
    """A test internet of its own with the stack's mail host booted (not installed yet); `extra_config` sets
    more keys of the stack (a directory, for tests/test_directory_host.py), `extra_records` more DNS records.
    `place_mail`, called once the internet's hosts run and before the mail host boots, may build more of the
    world (a home network, a VPS) and says where the mail host goes (default: Placement()).
    `installed_base`: the mail host boots over the installed snapshot of its packages (packages_snapshot), for
    a world that needs an installed host, not a fresh install (the session host, the kill test and the e2e
    layer install fresh)."""
    with TestNet(apt_proxy=apt_proxy) as net:
        cidr = {name: f"{address}/{PREFIX}" for name, address in ADDRESSES.items()}
        pebble_files = write_config(workdir / "pebble", ADDRESSES["acme"])
        deployment = deploy(workdir / "stack", directory_url(ADDRESSES["acme"]), pebble_files.listener_cert_pem,
                            extra=extra_config, extra_records=extra_records)
        (workdir / "pebble-listener.pem").write_text(pebble_files.listener_cert_pem)

        client = net.add_netns_host("client", cidr["client"])
        dns = net.add_netns_host("dns", cidr["dns"])
        (workdir / "named").mkdir()
        served = {**deployment.zones, NAMESERVER_ZONE: render_zone(NAMESERVER_ZONE, nameserver_records(NAMESERVER_TTL),
                                                                   NAMESERVERS, NAMESERVER_TTL)}
        controls, dns_rndc = control_channel(workdir / "named", ADDRESSES["dns"])
        named_conf = write_named_config(workdir / "named", served, ADDRESSES["dns"], controls)
        zone_files = {origin: zone_path(workdir / "named", index, origin) for index, origin in enumerate(served)}
        dns.popen(named_argv(named_conf), stdout=subprocess.DEVNULL, stderr=(workdir / "named.log").open("w"))

        def dns_ready() -> bool:
            result = client.run([PYTHON, str(PROBE), "dns", "--host", ADDRESSES["dns"], "--name", "example.com",
                                 "--subject", "SOA"], timeout=10)
            return result.returncode == 0 and json.loads(result.stdout).get("rcode") == 0

        linux.wait_until(dns_ready, 20, "BIND")
        tree = open_dns_tree(net, workdir / "dns-tree", served)

        acme = net.add_netns_host("acme", cidr["acme"])
        acme.popen(pebble_argv(pebble_files, ADDRESSES["dns"]), env={**os.environ, **PEBBLE_ENV},
                   stdout=(workdir / "pebble.log").open("w"), stderr=subprocess.STDOUT)

        remote = net.add_netns_host("remote", cidr["remote"])
        inbox = workdir / "inbox"
        remote.popen([PYTHON, str(REMOTE_MTA), ADDRESSES["remote"], ADDRESSES["dns"], str(inbox)],
                     stdout=(workdir / "remote.log").open("w"), stderr=subprocess.STDOUT)

        key = workdir / "deploy_key"
        key.write_text(deployment.deploy_private_key)
        key.chmod(0o600)
        (workdir / "known_hosts").write_text(f"{deployment.ssh_host} {deployment.host_public_key}\n")

        placement = place_mail(net, deployment) if place_mail else Placement()
        mail = boot_mail_host(net, deployment, placement, installed_base)
        mail.wait_running(timeout=300)
        yield MailNet(net, deployment, mail, client, remote, acme, dns, workdir, inbox,
                      workdir / "pebble-listener.pem", placement, installed_base, tree, zone_files, dns_rndc)


def open_dns_tree(net: TestNet, workdir: Path, zones: Iterable[str]) -> DnsTree:
    """The signed tree on new hosts root-dns and resolver, each of `zones` delegated to the dns host by
    NAMESERVERS (insecurely: a test registers a DS with `register_ds`); started."""
    started = time.monotonic()
    tree = DnsTree(workdir, net.add_netns_host("root-dns", f"{ADDRESSES['root-dns']}/{PREFIX}"),
                   net.add_netns_host("resolver", f"{ADDRESSES['resolver']}/{PREFIX}"))
    for zone in zones:
        tree.delegate(zone, dict.fromkeys(NAMESERVERS, ADDRESSES["dns"]))
    tree.start()
    log.info("signed DNS tree: %.1f s", time.monotonic() - started)
    return tree


@pytest.fixture(scope="session")
def installed(mailnet):
    """The install, run once for the session: every stage's CompletedProcess, in order."""
    return install_or_fail(mailnet)


def install_or_fail(mailnet: MailNet) -> list[subprocess.CompletedProcess]:
    """Every stage's CompletedProcess, in order; the test fails with the failed stage's output."""
    started = time.monotonic()
    results = mailnet.install()
    log.info("install: %.0f s", time.monotonic() - started)
    failed = [r for r in results if r.returncode != 0]
    if failed:
        pytest.fail(f"install failed:\n{failed[0].stdout[-4000:]}\n{failed[0].stderr[-4000:]}", pytrace=False)
    return results
