"""A real browser in the test internet: headless Chromium driven through chromedriver by selenium, for the
webmail (Roundcube) tests.

Why a real browser: what a person sees of webmail (the login page renders, the certificate is trusted, the
mailbox opens) is only proven by a browser that runs the page's scripts and checks the certificate the way
browsers do. So:

- Chromium and chromedriver run INSIDE the network namespace of a NetnsHost (`host.popen`): the browser's
  only network is that host's, the test internet. Names resolve only through `resolve` (Chromium's
  `--host-resolver-rules`: every other name is not found), and no proxy is used.
- It trusts exactly the CA it is given (the test's ACME CA): its own HOME holds an NSS database with only
  that CA as a trusted root, as a person's browser would after importing it. Certificate errors are never
  ignored (no `--ignore-certificate-errors`, `acceptInsecureCerts` false): a certificate from another CA
  gets Chromium's interstitial ("Privacy error"), as it would for a person.
- The test process drives it with selenium's Remote WebDriver. The test process is not in the namespace, and
  the namespace's 127.0.0.1 (where chromedriver listens) is not the machine's, nor is the wire reachable from
  the machine. So the test process binds a listening socket on the machine's 127.0.0.1 and hands it to a
  relay started inside the namespace (browser_relay.py): a socket belongs to the namespace it was made in,
  so the relay accepts on the machine's loopback and connects to chromedriver on the namespace's. Nothing
  is added to the wire and selenium's whole API is available to the test.

    with open_browser(client, tmp / "browser", ca_pem, {"mail.example.com": "203.0.113.25"}) as browser:
        browser.driver.get("https://mail.example.com/")
        assert not screenshot_is_blank(browser.save_screenshot(tmp / "login.png"))
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.proxy import Proxy, ProxyType
from selenium.webdriver.remote.client_config import ClientConfig
from selenium.webdriver.remote.webdriver import WebDriver

from tests.testnet import NetnsHost, linux

CHROMIUM = "/usr/lib/chromium/chromium"  # the browser itself: Debian's /usr/bin/chromium script adds flags of its own
CHROMEDRIVER = "/usr/bin/chromedriver"
CERTUTIL = "/usr/bin/certutil"
#: each program and the Debian package that has it (tests/system-packages.txt)
PACKAGES = {CHROMIUM: "chromium", CHROMEDRIVER: "chromium-driver", CERTUTIL: "libnss3-tools"}
RELAY = Path(__file__).with_name("browser_relay.py")
WINDOW = (1280, 900)  # the window; headless Chromium 156 leaves a 1280x757 viewport (what screenshots show)
CA_NICKNAME = "test-acme"
START_TIMEOUT = 30.0  # seconds for chromedriver to say its port
SESSION_TIMEOUT = 120  # seconds for each WebDriver command, opening the session (Chromium starts) included
PAGE_LOAD_TIMEOUT = 60
BLANK_SHARE = 0.98  # a screenshot whose most common colour covers more than this share of it is blank


@dataclass(frozen=True)
class Browser:
    driver: WebDriver  #: selenium's Remote WebDriver, connected to chromedriver inside `host`
    host: NetnsHost  #: where Chromium runs
    workdir: Path  #: its HOME (home/), profile (profile/), chromedriver's log, screenshots if you like

    def save_screenshot(self, path: Path) -> bytes:
        """Save what the browser shows (PNG of the viewport) to `path`; returns the PNG."""
        png = self.driver.get_screenshot_as_png()
        Path(path).write_bytes(png)
        return png

    def log(self) -> str:
        """chromedriver's log (with Chromium's command line) and what Chromium printed."""
        return "\n".join(p.read_text(errors="replace") for p in (self.workdir / "chromedriver.log",
                                                                   self.workdir / "chromedriver.out") if p.exists())


def screenshot_is_blank(png: bytes, share: float = BLANK_SHARE) -> bool:
    """Whether a screenshot shows nothing: one colour, or one colour on more than `share` of its pixels."""
    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        pixels = rgb.width * rgb.height
        if pixels == 0:
            return True
        most = max(count for count, _ in rgb.getcolors(maxcolors=pixels))
    return most / pixels > share


def missing_packages() -> list[str]:
    """The Debian packages the browser needs that are not installed here."""
    return [package for program, package in PACKAGES.items() if not os.access(program, os.X_OK)]


def require_browser() -> None:
    """RuntimeError naming the Debian packages to install, if any is missing."""
    if missing := missing_packages():
        raise RuntimeError(f"the test browser needs Debian package(s) {' '.join(missing)} "
                           f"(tests/system-packages.txt: as root, `make system-deps` or "
                           f"`apt-get install {' '.join(missing)}`)")


def resolver_rules(resolve: dict[str, str]) -> str:
    """Chromium's --host-resolver-rules: each name to its address, every other name not found."""
    rules = []
    for name, address in resolve.items():
        if not re.fullmatch(r"[A-Za-z0-9.-]+", name):
            raise ValueError(f"{name!r}: not a host name")
        rules.append(f"MAP {name} {'[' + address + ']' if ':' in address else address}")
    return ", ".join([*rules, "MAP * ~NOTFOUND", "EXCLUDE localhost"])


