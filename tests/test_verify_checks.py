"""`mailctl verify` checks against canned answers: DNS through a fake resolver (or a real BIND on
127.0.0.x), TCP through scripted servers on socket pairs that stand in for the network at
socket.create_connection (the module boundary: nothing leaves this machine); the real-daemon side is
tests/test_verify_live.py."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import threading
from collections.abc import Callable

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.builders.dns_records import Record, dkim_value, mta_sts_id, mta_sts_policy
from mailctl.verify import dns_checks, https_checks, imap_checks, smtp_checks
from mailctl.verify.model import Target
from tests.dns_fixtures import SINGLE, dkim_key_pair


class FakeResolver:
    """Answers from a dict {(name, type): [rdata text, ...] or an exception to raise}; anything else is
    NXDOMAIN."""

    def __init__(self, answers: dict[tuple[str, str], list[str] | Exception]):
        self.answers = answers

    def resolve(self, name, rdtype, lifetime=None):
        key = (str(name).rstrip("."), rdtype)
        if key not in self.answers:
            raise dns.resolver.NXDOMAIN()
        if isinstance(self.answers[key], Exception):
            raise self.answers[key]
        return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text) for text in self.answers[key]]


def target(answers, **kwargs) -> Target:
    return Target(domain="example.com", host="mail.example.com", resolver=FakeResolver(answers), **kwargs)


HOST = {("mail.example.com", "A"): ["203.0.113.25"], ("25.113.0.203.in-addr.arpa", "PTR"): ["mail.example.com."]}


def status(results, check):
    return next(r for r in results if r.check == check)


def test_declared_record_missing_or_different_is_red_with_the_record_to_publish():
    expected = [Record("example.com", "example.com", "MX", "10 mail.example.com.", 3600, "why"),
                Record("example.com", "example.com", "TXT", '"v=spf1 mx -all"', 3600, "why")]
    results = dns_checks.check_declared_records(target({("example.com", "TXT"): ['"v=spf1 +all"']}, expected=expected))
    assert status(results, "dns MX example.com").status == "fail"
    assert "publish example.com MX '10 mail.example.com.'" in status(results, "dns MX example.com").fix
    assert status(results, "dns TXT example.com").detail == "published: v=spf1 +all"


def test_declared_records_published_are_green():
    expected = [Record("example.com", "example.com", "MX", "10 mail.example.com.", 3600, "why")]
    [result] = dns_checks.check_declared_records(target({("example.com", "MX"): ["10 mail.example.com."]}, expected=expected))
    assert result.status == "ok"


@pytest.fixture(scope="module")
def keys():
    return dkim_key_pair(), dkim_key_pair()


def test_dkim_is_checked_for_every_mail_domain_of_the_stack(keys):
    """rspamd signs every domain with the stack's key: an extra domain without the record fails DKIM."""
    (_, mine), (_, other) = keys
    answers = {("ceres._domainkey.example.com", "TXT"): [f'"{dkim_value(mine)[:200]}" "{dkim_value(mine)[200:]}"'],
               ("ceres._domainkey.example.net", "TXT"): [f'"{dkim_value(other)[:200]}" "{dkim_value(other)[200:]}"']}
    results = dns_checks.check_dkim(target(answers, extra_domains=("example.org", "example.net"), dkim_txt=dkim_value(mine)))
    assert [(r.check, r.status) for r in results] == [("dkim ceres._domainkey.example.com", "ok"),
                                                        ("dkim ceres._domainkey.example.org", "fail"),
                                                        ("dkim ceres._domainkey.example.net", "fail")]
    assert "publish ceres._domainkey.example.org TXT" in results[1].fix
    assert results[2].detail == "a different key is published"
    assert results[2].fix.endswith("at ceres._domainkey.example.net")


