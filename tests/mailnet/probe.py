"""Client-side probes of the mail host, run inside a test network namespace, printing one JSON object.

    python probe.py <probe> --host IP [--name mail.example.com] [--port N] [options]

Each probe is what a real peer does (a mail client, a sending MTA, an attacker trying a relay) with the
standard library's smtplib/imaplib/ssl; the tests read the JSON. Passwords come from a file
(`--password-file`), never from the command line. Exit status 0 means "the probe ran", whatever it found.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import imaplib
import json
import smtplib
import socket
import ssl
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage


def context(cafile: str | None, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    if not cafile:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe(sock: ssl.SSLSocket) -> dict:
    der = sock.getpeercert(binary_form=True)
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    from cryptography.hazmat.primitives import serialization

    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"tls_version": sock.version(), "san": sorted(names), "issuer": cert.issuer.rfc4514_string(),
            "spki_sha256": hashlib.sha256(spki).hexdigest()}


class NamedSMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to an address but checks the certificate against a host name."""

    def __init__(self, address: str, port: int, name: str):
        super().__init__(address, port, timeout=20)
        self._host = name


class NamedIMAP(imaplib.IMAP4_SSL):
    """IMAP4_SSL that connects to an address but checks the certificate against a host name."""

    def __init__(self, address: str, port: int, name: str, ssl_context: ssl.SSLContext):
        self._name = name
        super().__init__(address, port, ssl_context=ssl_context, timeout=20)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self._name)


