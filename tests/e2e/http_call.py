"""One HTTPS request made from inside a test host, and the `send` callable built on it.

The tests run in the machine's own network namespace; the services they talk to (Keycloak, say) live in test
hosts on the test network. So a request is made by running this module inside a host's namespace:

    python -m tests.e2e.http_call   (PYTHONPATH = the repository root)

stdin: one JSON object
    method      "GET", "POST", ...
    url         "https://sso.example.com:8443/realms/master" (https; http without TLS also works)
    headers     {"Name": "value"}                                 (optional)
    body_b64    the request body, base64; null or absent: none      (optional)
    cafile      PEM file of the certificates trusted for this request: the ONLY trust anchors (every
                certificate in it is one, so a leaf certificate may be trusted on its own); the server's name
                is checked against its certificate. Required for https.
    timeout     seconds for connecting and for each read (optional, default 30)
    resolve     {"sso.example.com": "203.0.113.150"}: connect to that address for that name while the URL,
                the Host header, SNI and the certificate check keep the name (like curl --resolve)  (optional)

stdout: one JSON line
    {"status": 200, "body_b64": "...", "headers": {"Name": "value"}}    any HTTP answer, 4xx/5xx included
    {"status": 0, "body_b64": "", "error": "..."}                       no HTTP answer (refused, TLS, timeout)

Exit status 2 only when the request itself is malformed. Standard library only: it runs with whatever Python
starts it, and the machine's own CA store is never consulted.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path

# send(method, url, headers, body) -> (status, body); status 0 means no HTTP answer, the body then says why.
Send = Callable[[str, str, dict[str, str], bytes | None], tuple[int, bytes]]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 30.0


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `address` while the name used for SNI, the certificate check and Host stays `host`."""

    def __init__(self, host: str, port: int | None, *, address: str, tls: ssl.SSLContext, timeout: float):
        super().__init__(host, port, context=tls, timeout=timeout)
        self._address = address
        self._tls = tls

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def tls_context(cafile: str) -> ssl.SSLContext:
    """Client TLS trusting only the certificates in `cafile` (each one an anchor), host names checked."""
    context = ssl.create_default_context(cafile=cafile)  # with a cafile, the default store is not loaded
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def call(request: dict) -> dict:
    """Make the request described by `request` (see the module docstring); the answer as printed."""
    method = request["method"]
    url = urllib.parse.urlsplit(request["url"])
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValueError(f"not an http(s) URL: {request['url']!r}")
    headers = dict(request.get("headers") or {})
    body = base64.b64decode(request["body_b64"]) if request.get("body_b64") is not None else None
    timeout = float(request.get("timeout") or DEFAULT_TIMEOUT)
    address = (request.get("resolve") or {}).get(url.hostname, url.hostname)
    target = url.path or "/"
    if url.query:
        target += "?" + url.query
    try:
        if url.scheme == "https":
            if not request.get("cafile"):
                raise ValueError("https needs a cafile (nothing else is trusted)")
            connection: http.client.HTTPConnection = _PinnedHTTPSConnection(
                url.hostname, url.port, address=address, tls=tls_context(request["cafile"]), timeout=timeout)
        else:
            connection = _PinnedHTTPConnection(url.hostname, url.port, address=address, timeout=timeout)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            answer_headers: dict[str, str] = {}
            for name, value in response.getheaders():
                answer_headers[name] = f"{answer_headers[name]}, {value}" if name in answer_headers else value
            return {"status": response.status, "body_b64": base64.b64encode(data).decode(),
                    "headers": answer_headers}
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as error:  # OSError covers refused, timeouts and TLS failures
        return {"status": 0, "body_b64": "", "error": f"{type(error).__name__}: {error}"}


def main() -> int:
    try:
        request = json.loads(sys.stdin.read())
        answer = call(request)
    except (ValueError, KeyError, TypeError) as error:
        print(f"http_call: bad request: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(answer), flush=True)
    return 0


def netns_sender(host, cafile: str, *, resolve: dict[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> Send:
    """A `send` that makes each request from inside test host `host` (a NetnsHost), trusting only `cafile`.

    resolve: {name: address} for names the host cannot resolve itself (see the module docstring).
    Any HTTP status is returned as it is; status 0 (body: the error) when there was no HTTP answer at all.
    Raises RuntimeError only when the helper process itself fails.
    """
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8",
                   "PYTHONDONTWRITEBYTECODE": "1"}

    def send(method: str, url: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes]:
        request = {"method": method, "url": url, "headers": headers, "cafile": str(cafile), "timeout": timeout,
                   "body_b64": base64.b64encode(body).decode() if body is not None else None}
        if resolve:
            request["resolve"] = resolve
        try:
            # stdin=None: NetnsHost.run defaults stdin to /dev/null, which `input` cannot be combined with
            result = host.run([sys.executable, "-m", "tests.e2e.http_call"], input=json.dumps(request),
                              stdin=None, env=environment, cwd=str(REPO), timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{method} {url} from {host.name}: the request helper hung") from None
        try:
            answer = json.loads(result.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise RuntimeError(f"{method} {url} from {host.name}: the request helper failed "
                               f"({result.returncode}): {result.stderr.strip()[-2000:]}") from None
        if answer["status"] == 0:
            return 0, answer.get("error", "no answer").encode()
        return answer["status"], base64.b64decode(answer["body_b64"])

    return send


if __name__ == "__main__":
    sys.exit(main())