def test_verify_of_a_stack_checks_each_mail_domain_with_the_key_from_the_stack_outputs(keys, scratch_project, monkeypatch, tmp_path):
    """`--dkim-public-key` takes the JSON of `pulumi stack output --json` too; the target carries every
    mail domain and the policy the stack serves."""
    import json

    from mailctl import cli
    from mailctl.verify import runner
    from mailctl.zone import stack_settings
    from tests.conftest import stack_config

    (_, public) = keys[0]
    config = stack_config("prod")
    config["ceres-mail:extraDomains"] = ["example.org=11111111111111111111111111111111"]
    project = scratch_project("multi", config)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"dkimPublicKeyPem": public, "mailHost": "mail.example.com"}))
    seen = []
    monkeypatch.setattr(runner, "run_checks", lambda target, progress: seen.append(target) or [])
    assert cli.main(["-C", str(project), "verify", "--stack", "multi", "--resolver", "127.0.0.1",
                     "--dkim-public-key", str(outputs), "--json"]) == 0
    [checked] = seen
    assert checked.mail_domains == ("example.com", "example.org")
    assert checked.dkim_txt == dkim_value(public)
    assert checked.mta_sts_policy == mta_sts_policy(stack_settings(project, "multi").dns_inputs)


def test_dkim_missing_different_and_right(keys):
    (_, mine), (_, other) = keys
    name = ("ceres._domainkey.example.com", "TXT")
    assert dns_checks.check_dkim(target({}))[0].status == "fail"
    published = f'"{dkim_value(other)[:200]}" "{dkim_value(other)[200:]}"'
    different = dns_checks.check_dkim(target({name: [published]}, dkim_txt=dkim_value(mine)))[0]
    assert different.status == "fail" and different.detail == "a different key is published"
    right = f'"{dkim_value(mine)[:200]}" "{dkim_value(mine)[200:]}"'
    assert dns_checks.check_dkim(target({name: [right]}, dkim_txt=dkim_value(mine)))[0].status == "ok"


def test_ptr_must_name_the_host_and_resolve_back():
    assert dns_checks.check_reverse_dns(target(HOST))[0].status == "ok"
    wrong = {**HOST, ("25.113.0.203.in-addr.arpa", "PTR"): ["host25.provider.example."]}
    result = dns_checks.check_reverse_dns(target(wrong))[0]
    assert result.status == "fail" and "set the PTR of 203.0.113.25 to mail.example.com" in result.fix


def test_a_host_without_address_still_has_a_red_ptr_row_saying_what_to_do():
    [result] = dns_checks.check_reverse_dns(target({}))
    assert (result.check, result.status) == ("ptr mail.example.com", "fail")
    assert "publish mail.example.com A" in result.fix
    assert "ask the IP provider to set the PTR of each address to mail.example.com" in result.fix


def test_the_ptr_of_the_declared_address_is_checked_while_its_a_record_is_missing():
    """The server sends from the address the stack declares; its PTR row shows even before DNS has the A."""
    declared = [Record("example.com", "mail.example.com", "A", "203.0.113.25", 3600, "why")]
    [result] = dns_checks.check_reverse_dns(target({("25.113.0.203.in-addr.arpa", "PTR"): ["mail.example.com."]},
                                                   expected=declared))
    assert (result.check, result.status) == ("ptr 203.0.113.25", "fail")
    assert result.fix == "publish mail.example.com A 203.0.113.25"


def test_a_failed_ptr_lookup_is_a_warning_with_the_provider_fix_not_a_missing_row():
    answers = {**HOST, ("25.113.0.203.in-addr.arpa", "PTR"): dns.exception.Timeout()}
    [result] = dns_checks.check_reverse_dns(target(answers))
    assert (result.check, result.status) == ("ptr 203.0.113.25", "warn")
    assert "lookup failed (Timeout)" in result.detail
    assert "ask the IP provider to set the PTR of 203.0.113.25 to mail.example.com" in result.fix


def test_a_ptr_with_a_second_name_warns():
    answers = {**HOST, ("25.113.0.203.in-addr.arpa", "PTR"): ["mail.example.com.", "host25.provider.example."]}
    [result] = dns_checks.check_reverse_dns(target(answers))
    assert result.status == "warn" and "host25.provider.example" in result.detail