def message(sender: str, recipient: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@{sender.rsplit('@', 1)[-1]}>"
    msg.set_content(f"{subject}\n\nSent by the ceres-mail tests.\n")
    return msg


class NamedSMTPS(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL (implicit TLS, port 465) that connects to an address, checking a host name."""

    def __init__(self, address: str, port: int, name: str, ssl_context: ssl.SSLContext):
        self._name = name
        super().__init__(address, port, timeout=20, context=ssl_context)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self._name)


def probe_submit(args) -> dict:
    """A mail client (CERES): STARTTLS (587) or implicit TLS (465, --tls-mode implicit), AUTH, send."""
    password = open(args.password_file).read()
    if args.tls_mode == "implicit":
        connection = NamedSMTPS(args.host, args.port, args.name, context(args.cafile, args.name))
    else:
        connection = NamedSMTP(args.host, args.port, args.name)
    with connection as smtp:
        smtp.ehlo("client.example.net")
        if args.tls_mode != "implicit":
            smtp.starttls(context=context(args.cafile, args.name))
            smtp.ehlo("client.example.net")
        tls = describe(smtp.sock)
        if args.mechanism:  # one AUTH exchange (login() tries each mechanism the server offers in turn)
            smtp.user, smtp.password = args.user, password
            smtp.auth(args.mechanism, getattr(smtp, f"auth_{args.mechanism.lower()}"))
        else:
            smtp.login(args.user, password)
        refused = smtp.send_message(message(args.sender, args.to, args.subject))
    return {"sent": not refused, "refused": {k: list(v) for k, v in refused.items()}, **tls}


def probe_greeting(args) -> dict:
    """The server's first line on --port, nothing sent: whether the whole path to the daemon answers yet."""
    smtp = smtplib.SMTP(timeout=10)
    code, text = smtp.connect(args.host, args.port)
    smtp.close()
    return {"code": code, "greeting": text.decode(errors="replace")}


def probe_send(args) -> dict:
    """A sending MTA on port 25, no AUTH (STARTTLS when offered). Reports the server's answer."""
    try:
        with NamedSMTP(args.host, args.port, args.name) as smtp:
            smtp.ehlo(args.helo)
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context(None, None))
                smtp.ehlo(args.helo)
            refused = smtp.send_message(message(args.sender, args.to, args.subject))
            return {"accepted": not refused, "refused": {k: list(v) for k, v in refused.items()}}
    except smtplib.SMTPRecipientsRefused as error:
        return {"accepted": False, "refused": {k: [v[0], v[1].decode()] for k, v in error.recipients.items()}}
    except smtplib.SMTPResponseException as error:
        return {"accepted": False, "code": error.smtp_code, "error": error.smtp_error.decode(errors="replace")}


def probe_auth_plain(args) -> dict:
    """AUTH on submission before STARTTLS: must not even be offered, and must be refused."""
    with NamedSMTP(args.host, args.port, args.name) as smtp:
        smtp.ehlo("client.example.net")
        offered = smtp.has_extn("auth")
        code, reply = smtp.docmd("AUTH", "PLAIN AGZvbwBiYXI=")
    return {"auth_offered": offered, "code": code, "reply": reply.decode(errors="replace")}


@contextlib.contextmanager
def tls_session(args, ctx: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    """A TLS session with --host:--port as `ctx` allows: after STARTTLS for SMTP (--starttls smtp), else
    implicit TLS from the first byte."""
    if args.starttls == "smtp":
        with NamedSMTP(args.host, args.port, args.name) as smtp:
            smtp.ehlo("client.example.net")
            smtp.starttls(context=ctx)
            yield smtp.sock
        return
    with socket.create_connection((args.host, args.port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=args.name) as sock:
            yield sock


#: what a refused handshake raises, by the side that refuses and the protocol in front of it
HANDSHAKE_REFUSED = (ssl.SSLError, smtplib.SMTPException, ConnectionError, OSError)


def probe_tls_version(args) -> dict:
    """Handshake with exactly one TLS version (old ones allowed on our side: the server must refuse)."""
    version = getattr(ssl.TLSVersion, args.version)
    ctx = context(None, None)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = version
    try:
        with tls_session(args, ctx) as sock:
            return {"handshake": True, "tls_version": sock.version()}
    except HANDSHAKE_REFUSED as error:
        return {"handshake": False, "error": f"{type(error).__name__}: {error}"}


def tls12_suites() -> list[str]:
    """Every suite this OpenSSL can offer in TLS 1.2, weak ones included (the server must refuse those): all
    but TLS 1.3's, whatever version introduced them (OpenSSL lists CBC-SHA suites as TLSv1.0 or SSLv3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return sorted({c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"})


def probe_suites(args) -> dict:
    """The TLS 1.2 suites the port accepts, one handshake per suite OpenSSL knows (sslscan's method, for one
    port in a few seconds), STARTTLS first for SMTP. Reports the accepted suites and the certificate's key."""
    suites, accepted, key = tls12_suites(), [], ""
    for suite in suites:
        ctx = context(None, None)
        ctx.set_ciphers(f"{suite}:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            with tls_session(args, ctx) as sock:
                accepted.append(sock.cipher()[0])
                key = key or _key_type(sock)
        except HANDSHAKE_REFUSED:
            pass
    return {"accepted": sorted(set(accepted)), "tried": len(suites), "key": key}


def _key_type(sock: ssl.SSLSocket) -> str:
    from cryptography import x509

    return type(x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).public_key()).__name__


def probe_certificate(args) -> dict:
    """The certificate a port presents (STARTTLS for SMTP), checked against --cafile and --name."""
    with tls_session(args, context(args.cafile, args.name)) as sock:
        return describe(sock)


def probe_imap(args) -> dict:
    """A mail client reading the mailbox over IMAPS 993; waits up to --wait seconds for --subject."""
    password = open(args.password_file).read()
    deadline = time.monotonic() + args.wait
    with NamedIMAP(args.host, args.port, args.name, context(args.cafile, args.name)) as imap:
        imap.login(args.user, password)
        while True:
            imap.select("INBOX", readonly=True)
            status, data = imap.search(None, "SUBJECT", f'"{args.subject}"')
            ids = data[0].split()
            if ids or time.monotonic() > deadline:
                break
            time.sleep(1)
        body = ""
        if ids:
            _, fetched = imap.fetch(ids[-1], "(RFC822)")
            body = fetched[0][1].decode(errors="replace")
    return {"found": bool(ids), "message": body}


def probe_mailbox(args) -> dict:
    """A mail client over IMAPS 993 listing every folder's messages with their flags, after (with --flags)
    setting those flags on the INBOX messages whose subject holds --subject."""
    password = open(args.password_file).read()
    with NamedIMAP(args.host, args.port, args.name, context(args.cafile, args.name)) as imap:
        imap.login(args.user, password)
        if args.flags:
            imap.select("INBOX")
            _, data = imap.search(None, "SUBJECT", f'"{args.subject}"')
            for number in data[0].split():
                imap.store(number, "+FLAGS", f"({args.flags})")
        messages = []
        _, folders = imap.list()
        for line in folders:
            name = line.decode().rsplit(' "." ', 1)[-1].rsplit(' "/" ', 1)[-1].strip('"')
            imap.select(f'"{name}"', readonly=True)
            _, data = imap.search(None, "ALL")
            for number in data[0].split():
                _, fetched = imap.fetch(number, "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                flags = " ".join(sorted(f.decode() for f in imaplib.ParseFlags(fetched[0][0]) if f != b"\\Recent"))
                subject = fetched[0][1].decode(errors="replace").split(":", 1)[-1].strip()
                messages.append({"folder": name, "subject": subject, "flags": flags})
    return {"messages": sorted(messages, key=lambda m: (m["folder"], m["subject"]))}


def probe_imap_plaintext(args) -> dict:
    """IMAP without TLS on 143: the port must be closed (or LOGIN refused)."""
    try:
        with imaplib.IMAP4(args.host, args.port, timeout=10) as imap:
            try:
                imap.login(args.user, "not-the-password")
                return {"connected": True, "login": "accepted"}
            except imaplib.IMAP4.error as error:
                return {"connected": True, "login": f"refused: {error}"}
    except OSError as error:
        return {"connected": False, "error": f"{type(error).__name__}: {error}"}


def probe_https(args) -> dict:
    """GET https://<name><path> from --host, verifying the certificate against --cafile."""
    ctx = context(args.cafile, args.name)
    with socket.create_connection((args.host, 443), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=args.name) as sock:
            info = describe(sock)
            extra = "Accept-Encoding: gzip, deflate, br\r\n" if args.accept_encoding else ""
            sock.sendall(f"GET {args.path} HTTP/1.0\r\nHost: {args.name}\r\n{extra}\r\n".encode())
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode(errors="replace").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return {"status": int(status_line.split()[1]), "headers": headers, "body": body.decode(errors="replace"), **info}


def probe_fetch(args) -> dict:
    """GET an https URL (e.g. pebble's root) trusting --cafile."""
    import urllib.request

    with urllib.request.urlopen(args.path, context=context(args.cafile, None), timeout=20) as response:
        return {"status": response.status, "body": response.read().decode()}


def probe_dns(args) -> dict:
    """Ask the DNS server at --host for --name/--subject(type); used to wait for a server to be up."""
    import dns.message
    import dns.query

    query = dns.message.make_query(args.name, args.subject)
    answer = dns.query.udp(query, args.host, timeout=2)
    return {"rcode": answer.rcode(), "answer": [rrset.to_text() for rrset in answer.answer]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("probe")
    parser.add_argument("--host", required=True)
    parser.add_argument("--name", default="mail.example.com")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--cafile")
    parser.add_argument("--user", default="")
    parser.add_argument("--password-file")
    parser.add_argument("--sender", default="")
    parser.add_argument("--to", default="")
    parser.add_argument("--subject", default="ceres-mail test")
    parser.add_argument("--helo", default="mx.example.net")
    parser.add_argument("--version", default="TLSv1_2")
    parser.add_argument("--starttls", default="none")
    parser.add_argument("--path", default="/.well-known/mta-sts.txt")
    parser.add_argument("--wait", type=float, default=30)
    parser.add_argument("--tls-mode", default="starttls", choices=("starttls", "implicit"))
    parser.add_argument("--mechanism", choices=("PLAIN", "LOGIN"), help="submit: AUTH with this mechanism only")
    parser.add_argument("--flags", default="", help="mailbox: IMAP flags to set, e.g. '\\Seen \\Flagged'")
    parser.add_argument("--accept-encoding", action="store_true", help="ask for a compressed response (BREACH check)")
    args = parser.parse_args()
    probes = {
        "submit": probe_submit,
        "send": probe_send,
        "greeting": probe_greeting,
        "auth-plain": probe_auth_plain,
        "tls-version": probe_tls_version,
        "certificate": probe_certificate,
        "suites": probe_suites,
        "imap": probe_imap,
        "imap-plaintext": probe_imap_plaintext,
        "mailbox": probe_mailbox,
        "https": probe_https,
        "fetch": probe_fetch,
        "dns": probe_dns,
    }
    try:
        result = probes[args.probe](args)
    except Exception as error:  # noqa: BLE001 - the probe reports every failure as data for the test
        result = {"exception": f"{type(error).__name__}: {error}"}
    json.dump(result, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
