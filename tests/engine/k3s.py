"""A real Kubernetes API for the engine tests: k3s (built by `make engine`) as an API server only.

CERES runs on k3s, so the real pulumi-kubernetes provider is pointed at k3s itself: kine on SQLite, no
agent, kubelet or containerd, so pods never run, which these tests do not need (they check the Secret and
the Deployment's pod template). It listens on 127.0.0.1 only: on a free port and the one after it, and its
controller manager on another free port (k3s's default, 10257, is fixed: two servers, say the engine's and
the end-to-end layer's on two pytest workers, would collide there).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

READY_TIMEOUT_S = 180
# What k3s adds on top of the API server is off, but for the controller manager: its garbage collector
# finishes deletions (the kubernetes provider deletes in the foreground, which waits for it).
SERVER_FLAGS = (
    "--disable-agent", "--disable=traefik,servicelb,metrics-server,local-storage,coredns",
    "--disable-network-policy", "--disable-helm-controller", "--disable-cloud-controller",
    "--disable-kube-proxy", "--disable-scheduler",
)
# Even with --disable-agent, k3s's supervisor fetches the agent's configuration, which looks up the CNI
# plugin `host-local` on PATH to name the plugins' folder; the k3s built from Go modules ships no CNI
# plugins, so the fetch failed and was retried every few seconds, each try hashing the server token with
# scrypt: a sixth of a core for as long as the server ran. A stand-in that only exists (and refuses to run:
# no pod ever runs here) ends the retries; the idle server then takes about 3% of a core.
NO_CNI_PLUGIN = """#!/bin/sh
echo "host-local: not a CNI plugin (tests/engine/k3s.py: this k3s runs no agent and no pod)" >&2
exit 1
"""


def _free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _free_port_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (k3s serves on both)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 65535:
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


@dataclass
class K3s:
    """A running k3s API server and the admin kubeconfig it wrote."""

    binary: Path
    run_dir: Path
    process: subprocess.Popen | None = None
    _api: tuple[ssl.SSLContext, str] | None = field(default=None, repr=False)  #: see _api_client

    @property
    def kubeconfig_path(self) -> Path:
        return self.run_dir / "kubeconfig.yaml"

    @property
    def kubeconfig(self) -> str:
        return self.kubeconfig_path.read_text()

    def start(self) -> "K3s":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        port = _free_port_pair()
        controller_manager_port = _free_port()
        log = (self.run_dir / "k3s.log").open("w")
        plugins = self.run_dir / "cni-bin"
        plugins.mkdir(exist_ok=True)
        (plugins / "host-local").write_text(NO_CNI_PLUGIN)
        (plugins / "host-local").chmod(0o755)
        self.process = subprocess.Popen(
            [str(self.binary), "server", *SERVER_FLAGS,
             "--data-dir", str(self.run_dir / "data"), "--bind-address", "127.0.0.1",
             "--advertise-address", "127.0.0.1", "--https-listen-port", str(port), "--tls-san", "127.0.0.1",
             "--token", "ceres-mail-tests", "--write-kubeconfig", str(self.kubeconfig_path),
             f"--kube-controller-manager-arg=secure-port={controller_manager_port}",
             "--write-kubeconfig-mode", "600"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PATH": f"{plugins}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"k3s exited ({self.process.returncode}); see {self.run_dir / 'k3s.log'}")
            if self.kubeconfig_path.is_file() and self._ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"k3s was not ready within {READY_TIMEOUT_S} s; see {self.run_dir / 'k3s.log'}")

    def _ready(self) -> bool:
        # /readyz can say ok before the API groups are served: wait for the ones the tests use too
        return self._readyz() and self.kubectl("get", "deployments,secrets,namespaces", "-A", check=False).returncode == 0

    def _readyz(self) -> bool:
        """GET /readyz as the admin of the kubeconfig, from Python. (kubectl is the k3s binary, 0.2 s of CPU
        a call: polling with it twice a second cost more CPU than the start it waited for.)"""
        try:
            context, server = self._api_client()
            with urllib.request.urlopen(f"{server}/readyz", context=context, timeout=5) as answer:
                return answer.status == 200 and answer.read().strip() == b"ok"
        except (OSError, ValueError, KeyError, IndexError, TypeError, yaml.YAMLError):
            return False  # not written yet, not listening yet, or not ready (503)

    def _api_client(self) -> tuple[ssl.SSLContext, str]:
        """A TLS context with the kubeconfig's admin certificate, and the server's URL: made once, when k3s
        has written a complete kubeconfig (until then this raises, and the next poll tries again)."""
        if self._api is None:
            config = yaml.safe_load(self.kubeconfig_path.read_text())
            cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
            tls = self.run_dir / "api-client"
            tls.mkdir(mode=0o700, exist_ok=True)
            for name, value in (("ca.pem", cluster["certificate-authority-data"]),
                                ("cert.pem", user["client-certificate-data"]), ("key.pem", user["client-key-data"])):
                (tls / name).write_bytes(base64.b64decode(value))
            context = ssl.create_default_context(cafile=str(tls / "ca.pem"))
            context.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
            self._api = (context, cluster["server"])
        return self._api

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        """k3s's embedded kubectl (argv[0] `kubectl`), against this server."""
        result = subprocess.run(
            [str(self.binary.parent / "kubectl"), "--kubeconfig", str(self.kubeconfig_path), *args],
            capture_output=True, text=True, input=stdin,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def get(self, kind: str, name: str, namespace: str) -> dict | None:
        result = self.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def apply(self, manifest: dict) -> None:
        self.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of its group is left
        except ProcessLookupError:
            pass
        self.process.wait()