def test_an_ipv6_address_both_declared_and_published_has_one_ptr_row():
    import dns.reversename

    reverse = dns.reversename.from_address("2001:db8:25::25").to_text(omit_final_dot=True)
    answers = {("mail.example.com", "AAAA"): ["2001:db8:25::25"], (reverse, "PTR"): ["mail.example.com."]}
    declared = [Record("example.com", "mail.example.com", "AAAA", "2001:0db8:0025:0000::25", 3600, "why")]
    [result] = dns_checks.check_reverse_dns(target(answers, expected=declared))
    assert (result.check, result.status) == ("ptr 2001:db8:25::25", "ok")


class FakeSMTP:
    """A server that offers STARTTLS and answers RCPT with `rcpt_code`; records nothing it is sent."""

    rcpt_code = 554

    def __init__(self, *args, **kwargs):
        self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def ehlo(self, name):
        return 250, b"mail.example.com\nSTARTTLS"

    def has_extn(self, name):
        return name == "starttls"

    def starttls(self, context):
        return 220, b"go ahead"

    def mail(self, sender):
        return 250, b"ok"

    def rcpt(self, recipient):
        return self.rcpt_code, b"5.7.1 Relay access denied" if self.rcpt_code >= 500 else b"ok"

    def rset(self):
        return 250, b"ok"


@pytest.mark.parametrize("code, expected", [(554, "ok"), (250, "fail")])
def test_relay_is_judged_by_the_answer_to_rcpt(monkeypatch, code, expected):
    monkeypatch.setattr(smtp_checks, "_NamedSMTP", type("S", (FakeSMTP,), {"rcpt_code": code}))
    monkeypatch.setattr(smtp_checks, "certificate_result",
                        lambda check, sock, host: smtp_checks.Result(check, "ok", "fake certificate"))
    results = smtp_checks.check_smtp(target(HOST))
    relay = status(results, "smtp 25 relay")
    assert relay.status == expected
    assert status(results, "smtp 25 banner").status == "ok"


def test_a_dead_resolver_is_reported_as_such_at_once_not_as_missing_records():
    """Nothing listens on the resolver's port: one red row naming the resolver, no record blamed."""
    import socket
    import time

    from mailctl.verify.runner import exit_code, run_checks

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free again once closed: nothing answers there
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], port
    started = time.monotonic()
    results = run_checks(Target(domain="example.com", host="mail.example.com", resolver=resolver, timeout=3))
    assert [(r.check, r.status) for r in results] == [("dns resolver", "fail")]
    assert "not your records" in results[0].fix and "127.0.0.1" in results[0].detail
    assert exit_code(results) == 1
    assert time.monotonic() - started < 10


def test_a_resolver_that_answers_no_such_name_works():
    assert dns_checks.check_resolver(target({}))[0].status == "ok"


# --- TCP checks: where they connect, and TLS against the host name ---------------------------------

MAIL_V4, MAIL_V6, STS_V4 = "127.0.0.2", "::1", "127.0.0.3"
ADDRESSED = {("mail.example.com", "A"): [MAIL_V4], ("mail.example.com", "AAAA"): [MAIL_V6],
             ("mta-sts.example.com", "A"): [STS_V4]}
TLS_NAMES = ("mail.example.com", "mta-sts.example.com")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA (the --ca-file) and a server context with its certificate for the mail and MTA-STS hosts."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verify test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAMES[0])]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in TLS_NAMES]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("pki")
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "leaf.key").write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "leaf.pem", directory / "leaf.key")
    return str(directory / "ca.pem"), server


