"""`mailctl verify` checks against canned answers: DNS through a fake resolver (or a real BIND on
127.0.0.x), TCP through scripted servers on socket pairs that stand in for the network at
socket.create_connection (the module boundary: nothing leaves this machine); the real-daemon side is
tests/test_mail_host.py (its step 3)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.builders.dns_records import Record, dkim_value, mta_sts_id, mta_sts_policy, spki_sha256
from mailctl.verify import dane_checks, dns_checks, dnssec_checks, https_checks, imap_checks, smtp_checks
from mailctl.verify.model import Target
from tests.conftest import self_signed
from tests.dns_fixtures import SINGLE, dkim_key_pair


class FakeResolver:
    """Answers from a dict {(name, type): [rdata text, ...] or an exception to raise}; anything else is
    NXDOMAIN. The answers for the (name, type)s in `validated` carry the AD bit, as a validating resolver's."""

    def __init__(self, answers: dict[tuple[str, str], list[str] | Exception], validated: frozenset = frozenset()):
        self.answers, self.validated = answers, validated

    def resolve(self, name, rdtype, lifetime=None):
        key = (str(name).rstrip("."), rdtype)
        if key not in self.answers:
            raise dns.resolver.NXDOMAIN()
        if isinstance(self.answers[key], Exception):
            raise self.answers[key]
        answer = FakeAnswer(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
                            for text in self.answers[key])
        answer.response = dns.message.make_response(dns.message.make_query(key[0], rdtype))
        if key in self.validated:
            answer.response.flags |= dns.flags.AD
        return answer


class FakeAnswer(list):
    """The records of an answer, with the response they came in (its flags say whether it was validated)."""

    response: dns.message.Message


def target(answers, **kwargs) -> Target:
    return Target(domain="example.com", host="mail.example.com", resolver=FakeResolver(answers), **kwargs)


HOST = {("mail.example.com", "A"): ["203.0.113.25"], ("25.113.0.203.in-addr.arpa", "PTR"): ["mail.example.com."]}


def status(results, check):
    return next(r for r in results if r.check == check)


def test_declared_record_missing_or_different_is_red_with_the_record_to_publish():
    """A declared record missing or published otherwise is red, showing what is published and the record to publish."""
    expected = [Record("example.com", "example.com", "MX", "10 mail.example.com.", 3600, "why"),
                Record("example.com", "example.com", "TXT", '"v=spf1 mx -all"', 3600, "why")]
    results = dns_checks.check_declared_records(target({("example.com", "TXT"): ['"v=spf1 +all"']}, expected=expected))
    assert status(results, "dns MX example.com").status == "fail"
    assert "publish example.com MX '10 mail.example.com.'" in status(results, "dns MX example.com").fix
    assert status(results, "dns TXT example.com").detail == "published: v=spf1 +all"


def test_declared_records_published_are_green():
    """A declared record published as declared is green."""
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
    assert [(r.check, r.status) for r in results] == [("dkim ceres._domainkey.example.com (signs)", "ok"),
                                                        ("dkim ceres._domainkey.example.org (signs)", "fail"),
                                                        ("dkim ceres._domainkey.example.net (signs)", "fail")]
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


def test_every_published_selector_is_checked_against_its_own_key_and_says_whether_it_signs(keys):
    """Mid-rotation: `ceres` signs, `ceres2026` is published ahead. Each is checked against the stack's key
    for that selector; a published key not served yet is red (it must be served before it signs)."""
    (_, signing), (_, upcoming) = keys
    served = {("ceres._domainkey.example.com", "TXT"): [f'"{dkim_value(signing)[:200]}" "{dkim_value(signing)[200:]}"']}
    checked = target(served, dkim_txt=dkim_value(signing), dkim_published={"ceres2026": dkim_value(upcoming)})
    assert [(r.check, r.status) for r in dns_checks.check_dkim(checked)] == [
        ("dkim ceres._domainkey.example.com (signs)", "ok"),
        ("dkim ceres2026._domainkey.example.com (published, not signing)", "fail")]
    served[("ceres2026._domainkey.example.com", "TXT")] = [f'"{dkim_value(upcoming)[:200]}" "{dkim_value(upcoming)[200:]}"']
    assert {r.status for r in dns_checks.check_dkim(checked)} == {"ok"}


