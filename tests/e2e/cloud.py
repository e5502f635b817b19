"""The test internet's "cloud API", served to the stand-in providers during a `pulumi up` (tests only).

The real providers call Proxmox's, Cloudflare's and Keycloak's APIs and dial SSH; here the stand-ins
(tests/engine/standins) call this one instead, on a Unix socket (CERES_TESTNET_CLOUD), because the test
session owns the test internet: its hosts, its wire, its DNS server. Each operation does what the real
cloud would have done, on the test internet:

    vm.create     boot a fresh Debian host at the VM's static address, first-booted by cloud-init from the
                  snippets the graph uploaded (an address another VM holds is refused: two hosts on one
                  static address cannot both work)
    vm.delete     remove that host
    firewall.set  enforce the VM's firewall options and rules with nftables in front of the host
    dns.serve     serve the zones with exactly the Cloudflare records the stand-in holds
    ssh.run       run a command on a host over SSH from the deployer host, as pulumi-command dials it
    http          an HTTPS request from the deployer host (the Keycloak provider's calls)

Secrets pass through (a deploy key, a command's stdin, a client secret) but are never logged: the
journal keeps only the operation, its subject and when.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socketserver
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tests.e2e import firewall
from tests.e2e.zones import ZoneServer
from tests.testnet import NetnsHost, SystemHost, TestNet, linux

log = logging.getLogger(__name__)

SSH_TIMEOUT = 1800.0  # one install stage, apt through a cold proxy included
# ssh exits 255 for its own failures; these say the host was not reachable (yet), which pulumi-command retries
DIAL_FAILURES = re.compile(r"Connection refused|Connection timed out|No route to host|Connection reset|"
                           r"Connection closed by|kex_exchange_identification|Network is unreachable")


@dataclass
class Journal:
    """What the cloud did, in order: (monotonic time, operation, subject). No secrets."""

    entries: list[tuple[float, str, str]] = field(default_factory=list)

    def add(self, operation: str, subject: str) -> None:
        self.entries.append((time.monotonic(), operation, subject))

    def when(self, operation: str, subject: str) -> list[float]:
        return [at for at, op, what in self.entries if op == operation and what == subject]


class TestCloud:
    """The operations above, on one test internet; `serve()` exposes them to the stand-ins."""

    __test__ = False  # not a pytest test class

    def __init__(self, net: TestNet, workdir: Path, *, zones: ZoneServer, deployer: NetnsHost,
                 nameserver: str, vm_files: Callable[[int, str, str], dict], vm_disks: dict[str, str],
                 http_sender: Callable[[str, str, dict, bytes | None], tuple[int, bytes]],
                 vm_layers: Callable[[str], tuple[Path, ...]] = lambda user_data: ()):
        self.net = net
        self.workdir = workdir
        self.zones = zones
        self.deployer = deployer
        self.nameserver = nameserver
        self.vm_files = vm_files  #: (vm id, user-data, vendor-data) -> the files the host boots with
        self.vm_disks = vm_disks
        self.http_sender = http_sender
        self.vm_layers = vm_layers  #: user-data -> the overlay layers a new VM boots over (none: the bare image)
        #: name -> (command, stdin) of the last command run over SSH under that name (never logged: stdin may
        #: hold secrets)
        self.commands_run: dict[str, tuple[str, str]] = {}
        self.vms: dict[int, SystemHost] = {}
        self.firewalls: dict[int, dict[str, dict | None]] = {}
        self.journal = Journal()
        self._vm_lock = threading.Lock()
        self._firewall_lock = threading.Lock()
        self._bridge_filtering = False

    # --- Proxmox --------------------------------------------------------------------------------------

    def vm_create(self, vm_id: int, ipv4_cidr: str, user_data: str, vendor_data: str) -> None:
        address = ipv4_cidr.split("/")[0]
        layers = self.vm_layers(user_data)
        with self._vm_lock:
            holder = next((other for other, host in self.vms.items() if host.address == address), None)
            if holder is not None:
                raise RuntimeError(f"VM {vm_id}: address {address} is held by VM {holder}: two hosts on one "
                                   "static address")
            self.journal.add("vm.create", str(vm_id))
            host = self.net.add_system_host(f"vm{vm_id}", ipv4_cidr, nameserver=self.nameserver,
                                            files=self.vm_files(vm_id, user_data, vendor_data), disks=self.vm_disks,
                                            layers=layers)
            self.vms[vm_id] = host
        host.wait_running(timeout=300)
        self._log_cloud_init_errors(host)
        self._forget_old_neighbours()
        self.journal.add("vm.running", str(vm_id))

    @staticmethod
    def _log_cloud_init_errors(host: SystemHost) -> None:
        """What went wrong in a VM's first boot, into the test's log: the install's first stage will fail on
        it (`cloud-init status --wait`), and the host may be gone by the time anyone looks."""
        status = host.exec(["cloud-init", "status", "--long"], timeout=60).stdout
        if "error" not in status:
            return
        logged = host.path("/var/log/cloud-init.log")
        problems = [line for line in (logged.read_text(errors="replace") if logged.exists() else "").splitlines()
                    if " - WARNING - " in line or " - ERROR - " in line or line.startswith(("Traceback", "  "))]
        log.warning("%s: cloud-init failed:\n%s\n%s", host.name, status, "\n".join(problems[-80:]))

    def vm_delete(self, vm_id: int) -> None:
        with self._vm_lock:
            host = self.vms.pop(int(vm_id), None)
            if host is not None:
                self.net.remove_host(host.name)
                self.journal.add("vm.delete", str(vm_id))
        with self._firewall_lock:
            # Proxmox removes a VM's firewall with the VM
            if self.firewalls.pop(int(vm_id), None) is not None:
                linux.sh(linux.netns_exec(self.net.wire, ["nft", "-f", str(self._write("nft", firewall.removal(int(vm_id))))]))

    def vm_host(self) -> SystemHost:
        """The one VM the stack has (the tests' stacks have one)."""
        [host] = self.vms.values()
        return host

    def _forget_old_neighbours(self) -> None:
        # a new VM at an old address has a new MAC: peers must not keep sending to the old one
        for host in self.net.hosts.values():
            if isinstance(host, NetnsHost):
                linux.ip("neigh", "flush", "all", netns=host.netns, check=False)

    def firewall_set(self, vm_id: int, part: str, settings: dict | None) -> None:
        with self._firewall_lock:
            held = self.firewalls.setdefault(int(vm_id), {})
            held[part] = settings
            host = self.vms.get(int(vm_id))
            if not self._bridge_filtering:
                # bridged IPv4 goes through netfilter in the wire namespace, as on a Proxmox node
                linux.set_sysctl("net/bridge/bridge-nf-call-iptables", "1", netns=self.net.wire)
                self._bridge_filtering = True
            script = (firewall.ruleset(int(vm_id), host.address, held.get("options"), (held.get("rules") or {}).get("rules", []))
                      if host is not None and any(held.values()) else firewall.removal(int(vm_id)))
            linux.sh(linux.netns_exec(self.net.wire, ["nft", "-f", str(self._write("nft", script))]))
            self.journal.add("firewall.set", f"{vm_id}/{part}")

    # --- Cloudflare -----------------------------------------------------------------------------------

    def dns_serve(self, records_folder: str) -> None:
        self.zones.serve(records_folder)
        self.journal.add("dns.serve", "")

    # --- SSH (pulumi-command) and HTTPS (the Keycloak provider) ----------------------------------------

    def ssh_run(self, connection: dict, command: str, stdin: str | None, name: str = "") -> dict:
        """Run `command` as pulumi-command does: the deploy key, only the pinned host key trusted, the dial
        retried up to dialErrorLimit times while the host is not reachable yet."""
        host, port, user = connection["host"], int(connection.get("port") or 22), connection["user"]
        with tempfile.TemporaryDirectory(dir=self.workdir) as scratch:
            key = Path(scratch) / "key"
            key.touch(mode=0o600)
            key.write_text(connection["privateKey"].rstrip("\n") + "\n")
            known_hosts = Path(scratch) / "known_hosts"
            known_hosts.write_text(f"{host if port == 22 else f'[{host}]:{port}'} {connection['hostKey'].strip()}\n")
            argv = ["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(port),
                    "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                    "-o", f"ConnectTimeout={int(connection.get('perDialTimeout') or 15)}", f"{user}@{host}", command]
            attempts = int(connection.get("dialErrorLimit") or 10)
            self.journal.add("ssh.start", name)
            self.commands_run[name] = (command, stdin or "")
            for attempt in range(1, attempts + 1):
                result = self.deployer.run(argv, timeout=SSH_TIMEOUT, input=stdin or "", stdin=None)
                if result.returncode != 255 or not DIAL_FAILURES.search(result.stderr) or attempt == attempts:
                    break
                time.sleep(3)
        self.journal.add("ssh.end", name)
        log.info("ssh %s: exit %d", name, result.returncode)
        return {"exit": result.returncode, "stdout": result.stdout, "stderr": result.stderr}

    def http(self, method: str, url: str, headers: dict, body_b64: str | None) -> dict:
        import base64

        body = base64.b64decode(body_b64) if body_b64 is not None else None
        status, answer = self.http_sender(method, url, headers, body)
        return {"status": status, "body_b64": base64.b64encode(answer).decode()}

    # --- serving ----------------------------------------------------------------------------------------

    OPERATIONS = {"vm.create": "vm_create", "vm.delete": "vm_delete", "firewall.set": "firewall_set",
                  "dns.serve": "dns_serve", "ssh.run": "ssh_run", "http": "http"}

    def dispatch(self, operation: str, arguments: dict) -> Any:
        if operation not in self.OPERATIONS:
            raise RuntimeError(f"the test internet has no operation {operation!r}")
        return getattr(self, self.OPERATIONS[operation])(**arguments)

    @contextlib.contextmanager
    def serve(self, socket_path: Path) -> Iterator[Path]:
        """Serve the operations on `socket_path` (one thread per call) until the block ends."""
        cloud = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = json.loads(self.rfile.readline())
                try:
                    reply = {"result": cloud.dispatch(request["operation"], request.get("arguments") or {})}
                except Exception as error:  # the stand-in reports it to the engine, which shows it
                    log.warning("test internet: %s failed: %s", request.get("operation"), error)
                    reply = {"error": f"{request.get('operation')}: {error}"}
                self.wfile.write(json.dumps(reply).encode() + b"\n")

        server = socketserver.ThreadingUnixStreamServer(str(socket_path), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="test-cloud", daemon=True)
        thread.start()
        try:
            yield socket_path
        finally:
            server.shutdown()
            server.server_close()
            socket_path.unlink(missing_ok=True)

    def _write(self, stem: str, text: str) -> Path:
        path = self.workdir / f"{stem}-{time.monotonic_ns()}.txt"
        path.write_text(text)
        return path