class Network:
    """Stands in for the network at socket.create_connection: records where each connection goes and serves
    the (address, port)s in `servers` over a socket pair (a handler in a thread); the rest is refused.
    Asking the system resolver for a name (getaddrinfo, gethostbyname, getfqdn) fails the test."""

    def __init__(self, monkeypatch, servers: dict[tuple[str, int], Callable[[socket.socket], None]] | None = None):
        self.servers, self.attempts, self.errors, self.threads = servers or {}, [], [], []
        monkeypatch.setattr(socket, "create_connection", self.create_connection)
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            monkeypatch.setattr(socket, name, self._refuse_names(getattr(socket, name)))
        monkeypatch.setattr(socket, "getfqdn", self._system_resolver)

    @staticmethod
    def _system_resolver(*args, **kwargs):
        raise AssertionError(f"the system resolver was asked: {args}")

    def _refuse_names(self, real):
        def lookup(host, *args, **kwargs):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                self._system_resolver(host)
            return real(host, *args, **kwargs)
        return lookup

    def create_connection(self, address, timeout=None, *args, **kwargs):
        self.attempts.append(address)
        handler = self.servers.get(address)
        if handler is None:
            raise ConnectionRefusedError(111, "Connection refused")
        client, server = socket.socketpair()
        client.settimeout(timeout)
        server.settimeout(10)
        thread = threading.Thread(target=self._serve, args=(handler, server), daemon=True)
        thread.start()
        self.threads.append(thread)
        return client

    def _serve(self, handler, sock):
        try:
            handler(sock)
        except Exception as error:  # noqa: BLE001 - reported by done()
            self.errors.append(error)
        finally:
            sock.close()

    def done(self):
        for thread in self.threads:
            thread.join(10)
        assert not self.errors, self.errors


def smtp_server(tls: ssl.SSLContext, implicit: bool = False, rcpt_code: int = 554, sni: list | None = None):
    """A scripted Postfix: STARTTLS (or TLS from the start), AUTH only under TLS, RCPT answered `rcpt_code`;
    the TLS server names clients ask for go to `sni`."""
    sni = [] if sni is None else sni

    def serve(sock: socket.socket) -> None:
        def wrap(raw):
            tls.sni_callback = lambda ssl_sock, name, ctx: sni.append(name)
            return tls.wrap_socket(raw, server_side=True)

        secure = implicit
        sock = wrap(sock) if implicit else sock
        reader = sock.makefile("rb")
        sock.sendall(b"220 mail.example.com ESMTP\r\n")
        while line := reader.readline():
            command = line.decode().strip().upper()
            if command.startswith("EHLO"):
                extra = b"250 AUTH PLAIN\r\n" if secure else b"250 STARTTLS\r\n"
                sock.sendall(b"250-mail.example.com\r\n" + extra)
            elif command == "STARTTLS":
                sock.sendall(b"220 go ahead\r\n")
                sock, secure = wrap(sock), True
                reader = sock.makefile("rb")
            elif command.startswith("AUTH") and secure:
                sock.sendall(b"235 2.7.0 Authentication successful\r\n")
            elif command.startswith(("MAIL", "RSET")):
                sock.sendall(b"250 2.0.0 Ok\r\n")
            elif command.startswith("RCPT"):
                sock.sendall(f"{rcpt_code} 5.7.1 Relay access denied\r\n".encode())
            elif command == "QUIT":
                sock.sendall(b"221 Bye\r\n")
                return
            else:
                sock.sendall(b"502 5.5.2 Error: command not recognized\r\n")

    return serve


def https_server(tls: ssl.SSLContext, body: str, requests: list, sni: list):
    """A scripted nginx serving `body` as the MTA-STS policy; records each request head and the SNI."""

    def serve(sock: socket.socket) -> None:
        tls.sni_callback = lambda ssl_sock, name, ctx: sni.append(name)
        sock = tls.wrap_socket(sock, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        requests.append(head.decode())
        data = body.encode()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                     + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)

    return serve


def test_smtp_connects_to_the_resolver_address_and_checks_tls_against_the_host_name(monkeypatch, pki):
    cafile, tls = pki
    sni = []
    network = Network(monkeypatch, {(MAIL_V4, 25): smtp_server(tls, sni=sni)})
    results = smtp_checks.check_smtp(target(ADDRESSED, cafile=cafile, timeout=5))
    network.done()
    assert [(r.check, r.status) for r in results] == [("smtp 25 banner", "ok"), ("smtp 25 certificate", "ok"),
                                                      ("smtp 25 relay", "ok")], results
    assert network.attempts == [(MAIL_V4, 25)] and sni == ["mail.example.com"]