def test_a_published_selector_serving_another_key_is_red_not_the_stacks(keys):
    """A stale or attacker-supplied key at the published (not signing) selector: reported as a different
    key, never as the stack's own, though the signing selector is right."""
    (_, signing), (_, upcoming) = keys
    served = {("ceres._domainkey.example.com", "TXT"): [f'"{dkim_value(signing)[:200]}" "{dkim_value(signing)[200:]}"'],
              # the signing key served again at the other selector: a key, 2048 bits, but not that selector's
              ("ceres2026._domainkey.example.com", "TXT"): [f'"{dkim_value(signing)[:200]}" "{dkim_value(signing)[200:]}"']}
    checked = target(served, dkim_txt=dkim_value(signing), dkim_published={"ceres2026": dkim_value(upcoming)})
    results = {r.check: r for r in dns_checks.check_dkim(checked)}
    assert results["dkim ceres._domainkey.example.com (signs)"].status == "ok"
    published = results["dkim ceres2026._domainkey.example.com (published, not signing)"]
    assert (published.status, published.detail) == ("fail", "a different key is published")
    assert "dkimPublicKeys ceres2026" in published.fix


def test_verify_reads_each_selectors_key_from_the_stack_outputs(keys, scratch_project, monkeypatch, tmp_path):
    """Given the stack outputs, verify checks the signing selector and each published one against its own key."""
    import json

    from mailctl import cli
    from mailctl.verify import runner
    from tests.conftest import stack_config

    (_, signing), (_, upcoming) = keys
    config = {**stack_config("prod"), "ceres-mail:dkimPublishedSelectors": ["ceres2026"]}
    project = scratch_project("rotating", config)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"dkimPublicKeyPem": signing, "dkimPublicKeys": {"ceres": signing, "ceres2026": upcoming}}))
    seen = []
    monkeypatch.setattr(runner, "run_checks", lambda target, progress: seen.append(target) or [])
    assert cli.main(["-C", str(project), "verify", "--stack", "rotating", "--resolver", "127.0.0.1",
                     "--dkim-public-key", str(outputs), "--json"]) == 0
    [checked] = seen
    assert (checked.dkim_selector, checked.dkim_txt) == ("ceres", dkim_value(signing))
    assert checked.dkim_published == {"ceres2026": dkim_value(upcoming)}


def test_dkim_missing_different_and_right(keys):
    """The DKIM row is red with no key or another key at the selector, and green with the stack's key."""
    (_, mine), (_, other) = keys
    name = ("ceres._domainkey.example.com", "TXT")
    assert dns_checks.check_dkim(target({}))[0].status == "fail"
    published = f'"{dkim_value(other)[:200]}" "{dkim_value(other)[200:]}"'
    different = dns_checks.check_dkim(target({name: [published]}, dkim_txt=dkim_value(mine)))[0]
    assert different.status == "fail" and different.detail == "a different key is published"
    right = f'"{dkim_value(mine)[:200]}" "{dkim_value(mine)[200:]}"'
    assert dns_checks.check_dkim(target({name: [right]}, dkim_txt=dkim_value(mine)))[0].status == "ok"


def test_ptr_must_name_the_host_and_resolve_back():
    """A PTR naming the mail host is green; one naming another host is red, saying what to set (RFC 8601 2.7.3)."""
    assert dns_checks.check_reverse_dns(target(HOST))[0].status == "ok"
    wrong = {**HOST, ("25.113.0.203.in-addr.arpa", "PTR"): ["host25.provider.example."]}
    result = dns_checks.check_reverse_dns(target(wrong))[0]
    assert result.status == "fail" and "set the PTR of 203.0.113.25 to mail.example.com" in result.fix


def test_a_host_without_address_still_has_a_red_ptr_row_saying_what_to_do():
    """A mail host with no address still gets a red PTR row, saying to publish its A record and have the PTR set."""
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
    """A PTR lookup that times out is a warning for that address with the provider's fix, not a dropped row."""
    answers = {**HOST, ("25.113.0.203.in-addr.arpa", "PTR"): dns.exception.Timeout()}
    [result] = dns_checks.check_reverse_dns(target(answers))
    assert (result.check, result.status) == ("ptr 203.0.113.25", "warn")
    assert "lookup failed (Timeout)" in result.detail
    assert "ask the IP provider to set the PTR of 203.0.113.25 to mail.example.com" in result.fix


def test_a_ptr_with_a_second_name_warns():
    """A PTR answer naming a second host beside the mail host is a warning that names it."""
    answers = {**HOST, ("25.113.0.203.in-addr.arpa", "PTR"): ["mail.example.com.", "host25.provider.example."]}
    [result] = dns_checks.check_reverse_dns(target(answers))
    assert result.status == "warn" and "host25.provider.example" in result.detail