def chromium_arguments(workdir: Path, resolve: dict[str, str], window: tuple[int, int] = WINDOW) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={window[0]},{window[1]}",
        f"--user-data-dir={workdir / 'profile'}",
        f"--host-resolver-rules={resolver_rules(resolve)}",
        "--no-proxy-server",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--lang=en-US",
    ]


def trust_only(home: Path, ca_pem: str) -> Path:
    """An NSS database at `home`/.pki/nssdb (where Chromium on Linux looks) whose only trusted roots are the
    certificate(s) of `ca_pem`. Returns its directory."""
    certificates = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", ca_pem, re.S)
    if not certificates:
        raise ValueError("ca_pem holds no PEM certificate")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, mode=0o700)
    _certutil("-N", "--empty-password", nssdb=nssdb)
    for number, certificate in enumerate(certificates, 1):
        path = home / f"ca-{number}.pem"
        path.write_text(certificate + "\n")
        nickname = CA_NICKNAME if number == 1 else f"{CA_NICKNAME}-{number}"
        _certutil("-A", "-t", "C,,", "-n", nickname, "-i", str(path), nssdb=nssdb)
    return nssdb


def _certutil(*args: str, nssdb: Path) -> str:
    result = subprocess.run([CERTUTIL, "-d", f"sql:{nssdb}", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"certutil {' '.join(args)} failed ({result.returncode}): {result.stderr}{result.stdout}")
    return result.stdout


@contextlib.contextmanager
def open_browser(host: NetnsHost, workdir: Path, ca_pem: str, resolve: dict[str, str],
                 window: tuple[int, int] = WINDOW) -> Iterator[Browser]:
    """Headless Chromium in `host`'s namespace trusting only `ca_pem` (PEM text), names resolved only by
    `resolve` ({name: address}); yields a Browser once a WebDriver session is open; quits it and stops
    chromedriver after. `workdir` must not exist yet or be empty."""
    require_browser()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise ValueError(f"{workdir}: not empty (each browser gets a fresh HOME and profile)")
    home = workdir / "home"
    trust_only(home, ca_pem)
    (workdir / "profile").mkdir()
    # Chromium's singleton socket goes in TMPDIR, and a Unix socket's path has at most 107 bytes: a short
    # directory of its own rather than the (deep) workdir
    short_tmp = Path(tempfile.mkdtemp(prefix="ceres-br-"))
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(short_tmp)}

    processes: list[tuple[str, subprocess.Popen]] = []
    driver = None
    try:
        with (workdir / "chromedriver.out").open("w") as out:
            chromedriver = host.popen([CHROMEDRIVER, "--port=0", f"--log-path={workdir / 'chromedriver.log'}"],
                                      stdout=out, stderr=subprocess.STDOUT, env=environment)
        processes.append(("chromedriver", chromedriver))
        port = _chromedriver_port(chromedriver, workdir / "chromedriver.out")
        # the relay inherits the listening socket; ours is closed once it has it (only the relay accepts)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener, (workdir / "relay.log").open("w") as log:
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            relay = host.popen([sys.executable, str(RELAY), str(listener.fileno()), str(port)],
                               pass_fds=(listener.fileno(),), env=environment, stdout=log, stderr=log)
        processes.append(("browser_relay", relay))
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in chromium_arguments(workdir, resolve, window):
            options.add_argument(argument)
        options.accept_insecure_certs = False
        direct = Proxy()
        direct.proxy_type = ProxyType.DIRECT  # selenium's own connection: never through a proxy from the environment
        config = ClientConfig(remote_server_addr=url, proxy=direct, timeout=SESSION_TIMEOUT)
        try:
            driver = webdriver.Remote(command_executor=url, options=options, client_config=config)
        except WebDriverException as error:
            raise RuntimeError(f"{host.name}: Chromium did not start through chromedriver: {error.msg}\n"
                               f"{_log_summary(workdir)}") from error
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        yield Browser(driver, host, workdir)
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        for name, process in reversed(processes):
            linux.stop_process(process, f"{host.name}: {name}")
        shutil.rmtree(short_tmp, ignore_errors=True)


def _chromedriver_port(process: subprocess.Popen, out: Path) -> int:
    """The port chromedriver (started with --port=0) says it listens on, inside its namespace."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        text = out.read_text(errors="replace")
        if match := re.search(r"started successfully on port (\d+)", text):
            return int(match[1])
        if process.poll() is not None:
            raise RuntimeError(f"chromedriver exited ({process.returncode}): {text}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"chromedriver does not say its port after {START_TIMEOUT:g} s: {text}")
        time.sleep(0.05)


def _log_summary(workdir: Path, lines: int = 20) -> str:
    """The last entries of chromedriver's log (not the JSON it dumps between them) and of its output."""
    parts = []
    for name in ("chromedriver.log", "chromedriver.out"):
        path = workdir / name
        text = path.read_text(errors="replace") if path.exists() else ""
        entries = [line[:500] for line in text.splitlines() if line.startswith("[") or name.endswith(".out")]
        parts.append(f"--- {path} (last {lines} entries):\n" + "\n".join(entries[-lines:]))
    return "\n".join(parts)