def test_every_address_the_resolver_gives_is_tried_and_each_answer_is_reported(monkeypatch, pki):
    """A first; when it refuses, AAAA: the TCP checks connect where --resolver points, in turn."""
    cafile, tls = pki
    network = Network(monkeypatch, {(MAIL_V6, 25): smtp_server(tls)})
    results = smtp_checks.check_smtp(target(ADDRESSED, cafile=cafile, timeout=5))
    network.done()
    assert status(results, "smtp 25 relay").status == "ok"
    assert network.attempts == [(MAIL_V4, 25), (MAIL_V6, 25)]

    network = Network(monkeypatch)
    checked = target(ADDRESSED, cafile=cafile, timeout=5)
    rows = (smtp_checks.check_smtp(checked) + smtp_checks.check_submission(checked) + imap_checks.check_imaps(checked)
            + https_checks.check_mta_sts(checked))
    assert network.attempts == [(MAIL_V4, 25), (MAIL_V6, 25), (MAIL_V4, 587), (MAIL_V6, 587), (MAIL_V4, 993),
                                (MAIL_V6, 993), (STS_V4, 443)]
    for check, addresses in (("smtp 25", (MAIL_V4, MAIL_V6)), ("submission 587", (MAIL_V4, MAIL_V6)),
                             ("imaps 993", (MAIL_V4, MAIL_V6)), ("https 443", (STS_V4,))):
        row = status(rows, check)
        assert row.status == "fail" and all(f"{a}: ConnectionRefusedError" in row.detail for a in addresses), row
        assert "is open" in row.fix


def test_a_name_the_resolver_does_not_know_is_not_connected_to_at_all(monkeypatch, pki):
    """No A/AAAA from --resolver: no fallback to this machine's resolver, a red row that says what to publish."""
    cafile, _ = pki
    network = Network(monkeypatch)
    checked = target({}, cafile=cafile, timeout=5)
    rows = (smtp_checks.check_smtp(checked) + smtp_checks.check_submission(checked) + imap_checks.check_imaps(checked)
            + https_checks.check_mta_sts(checked))
    assert network.attempts == []
    for check in ("smtp 25", "submission 587", "imaps 993"):
        row = status(rows, check)
        assert row.status == "fail" and row.detail == "the resolver gives no A/AAAA for mail.example.com", row
        assert row.fix.startswith("publish mail.example.com A (and AAAA)")
    assert status(rows, "https 443").fix.startswith("publish mta-sts.example.com CNAME mail.example.com.")


def test_submission_on_an_implicit_tls_port_is_the_same_check(monkeypatch, pki):
    """465 (RFC 8314) reuses the submission check: TLS from the first byte, then the login."""
    cafile, tls = pki
    sni = []
    network = Network(monkeypatch, {(MAIL_V4, 465): smtp_server(tls, implicit=True, sni=sni)})
    results = smtp_checks.check_submission_port(target(ADDRESSED, cafile=cafile, timeout=5, mailbox="no-reply@example.com",
                                                       password="secret"), 465, smtp_checks.IMPLICIT_TLS)
    network.done()
    assert [(r.check, r.status) for r in results] == [("submission 465 certificate", "ok"), ("submission 465 login", "ok")]
    assert sni == ["mail.example.com"]


STACK_INPUTS = SINGLE.__class__(**{**SINGLE.__dict__, "mta_sts_mode": "enforce", "mta_sts_max_age": 604800})
STACK_POLICY = mta_sts_policy(STACK_INPUTS)


def sts_target(cafile: str, published_id: str, **kwargs) -> Target:
    answers = {**ADDRESSED, ("_mta-sts.example.com", "TXT"): [f'"v=STSv1; id={published_id}"']}
    return target(answers, cafile=cafile, timeout=5, **kwargs)


def run_mta_sts(monkeypatch, pki, served: str, checked: Target):
    requests, sni = [], []
    network = Network(monkeypatch, {(STS_V4, 443): https_server(pki[1], served, requests, sni)})
    results = https_checks.check_mta_sts(checked)
    network.done()
    assert sni == ["mta-sts.example.com"] and requests[0].startswith("GET /.well-known/mta-sts.txt HTTP/1.1\r\n")
    assert "\r\nHost: mta-sts.example.com\r\n" in requests[0]
    return results