def test_an_ipv6_address_both_declared_and_published_has_one_ptr_row():
    """An IPv6 address both declared and published, however it is written, gets a single PTR row."""
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
    """Port 25 is green when it refuses RCPT to a foreign domain, red when it accepts it (an open relay)."""
    monkeypatch.setattr(smtp_checks, "NamedSMTP", type("S", (FakeSMTP,), {"rcpt_code": code}))
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
    """A resolver that answers NXDOMAIN (no such name) is working: the resolver row is green."""
    assert dns_checks.check_resolver(target({}))[0].status == "ok"


# --- TCP checks: where they connect, and TLS against the host name ---------------------------------

MAIL_V4, MAIL_V6, STS_V4, ORG_STS_V4 = "127.0.0.2", "::1", "127.0.0.3", "127.0.0.4"
ADDRESSED = {("mail.example.com", "A"): [MAIL_V4], ("mail.example.com", "AAAA"): [MAIL_V6],
             ("mta-sts.example.com", "A"): [STS_V4]}
TLS_NAMES = ("mail.example.com", "mta-sts.example.com", "mta-sts.example.org")


@pytest.fixture(scope="module")
def certificate_authority(tmp_path_factory):
    """A CA (the --ca-file), and `leaf(names)`: a server context with a certificate of that CA for `names`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "verify test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("pki")
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(names: tuple[str, ...]) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        stem = directory / str(cert.serial_number)
        stem.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        stem.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(stem.with_suffix(".pem"), stem.with_suffix(".key"))
        return server

    return str(directory / "ca.pem"), leaf


@pytest.fixture(scope="module")
def pki(certificate_authority):
    """The --ca-file, and a server context with its certificate for the mail host and every MTA-STS host."""
    cafile, leaf = certificate_authority
    return cafile, leaf(TLS_NAMES)


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

    def done(self, refused_certificates: int = 0):
        """Every server finished without error, but the `refused_certificates` handshakes where the client
        (rightly) refused the certificate it was shown."""
        for thread in self.threads:
            thread.join(10)
        refused = [e for e in self.errors if isinstance(e, ssl.SSLError) and "ALERT_BAD_CERTIFICATE" in str(e)]
        assert len(refused) == len(self.errors) == refused_certificates, self.errors


def smtp_server(tls: ssl.SSLContext, implicit: bool = False, rcpt_code: int = 554, sni: list | None = None,
                auth: bool = True, starttls: bool = True):
    """A scripted Postfix: STARTTLS (or TLS from the start), AUTH only under TLS (never without `auth`), RCPT
    answered `rcpt_code`; the TLS server names clients ask for go to `sni`. Without `starttls` it offers no
    TLS at all."""
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
                extra = ((b"250 AUTH PLAIN LOGIN\r\n" if auth else b"250 8BITMIME\r\n") if secure
                         else b"250 STARTTLS\r\n" if starttls else b"250 8BITMIME\r\n")
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
    """The SMTP check connects to the address --resolver gives and checks TLS against the mail host's name (SNI too)."""
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
    assert network.attempts == [(MAIL_V4, 25), (MAIL_V6, 25), (MAIL_V4, 465), (MAIL_V6, 465), (MAIL_V4, 587),
                                (MAIL_V6, 587), (MAIL_V4, 993), (MAIL_V6, 993), (STS_V4, 443)]
    for check, addresses in (("smtp 25", (MAIL_V4, MAIL_V6)), ("submission 465", (MAIL_V4, MAIL_V6)),
                             ("submission 587", (MAIL_V4, MAIL_V6)), ("imaps 993", (MAIL_V4, MAIL_V6)),
                             ("https 443 mta-sts.example.com", (STS_V4,))):
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
    for check in ("smtp 25", "submission 465", "submission 587", "imaps 993"):
        row = status(rows, check)
        assert row.status == "fail" and row.detail == "the resolver gives no A/AAAA for mail.example.com", row
        assert row.fix.startswith("publish mail.example.com A (and AAAA)")
    assert status(rows, "https 443 mta-sts.example.com").fix.startswith("publish mta-sts.example.com CNAME mail.example.com.")


CREDENTIALS = {"mailbox": "no-reply@example.com", "password": "secret"}


def rows(results) -> list[tuple[str, str]]:
    return [(r.check, r.status) for r in results]


