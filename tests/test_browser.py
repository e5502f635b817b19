"""The real-browser harness (tests/mailnet/browser.py): headless Chromium inside a namespace of the test internet,
driven by selenium from the test process, trusting only the CA it is given. Fast (no Debian host is booted: two
network namespaces on a wire, seconds), needs root. If these fail, fix the harness before reading the webmail
tests built on it.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mailnet import browser as browser_module
from tests.mailnet.browser import Browser, missing_packages, open_browser, require_browser, screenshot_is_blank
from tests.mailnet.directory import certificate, pem, write_tls
from tests.testnet import NetnsHost, TestNet

pytestmark = pytest.mark.root  # tests/plugins/layers.py: the machine layer

WIRE = "198.51.100"  # TEST-NET-2: the test's own addresses inside its namespaces
CLIENT, WEB = f"{WIRE}.40", f"{WIRE}.41"
NAME = "mail.example.com"
TRUSTED_PORT, OTHER_CA_PORT = 443, 8443
HEADING = "Hello from mail.example.com"

PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Ceres browser test</title>
<style>
body {{ margin: 0; font-family: sans-serif; background: #f4f1ea; }}
header {{ background: #1d4e89; color: #fff; padding: 60px 40px; }}
h1 {{ margin: 0; font-size: 48px; }}
p {{ padding: 20px 40px; font-size: 24px; color: #333; }}
</style></head>
<body><header><h1 id="greeting">{HEADING}</h1></header>
<p id="text">Served over HTTPS inside the test internet.</p>
<p id="script">scripts do not run</p>
<script>document.getElementById("script").textContent = "scripts run";</script>
</body></html>
"""

# An HTTPS server of the standard library: python server.py ADDRESS PORT CERT KEY ROOT
SERVER = r"""
import functools, http.server, ssl, sys
address, port, cert, key, root = sys.argv[1:6]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer((address, int(port)), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


@dataclass
class Setup:
    browser: Browser
    web: NetnsHost
    tmp: Path
    ca_pem: str

    def server_log(self, port: int) -> str:
        return (self.tmp / f"server-{port}.log").read_text(errors="replace")


def _serve(web: NetnsHost, tmp: Path, port: int, ca) -> None:
    """An HTTPS server for NAME on `port` of `web`, its certificate issued by `ca`; returns once it listens."""
    work = tmp / f"web-{port}"
    (work / "root").mkdir(parents=True)
    (work / "root" / "index.html").write_text(PAGE)
    cert, key = write_tls(work, certificate(NAME, ca), ca[0])
    (tmp / "server.py").write_text(SERVER)
    with (tmp / f"server-{port}.log").open("w") as log:
        web.popen([sys.executable, str(tmp / "server.py"), WEB, str(port), str(cert), str(key), str(work / "root")],
                  stdout=subprocess.DEVNULL, stderr=log)
    probe = ["python3", "-c", f"import socket; socket.create_connection(({WEB!r}, {port}), 1)"]
    deadline = time.monotonic() + 20
    while web.run(probe).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test web server does not listen on {port}: {(tmp / f'server-{port}.log').read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    if os.geteuid() != 0:
        pytest.skip("the test internet needs root (network namespaces)")
    if missing := missing_packages():
        pytest.skip(f"missing Debian packages {missing} (make test installs them as root: tests/system-packages.txt)")
    tmp = tmp_path_factory.mktemp("browser")
    ca = certificate("The test's ACME CA (ceres-mail tests)", None)
    other_ca = certificate("Someone else's CA (ceres-mail tests)", None)
    with TestNet() as net:
        web = net.add_netns_host("web", f"{WEB}/24")
        client = net.add_netns_host("client", f"{CLIENT}/24")
        _serve(web, tmp, TRUSTED_PORT, ca)
        _serve(web, tmp, OTHER_CA_PORT, other_ca)
        started = time.monotonic()
        with open_browser(client, tmp / "browser", pem(ca[0]), {NAME: WEB}) as browser:
            print(f"browser session open in {time.monotonic() - started:.1f} s")
            yield Setup(browser, web, tmp, pem(ca[0]))


def test_the_page_loads_and_renders(setup):
    """The browser loads an HTTPS page across the test internet, runs its scripts and screenshots it (not blank)."""
    driver = setup.browser.driver
    started = time.monotonic()
    driver.get(f"https://{NAME}/")
    print(f"page loaded in {time.monotonic() - started:.2f} s")
    error_codes = re.findall(r"\bERR_[A-Z_]+", driver.page_source)  # what Chromium's error page says, if it shows one
    assert driver.title == "Ceres browser test", error_codes
    assert driver.find_element("id", "greeting").text == HEADING
    assert driver.find_element("id", "text").text == "Served over HTTPS inside the test internet."
    assert driver.find_element("id", "script").text == "scripts run"
    png = setup.browser.save_screenshot(setup.tmp / "page.png")
    assert (setup.tmp / "page.png").read_bytes() == png and png.startswith(b"\x89PNG")
    assert not screenshot_is_blank(png)
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        assert image.width == browser_module.WINDOW[0], image.size
    # the request came over the wire from the client's namespace, not from this machine
    assert f"{CLIENT} - - " in setup.server_log(TRUSTED_PORT)


def test_a_certificate_from_another_ca_is_refused(setup):
    """A site whose certificate comes from another CA gets Chromium's privacy error, and its page is never fetched."""
    driver = setup.browser.driver
    driver.get(f"https://{NAME}:{OTHER_CA_PORT}/")
    assert driver.find_elements("id", "greeting") == []
    assert "Privacy error" in driver.title
    assert "ERR_CERT_AUTHORITY_INVALID" in driver.page_source
    assert not screenshot_is_blank(setup.browser.save_screenshot(setup.tmp / "interstitial.png"))
    assert "GET /" not in setup.server_log(OTHER_CA_PORT)  # the page was never requested


