"""`mailctl verify`'s directory checks against a real slapd (Debian's) on 127.0.0.1: LDAPS and StartTLS with
the certificate checked against the directory's name, and whether an anonymous client reads anything."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.resolver
import pytest

from mailctl.verify.ldap_checks import check_directory
from mailctl.verify.model import FAIL, OK, Target
from tests.conftest import self_signed

HOST = "ldap.example.com"
BASE = "dc=example,dc=com"
PEOPLE = f"""dn: {BASE}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{BASE}
objectClass: organizationalUnit
ou: people

dn: uid=alice,ou=people,{BASE}
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Example
mail: alice@example.com
userPassword: {{SSHA}}not-a-real-hash
"""
#: what an anonymous client may do: only authenticate (as ldapMode local sets it), or read everything
ACLS = {"closed": "access to * by anonymous auth by * none", "open": "access to * by * read"}

pytestmark = pytest.mark.skipif(shutil.which("slapd", path="/usr/sbin:/usr/bin") is None,
                                reason="slapd is not installed (make test installs it as root)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Loopback(Target):
    """The directory's name resolves to 127.0.0.1, where the test's slapd listens."""

    def addresses(self, name: str | None = None) -> list[str]:
        return ["127.0.0.1"]


def target(url: str, cafile: Path) -> Target:
    return Loopback(domain="example.com", host="mail.example.com", resolver=dns.resolver.Resolver(configure=False),
                    timeout=5.0, cafile=str(cafile), ldap_url=url, ldap_base_dn=BASE)  # a float, as from the CLI


@pytest.fixture(scope="module", params=sorted(ACLS))
def slapd(request, tmp_path_factory):
    """slapd with the directory's certificate, LDAPS and plain LDAP (for StartTLS) on loopback ports."""
    work = tmp_path_factory.mktemp(f"slapd-{request.param}")
    cert, key = self_signed(HOST, days=90)  # past verify's 14-day expiry warning
    (work / "cert.pem").write_text(cert)
    (work / "key.pem").write_text(key)
    (work / "db").mkdir()
    conf = work / "slapd.conf"
    conf.write_text("\n".join([
        *(f"include /etc/ldap/schema/{schema}.schema" for schema in ("core", "cosine", "inetorgperson")),
        "modulepath /usr/lib/ldap", "moduleload back_mdb",
        f"pidfile {work}/slapd.pid",
        f"TLSCertificateFile {work}/cert.pem", f"TLSCertificateKeyFile {work}/key.pem",
        "database mdb", f'suffix "{BASE}"', f'rootdn "cn=admin,{BASE}"', f"directory {work}/db",
        ACLS[request.param], "",
    ]))
    (work / "people.ldif").write_text(PEOPLE)
    subprocess.run(["/usr/sbin/slapadd", "-f", str(conf), "-l", str(work / "people.ldif")], check=True, capture_output=True)
    ldaps, ldap = free_port(), free_port()
    server = subprocess.Popen(["/usr/sbin/slapd", "-f", str(conf), "-h", f"ldaps://127.0.0.1:{ldaps}/ ldap://127.0.0.1:{ldap}/",
                               "-d", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", ldaps), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, f"slapd did not start: {server.stderr.read()}"
            time.sleep(0.2)
    yield request.param, work / "cert.pem", ldaps, ldap
    server.terminate()
    server.wait(timeout=10)


def test_ldaps_and_starttls_show_the_certificate_and_what_anonymous_reads(slapd):
    """Over LDAPS and StartTLS, verify checks the certificate names the directory and fails if anonymous can read."""
    acl, ca, ldaps, ldap = slapd
    for url, how in ((f"ldaps://{HOST}:{ldaps}", "ldaps"), (f"ldap://{HOST}:{ldap}", "starttls")):
        certificate, anonymous = check_directory(target(url, ca))
        assert (certificate.check, certificate.status) == (f"ldap {HOST}:{url.rsplit(':', 1)[1]} {how}", OK)
        assert f"valid for {HOST}" in certificate.detail
        if acl == "closed":
            assert anonymous.status == OK and ("reads nothing" in anonymous.detail or "refused" in anonymous.detail)
        else:
            assert anonymous.status == FAIL and "reads" in anonymous.detail and "anonymous may only authenticate" in anonymous.fix


def test_a_certificate_from_another_ca_is_red(slapd, tmp_path):
    """A directory certificate from a CA other than the one given fails verify's LDAPS check."""
    _, _, ldaps, _ = slapd
    other = tmp_path / "other-ca.pem"
    other.write_text(self_signed(HOST)[0])
    [result] = check_directory(target(f"ldaps://{HOST}:{ldaps}", other))
    assert result.status == FAIL and result.check.endswith("ldaps") and "certificate" in result.detail.lower()


def test_a_directory_that_does_not_answer_says_where_to_run_verify_from(slapd):
    """A directory that does not answer fails, and the fix says to run verify from a network in ldapClientCidrs."""
    _, ca, _, _ = slapd
    [result] = check_directory(target(f"ldaps://{HOST}:{free_port()}", ca))
    assert result.status == FAIL and "ldapClientCidrs" in result.fix


def test_no_directory_no_check():
    """Without an LDAP URL in the stack, verify runs no directory check at all."""
    assert check_directory(target("", Path("/nonexistent"))) == []