def test_submission_on_465_is_tls_at_connect_then_certificate_auth_and_login(monkeypatch, pki):
    """465 (RFC 8314): TLS from the first byte, so AUTH is only ever offered over TLS; then the login."""
    cafile, tls = pki
    sni = []
    network = Network(monkeypatch, {(MAIL_V4, 465): smtp_server(tls, implicit=True, sni=sni)})
    results = smtp_checks.check_submission_port(target(ADDRESSED, cafile=cafile, timeout=5, **CREDENTIALS),
                                                465, smtp_checks.IMPLICIT_TLS)
    network.done()
    assert rows(results) == [("submission 465 tls", "ok"), ("submission 465 certificate", "ok"),
                             ("submission 465 auth", "ok"), ("submission 465 login", "ok")], results
    assert "TLS at connect" in results[0].detail
    assert results[2].detail == "AUTH PLAIN LOGIN offered only over TLS (TLS from connect)"
    assert sni == ["mail.example.com"]


def test_submission_on_587_refuses_auth_before_starttls_then_logs_in(monkeypatch, pki):
    """On 587 AUTH is not offered before STARTTLS; after it, the certificate, AUTH and the login are green."""
    cafile, tls = pki
    network = Network(monkeypatch, {(MAIL_V4, 587): smtp_server(tls)})
    results = smtp_checks.check_submission_port(target(ADDRESSED, cafile=cafile, timeout=5, **CREDENTIALS),
                                                587, smtp_checks.STARTTLS)
    network.done()
    assert rows(results) == [("submission 587 auth before starttls", "ok"), ("submission 587 tls", "ok"),
                             ("submission 587 certificate", "ok"), ("submission 587 auth", "ok"),
                             ("submission 587 login", "ok")], results
    assert results[3].detail == "AUTH PLAIN LOGIN offered only over TLS (after STARTTLS)"


def test_587_without_starttls_is_a_red_tls_row_and_nothing_is_sent_in_clear(monkeypatch, pki):
    """A 587 without STARTTLS is a red TLS row with Postfix's fix, and no credentials are sent in clear."""
    cafile, tls = pki
    network = Network(monkeypatch, {(MAIL_V4, 587): smtp_server(tls, starttls=False)})
    results = smtp_checks.check_submission_port(target(ADDRESSED, cafile=cafile, timeout=5, **CREDENTIALS),
                                                587, smtp_checks.STARTTLS)
    network.done()
    assert rows(results) == [("submission 587 auth before starttls", "ok"), ("submission 587 tls", "fail")], results
    assert results[1].fix.startswith("set smtpd_tls_security_level=encrypt on Postfix's submission service (master.cf)")


def test_submission_checks_every_service_of_the_ports_module_in_its_tls_mode(monkeypatch, pki):
    """No port is written in the check: it loops over ports.SUBMISSION_SERVICES (465 implicit, 587 STARTTLS)."""
    from components.builders import ports

    cafile, tls = pki
    network = Network(monkeypatch, {(MAIL_V4, ports.SUBMISSIONS.port): smtp_server(tls, implicit=True),
                                    (MAIL_V4, ports.SUBMISSION.port): smtp_server(tls)})
    results = smtp_checks.check_submission(target(ADDRESSED, cafile=cafile, timeout=5))
    network.done()
    assert [port for _, port in network.attempts] == [s.port for s in ports.SUBMISSION_SERVICES] == [465, 587]
    assert rows(results) == [("submission 465 tls", "ok"), ("submission 465 certificate", "ok"),
                             ("submission 465 auth", "ok"), ("submission 465 login", "warn"),
                             ("submission 587 auth before starttls", "ok"), ("submission 587 tls", "ok"),
                             ("submission 587 certificate", "ok"), ("submission 587 auth", "ok"),
                             ("submission 587 login", "warn")], results
    assert status(results, "submission 465 login").fix == "pass --password-file to test the login"

    only = (ports.Service(2465, "submissions", "implicit", "test"),)
    monkeypatch.setattr(ports, "SUBMISSION_SERVICES", only)
    monkeypatch.setattr(smtp_checks, "SUBMISSION_SERVICES", only)
    network = Network(monkeypatch)
    assert [r.check for r in smtp_checks.check_submission(target(ADDRESSED, cafile=cafile, timeout=5))] == ["submission 2465"]
    assert network.attempts == [(MAIL_V4, 2465), (MAIL_V6, 2465)]


def plain_smtp_server(sock: socket.socket) -> None:
    """Postfix's submissions service without wrapper mode: a plain banner where TLS should start."""
    sock.sendall(b"220 mail.example.com ESMTP\r\n")
    try:
        while sock.recv(4096):  # the client's TLS hello, unanswered
            pass
    except ConnectionResetError:  # the client gave up with our banner unread
        pass