def test_mta_sts_policy_and_id_as_the_stack_declares_are_green(monkeypatch, pki):
    served = STACK_POLICY.replace("\n", "\r\n")  # RFC 8461 3.2 lines end in CRLF; either is read
    results = run_mta_sts(monkeypatch, pki, served, sts_target(pki[0], mta_sts_id(STACK_POLICY), mta_sts_policy=STACK_POLICY))
    assert [(r.check, r.status) for r in results] == [("https 443 certificate", "ok"), ("mta-sts policy", "ok"),
                                                      ("mta-sts id", "ok")], results


def test_mta_sts_mode_and_max_age_are_compared_with_the_stack(monkeypatch, pki):
    served = STACK_POLICY.replace("mode: enforce", "mode: testing").replace("max_age: 604800", "max_age: 86400")
    results = run_mta_sts(monkeypatch, pki, served, sts_target(pki[0], mta_sts_id(STACK_POLICY), mta_sts_policy=STACK_POLICY))
    policy = status(results, "mta-sts policy")
    assert policy.status == "fail"
    assert "mode testing, the stack declares enforce" in policy.detail
    assert "max_age 86400, the stack declares 604800" in policy.detail
    assert "pulumi stack output mtaStsPolicy" in policy.fix


def test_the_mta_sts_id_in_dns_must_be_the_one_of_the_stack_policy(monkeypatch, pki):
    """The policy changed (testing -> enforce) but the DNS id did not: senders keep the cached old policy."""
    old = mta_sts_id(mta_sts_policy(SINGLE))
    results = run_mta_sts(monkeypatch, pki, STACK_POLICY, sts_target(pki[0], old, mta_sts_policy=STACK_POLICY))
    assert status(results, "mta-sts policy").status == "ok"
    row = status(results, "mta-sts id")
    assert row.status == "fail" and row.detail == f"id {old}, the stack's policy has id {mta_sts_id(STACK_POLICY)}"
    assert row.fix.startswith(f'publish _mta-sts.example.com TXT "v=STSv1; id={mta_sts_id(STACK_POLICY)}"')


@pytest.mark.parametrize("served, good", [
    ("version: STSv1\nmode: enforce\nmx: *.example.com\nmax_age: 86400\n", True),
    ("version: STSv1\nmode: strict\nmx: mail.example.com\nmax_age: 86400\n", False),
    ("version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 86400\n", False),
])
def test_without_a_stack_the_policy_is_judged_by_rfc_8461(monkeypatch, pki, served, good):
    results = run_mta_sts(monkeypatch, pki, served, sts_target(pki[0], "20240101"))
    assert status(results, "mta-sts policy").status == ("ok" if good else "fail")
    assert status(results, "mta-sts id").status == "ok"


@pytest.mark.judge
def test_tcp_checks_follow_the_resolver_through_a_cname(monkeypatch):
    """A real BIND on 127.0.x: mta-sts.<domain> is a CNAME to the mail host, and the HTTPS check connects
    to the addresses the resolver returns for it (A and AAAA)."""
    from tests.dns_harness import authoritative_dns, resolver_for

    if shutil.which("named") is None:
        pytest.skip("bind9 is not installed (make test installs it as root)")
    zone = ("$TTL 300\n@ SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 300\n@ NS ns1.example.com.\n"
            f"ns1 A 127.0.0.1\nmail A {MAIL_V4}\nmail AAAA {MAIL_V6}\nmta-sts CNAME mail\n")
    with authoritative_dns({"example.com": zone}, "127.0.56.56") as address:
        network = Network(monkeypatch)
        results = https_checks.check_mta_sts(Target(domain="example.com", host="mail.example.com",
                                                    resolver=resolver_for(address), timeout=3))
    assert network.attempts == [(MAIL_V4, 443), (MAIL_V6, 443)]
    assert status(results, "https 443").status == "fail"