def test_names_resolve_only_as_given(setup):
    """The browser resolves only the names it was given; any other name fails with ERR_NAME_NOT_RESOLVED."""
    from selenium.common.exceptions import WebDriverException

    with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):  # chromedriver reports network errors
        setup.browser.driver.get("https://www.example.org/")


def test_launch_trusts_only_the_given_ca_and_ignores_no_certificate_error(setup):
    """Chromium runs headless, resolves only the given names, trusts the given CA alone, ignores no certificate error."""
    log = setup.browser.log()
    assert "--host-resolver-rules=" in log and f"MAP {NAME} {WEB}" in log and "MAP * ~NOTFOUND" in log
    assert "ignore-certificate-errors" not in log
    assert browser_module.CHROMIUM in log and "--headless=new" in log
    nssdb = setup.browser.workdir / "home" / ".pki" / "nssdb"
    listing = subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-L"], capture_output=True, text=True, check=True)
    rows = [line for line in listing.stdout.splitlines()[4:] if line.strip()]
    assert len(rows) == 1 and rows[0].split()[0] == "test-acme" and rows[0].split()[-1] == "C,,", listing.stdout


def test_blank_screenshots_are_recognised():
    """A white screenshot, or one under 1 % drawn, counts as blank; a page with a banner does not."""
    from PIL import Image, ImageDraw

    def png(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    white = Image.new("RGB", (1280, 900), "white")
    assert screenshot_is_blank(png(white))
    speck = white.copy()
    ImageDraw.Draw(speck).rectangle((0, 0, 99, 99), fill="black")  # under 1 % of the pixels
    assert screenshot_is_blank(png(speck))
    banner = white.copy()
    ImageDraw.Draw(banner).rectangle((0, 0, 1279, 199), fill="#1d4e89")
    assert not screenshot_is_blank(png(banner))


def test_a_missing_program_names_its_debian_package(monkeypatch, tmp_path):
    """A missing browser program is reported by its Debian package, pointing at tests/system-packages.txt."""
    monkeypatch.setattr(browser_module, "PACKAGES", {str(tmp_path / "chromedriver"): "chromium-driver",
                                                     "/bin/sh": "dash"})
    with pytest.raises(RuntimeError, match=r"Debian package\(s\) chromium-driver \(tests/system-packages.txt"):
        require_browser()