def test_465_answering_in_plain_text_is_a_red_tls_row_with_the_wrapper_mode_fix(monkeypatch, pki):
    """A 465 that answers in plain text is a red TLS row whose fix is Postfix's smtpd_tls_wrappermode=yes."""
    cafile, _ = pki
    network = Network(monkeypatch, {(MAIL_V4, 465): plain_smtp_server})
    results = smtp_checks.check_submission_port(target(ADDRESSED, cafile=cafile, timeout=5, **CREDENTIALS),
                                                465, smtp_checks.IMPLICIT_TLS)
    network.done()
    assert rows(results) == [("submission 465 tls", "fail")], results
    assert results[0].detail.startswith("no TLS at connect: SSLError")
    assert "smtpd_tls_wrappermode=yes on Postfix's submissions service (master.cf)" in results[0].fix


def test_465_with_a_certificate_for_another_name_is_a_red_certificate_row(monkeypatch, certificate_authority):
    """A 465 showing a certificate for another name is a red certificate row saying to install one for the mail host."""
    cafile, leaf = certificate_authority
    network = Network(monkeypatch, {(MAIL_V4, 465): smtp_server(leaf(("other.example.com",)), implicit=True)})
    results = smtp_checks.check_submission_port(target(ADDRESSED, cafile=cafile, timeout=5, **CREDENTIALS),
                                                465, smtp_checks.IMPLICIT_TLS)
    network.done(refused_certificates=1)
    assert rows(results) == [("submission 465 certificate", "fail")], results
    assert "install a certificate for mail.example.com" in results[0].fix


def test_465_without_auth_is_a_red_auth_row_and_no_login_is_tried(monkeypatch, pki):
    """A 465 that offers no AUTH is a red auth row with Postfix's fix, and no login is tried."""
    cafile, tls = pki
    network = Network(monkeypatch, {(MAIL_V4, 465): smtp_server(tls, implicit=True, auth=False)})
    results = smtp_checks.check_submission_port(target(ADDRESSED, cafile=cafile, timeout=5, **CREDENTIALS),
                                                465, smtp_checks.IMPLICIT_TLS)
    network.done()
    assert rows(results) == [("submission 465 tls", "ok"), ("submission 465 certificate", "ok"),
                             ("submission 465 auth", "fail")], results
    assert results[2].detail == "AUTH not offered (TLS from connect)"
    assert "smtpd_sasl_auth_enable=yes on Postfix's submissions service" in results[2].fix


def test_465_refusing_connections_says_which_service_to_start(monkeypatch, pki):
    """A 465 refusing connections is a red row saying to open the port and run Postfix's submissions service."""
    cafile, _ = pki
    Network(monkeypatch)
    [row] = smtp_checks.check_submission_port(target(ADDRESSED, cafile=cafile, timeout=5), 465, smtp_checks.IMPLICIT_TLS)
    assert (row.check, row.status) == ("submission 465", "fail")
    assert row.fix == "check that port 465 is open and Postfix's submissions service (master.cf) runs"


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
    """The MTA-STS policy served as the stack declares it (CRLF or LF lines) and its DNS id are green (RFC 8461 3.2)."""
    served = STACK_POLICY.replace("\n", "\r\n")  # RFC 8461 3.2 lines end in CRLF; either is read
    results = run_mta_sts(monkeypatch, pki, served, sts_target(pki[0], mta_sts_id(STACK_POLICY), mta_sts_policy=STACK_POLICY))
    assert rows(results) == [("https 443 certificate mta-sts.example.com", "ok"), ("mta-sts policy example.com", "ok"),
                             ("mta-sts mode example.com", "ok"), ("mta-sts id example.com", "ok")], results


def test_a_policy_that_only_tests_warns_that_senders_still_deliver(monkeypatch, pki):
    """An MTA-STS policy in testing (as the stack declares it) is a warning: senders report but still deliver."""
    testing = STACK_POLICY.replace("mode: enforce", "mode: testing")
    results = run_mta_sts(monkeypatch, pki, testing, sts_target(pki[0], mta_sts_id(testing), mta_sts_policy=testing))
    mode = status(results, "mta-sts mode example.com")
    assert (mode.status, status(results, "mta-sts policy example.com").status) == ("warn", "ok")
    assert "set mtaStsMode to enforce" in mode.fix


