"""HTTPS 443 on the MTA-STS host: the certificate, and the policy (its mode and mx list)."""

from __future__ import annotations

import socket
import ssl

from mailctl.verify.model import FAIL, OK, Result, Target
from mailctl.verify.tls_util import certificate_result, context, tls_failure


def check_mta_sts(target: Target) -> list[Result]:
    host = f"mta-sts.{target.domain}"
    try:
        with socket.create_connection((target.connect_address(host), 443), timeout=target.timeout) as raw:
            with context(target.cafile).wrap_socket(raw, server_hostname=host) as sock:
                results = [certificate_result("https 443 certificate", sock, host)]
                sock.sendall(f"GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                response = b""
                while chunk := sock.recv(65536):
                    response += chunk
    except (ssl.SSLError, ssl.CertificateError) as error:
        return [tls_failure("https 443 certificate", error, host)]
    except OSError as error:
        return [Result("https 443", FAIL, f"{type(error).__name__}: {error}", "check that port 443 is open and nginx runs")]
    head, _, body = response.partition(b"\r\n\r\n")
    policy = dict(line.split(":", 1) for line in body.decode(errors="replace").splitlines() if ":" in line)
    policy = {k.strip(): v.strip() for k, v in policy.items()}
    good = b" 200 " in head.split(b"\r\n", 1)[0] + b" " and policy.get("version") == "STSv1" and policy.get("mx") == target.host
    detail = f"mode {policy.get('mode', '?')}, mx {policy.get('mx', '?')}"
    return results + [Result("mta-sts policy", OK if good else FAIL, detail,
                             "" if good else f"serve the stack's policy (pulumi stack output mtaStsPolicy) at https://{host}/.well-known/mta-sts.txt")]