def test_mta_sts_mode_and_max_age_are_compared_with_the_stack(monkeypatch, pki):
    """A served MTA-STS policy whose mode or max_age differs from the stack's is red, naming both values."""
    served = STACK_POLICY.replace("mode: enforce", "mode: testing").replace("max_age: 604800", "max_age: 86400")
    results = run_mta_sts(monkeypatch, pki, served, sts_target(pki[0], mta_sts_id(STACK_POLICY), mta_sts_policy=STACK_POLICY))
    policy = status(results, "mta-sts policy example.com")
    assert policy.status == "fail"
    assert "mode testing, the stack declares enforce" in policy.detail
    assert "max_age 86400, the stack declares 604800" in policy.detail
    assert "pulumi stack output mtaStsPolicy" in policy.fix


def test_the_mta_sts_id_in_dns_must_be_the_one_of_the_stack_policy(monkeypatch, pki):
    """The policy changed (testing -> enforce) but the DNS id did not: senders keep the cached old policy."""
    old = mta_sts_id(mta_sts_policy(SINGLE))
    results = run_mta_sts(monkeypatch, pki, STACK_POLICY, sts_target(pki[0], old, mta_sts_policy=STACK_POLICY))
    assert status(results, "mta-sts policy example.com").status == "ok"
    row = status(results, "mta-sts id example.com")
    assert row.status == "fail" and row.detail == f"id {old}, the stack's policy has id {mta_sts_id(STACK_POLICY)}"
    assert row.fix.startswith(f'publish _mta-sts.example.com TXT "v=STSv1; id={mta_sts_id(STACK_POLICY)}"')


@pytest.mark.parametrize("served, good", [
    ("version: STSv1\nmode: enforce\nmx: *.example.com\nmax_age: 86400\n", True),
    ("version: STSv1\nmode: strict\nmx: mail.example.com\nmax_age: 86400\n", False),
    ("version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 86400\n", False),
])
def test_without_a_stack_the_policy_is_judged_by_rfc_8461(monkeypatch, pki, served, good):
    """Without a stack, a policy needs a valid mode (RFC 8461 3.2) and an mx matching the host, wildcards too (4.1)."""
    results = run_mta_sts(monkeypatch, pki, served, sts_target(pki[0], "20240101"))
    assert status(results, "mta-sts policy example.com").status == ("ok" if good else "fail")
    assert status(results, "mta-sts id example.com").status == "ok"


MULTI = {**ADDRESSED, ("mta-sts.example.org", "A"): [ORG_STS_V4]}


def test_mta_sts_is_checked_for_every_mail_domain(monkeypatch, pki):
    """The stack publishes mta-sts.<domain> and _mta-sts.<domain> for every mail domain and the certificate
    names them all: each domain gets its certificate, policy and id rows, fetched from its own host."""
    cafile, tls = pki
    stack_id = mta_sts_id(STACK_POLICY)
    answers = {**MULTI, ("_mta-sts.example.com", "TXT"): [f'"v=STSv1; id={stack_id}"'],
               ("_mta-sts.example.org", "TXT"): [f'"v=STSv1; id={stack_id}"']}
    requests, sni = [], []
    network = Network(monkeypatch, {(STS_V4, 443): https_server(tls, STACK_POLICY, requests, sni),
                                    (ORG_STS_V4, 443): https_server(tls, STACK_POLICY, requests, sni)})
    results = https_checks.check_mta_sts(target(answers, cafile=cafile, timeout=5, extra_domains=("example.org",),
                                                mta_sts_policy=STACK_POLICY))
    network.done()
    assert rows(results) == [("https 443 certificate mta-sts.example.com", "ok"), ("mta-sts policy example.com", "ok"),
                             ("mta-sts mode example.com", "ok"), ("mta-sts id example.com", "ok"),
                             ("https 443 certificate mta-sts.example.org", "ok"), ("mta-sts policy example.org", "ok"),
                             ("mta-sts mode example.org", "ok"), ("mta-sts id example.org", "ok")], results
    assert network.attempts == [(STS_V4, 443), (ORG_STS_V4, 443)]
    assert sni == ["mta-sts.example.com", "mta-sts.example.org"]
    assert ["\r\nHost: mta-sts.example.com\r\n" in requests[0], "\r\nHost: mta-sts.example.org\r\n" in requests[1]] == [True, True]


def test_an_extra_domain_whose_name_the_certificate_misses_and_whose_id_is_missing_is_red_on_its_own_rows(
        monkeypatch, certificate_authority):
    """An extra domain missing from the certificate and without an _mta-sts id is red on its own rows only."""
    cafile, leaf = certificate_authority
    primary_only = leaf(("mail.example.com", "mta-sts.example.com"))
    stack_id = mta_sts_id(STACK_POLICY)
    answers = {**MULTI, ("_mta-sts.example.com", "TXT"): [f'"v=STSv1; id={stack_id}"']}
    requests, sni = [], []
    network = Network(monkeypatch, {(STS_V4, 443): https_server(primary_only, STACK_POLICY, requests, sni),
                                    (ORG_STS_V4, 443): https_server(primary_only, STACK_POLICY, requests, sni)})
    results = https_checks.check_mta_sts(target(answers, cafile=cafile, timeout=5, extra_domains=("example.org",),
                                                mta_sts_policy=STACK_POLICY))
    network.done(refused_certificates=1)
    assert rows(results) == [("https 443 certificate mta-sts.example.com", "ok"), ("mta-sts policy example.com", "ok"),
                             ("mta-sts mode example.com", "ok"), ("mta-sts id example.com", "ok"),
                             ("https 443 certificate mta-sts.example.org", "fail"), ("mta-sts id example.org", "fail")], results
    assert "SSLCertVerificationError" in results[4].detail and "mta-sts.example.org" in results[4].detail
    assert "install a certificate for mta-sts.example.org" in results[4].fix
    assert sni == ["mta-sts.example.com", "mta-sts.example.org"] and len(requests) == 1
    assert results[5].detail == "no v=STSv1 TXT at _mta-sts.example.org: senders see no MTA-STS policy"
    assert results[5].fix == f'publish _mta-sts.example.org TXT "v=STSv1; id={stack_id}"'


def test_an_extra_domain_without_a_policy_host_says_what_to_publish(monkeypatch, pki):
    """An extra domain whose mta-sts host has no address is red, saying to publish its CNAME to the mail host."""
    cafile, tls = pki
    requests, sni = [], []
    network = Network(monkeypatch, {(STS_V4, 443): https_server(tls, STACK_POLICY, requests, sni)})
    results = https_checks.check_mta_sts(target(ADDRESSED, cafile=cafile, timeout=5, extra_domains=("example.org",)))
    network.done()
    row = status(results, "https 443 mta-sts.example.org")
    assert row.status == "fail" and row.detail == "the resolver gives no A/AAAA for mta-sts.example.org"
    assert row.fix.startswith("publish mta-sts.example.org CNAME mail.example.com.")
    assert status(results, "mta-sts policy example.com").status == "ok"


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
    assert status(results, "https 443 mta-sts.example.com").status == "fail"


# --- DANE ----------------------------------------------------------------------------------------------------

DANE_PORTS = (25, 465, 587, 993)


@pytest.fixture(scope="module")
def dane_served():
    """A server context with a certificate for the mail host, and the SHA-256 of its key as a TLSA carries it."""
    certificate, key = self_signed("mail.example.com")
    directory = Path(tempfile.mkdtemp())
    (directory / "cert.pem").write_text(certificate)
    (directory / "key.pem").write_text(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return server, spki_sha256(certificate)


def dane_network(monkeypatch, tls: ssl.SSLContext) -> Network:
    """The mail host on every DANE port: STARTTLS on 25 and 587, TLS at connect on 465 and 993."""
    return Network(monkeypatch, {(MAIL_V4, port): smtp_server(tls, implicit=port in (465, 993), rcpt_code=554)
                                 for port in DANE_PORTS})


def dane_target(digests: dict[int, str], validated: bool = True) -> Target:
    answers = {**ADDRESSED, **{(f"_{port}._tcp.mail.example.com", "TLSA"): [f"3 1 1 {digest}"]
                               for port, digest in digests.items()}}
    return Target(domain="example.com", host="mail.example.com", timeout=5,
                  resolver=FakeResolver(answers, frozenset(key for key in answers if key[1] == "TLSA") if validated
                                        else frozenset()))


def test_dane_is_green_on_every_port_whose_tlsa_pins_the_served_key_and_is_validated(monkeypatch, dane_served):
    """Each DANE port whose validated TLSA 3 1 1 names the key the host serves there is green."""
    tls, digest = dane_served
    network = dane_network(monkeypatch, tls)
    results = dane_checks.check_dane(dane_target({port: digest for port in DANE_PORTS}))
    network.done()
    assert rows(results) == [(f"dane {port} tlsa", "ok") for port in DANE_PORTS], results
    assert sorted(port for _, port in network.attempts) == sorted(DANE_PORTS), "each port's own key is read"


def test_a_tlsa_naming_another_key_is_red_and_says_senders_refuse_it(monkeypatch, dane_served):
    """A TLSA that does not name the served key is red: DANE senders refuse it; the fix publishes or restores."""
    tls, digest = dane_served
    network = dane_network(monkeypatch, tls)
    results = dane_checks.check_dane(dane_target({25: "ab" * 32, 465: digest, 587: digest, 993: digest}))
    network.done()
    assert rows(results)[0] == ("dane 25 tlsa", "fail") and {status for _, status in rows(results)[1:]} == {"ok"}
    assert digest[:16] in results[0].detail and "abababab" in results[0].detail
    assert "refuse this key" in results[0].fix


def test_a_pinned_key_without_dnssec_warns_that_senders_ignore_the_tlsa(monkeypatch, dane_served):
    """A TLSA naming the served key but not validated (no AD bit) warns: senders ignore it until the zone is signed."""
    tls, digest = dane_served
    network = dane_network(monkeypatch, tls)
    results = dane_checks.check_dane(dane_target({25: digest}, validated=False))
    network.done()
    assert rows(results) == [("dane 25 tlsa", "warn")]
    assert "publish its DS" in results[0].fix


def test_no_tlsa_and_none_declared_means_no_dane_rows_and_no_connection(monkeypatch):
    """A host without DANE gets no dane rows, and the check opens no connection."""
    network = Network(monkeypatch)
    assert dane_checks.check_dane(target(ADDRESSED)) == []
    assert network.attempts == []


def test_a_declared_tlsa_that_is_not_published_is_red(monkeypatch):
    """A TLSA the stack declares but DNS does not give is red, saying to publish it before serving a new key."""
    Network(monkeypatch)
    declared = [Record("example.com", "_25._tcp.mail.example.com", "TLSA", f"3 1 1 {'cd' * 32}", 3600, "why")]
    results = dane_checks.check_dane(target(ADDRESSED, expected=declared))
    assert rows(results) == [("dane 25 tlsa", "fail")]
    assert "publish the stack's TLSA records" in results[0].fix


# --- DNSSEC ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zone_keys():
    """Two signing keys (DNSKEY text, DS text of example.com): the zone's, and another zone's."""
    import dns.dnssec

    def pair():
        key = dns.dnssec.make_dnskey(ec.generate_private_key(ec.SECP256R1()).public_key(), 13, flags=257)
        return key.to_text(), dns.dnssec.make_ds("example.com.", key, "SHA256").to_text()

    return pair(), pair()


def dnssec_target(dnskey: str | None, ds: str | None, validated: bool, dnssec: bool = True) -> Target:
    answers = {**({("example.com", "DNSKEY"): [dnskey]} if dnskey else {}), **({("example.com", "DS"): [ds]} if ds else {})}
    return Target(domain="example.com", host="mail.example.com", dnssec=dnssec,
                  resolver=FakeResolver(answers, frozenset({("example.com", "DNSKEY")} if validated else set())))


def test_a_signed_zone_whose_parent_ds_names_its_key_is_green(zone_keys):
    """A zone the resolver validates, with the parent's DS naming its signing key: both DNSSEC rows green."""
    (dnskey, ds), _ = zone_keys
    assert rows(dnssec_checks.check_dnssec(dnssec_target(dnskey, ds, validated=True))) == [
        ("dnssec example.com", "ok"), ("ds example.com", "ok")]


def test_a_signed_zone_without_its_ds_is_red_with_the_registrar_step(zone_keys):
    """Signed but no DS at the parent: not validated and red, both rows saying to publish `mailctl zone --ds`."""
    (dnskey, _), _ = zone_keys
    results = dnssec_checks.check_dnssec(dnssec_target(dnskey, None, validated=False))
    assert rows(results) == [("dnssec example.com", "fail"), ("ds example.com", "fail")]
    assert all("mailctl zone --ds" in r.fix for r in results)


def test_a_ds_naming_another_key_is_red_saying_the_domain_fails_everywhere(zone_keys):
    """A parent DS for a key the zone no longer has is red: validating resolvers refuse the whole domain."""
    (dnskey, _), (_, other_ds) = zone_keys
    [_, ds_row] = dnssec_checks.check_dnssec(dnssec_target(dnskey, other_ds, validated=False))
    assert ds_row.status == "fail" and "refuse the whole domain" in ds_row.detail and ds_row.fix.startswith("replace it")


def test_a_stack_with_dnssec_and_an_unsigned_zone_is_red_and_one_without_has_no_rows():
    """With dnssec declared, an unsigned zone is red (pulumi up signs it); without dnssec, no DNSSEC rows."""
    [row] = dnssec_checks.check_dnssec(dnssec_target(None, None, validated=False))
    assert (row.check, row.status) == ("dnssec example.com", "fail") and "dnssec: true" in row.fix
    assert dnssec_checks.check_dnssec(dnssec_target(None, None, validated=False, dnssec=False)) == []
