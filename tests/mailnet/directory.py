"""An operator's existing directory, for `ldapMode: external` (tests/test_directory_host.py): Debian's slapd (this
machine's, as tests/test_verify_ldap.py runs it) in a network namespace of the test internet, set up by the
test itself, never by the stack's `ldap` stage.

The directory is ldap.example.com, with a certificate from the operator's own CA (not a public one: the mail
host trusts it only once the operator adds that CA to the host's store). Three slapd processes answer there:

    corp       ldaps 636 and ldap 389 (StartTLS offered, not required by the server): the directory
    untrusted  ldaps 2636 and ldap 2389: the same people, a certificate for the same name from another CA
    plain      ldap 1389, no TLS at all: the same people, StartTLS never offered

Each logs its connections, operations and TLS handshakes (`-d stats`) to `<name>.log`: what the directory saw
of the mail host (whether TLS came before every bind).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.testnet import NetnsHost, TestNet

NAME = "ldap.example.com"
BASE = "dc=example,dc=com"
PEOPLE = f"ou=people,{BASE}"
#: the operator's service account for the mail host (not the local mode's cn=ceres-mail: another name, so the
#: stack visibly binds as ldapBindDn)
SERVICE_ACCOUNT = f"cn=mail-reader,ou=services,{BASE}"
#: port(s) of each slapd: (ldaps, ldap) or (None, ldap)
INSTANCES = {"corp": (636, 389), "untrusted": (2636, 2389), "plain": (None, 1389)}


@dataclass(frozen=True)
class Directory:
    host: NetnsHost
    workdir: Path
    ca_pem: str  #: the operator's CA, which issued the directory's certificate

    @staticmethod
    def port(instance: str = "corp", tls: str = "ldaps") -> int:
        ldaps, ldap = INSTANCES[instance]
        return ldaps if tls == "ldaps" else ldap

    def url(self, instance: str = "corp", tls: str = "ldaps") -> str:
        """ldaps://ldap.example.com[:port], or ldap://... (`tls` "ldap": StartTLS)."""
        port = self.port(instance, tls)
        return f"{tls}://{NAME}" + ("" if port == (636 if tls == "ldaps" else 389) else f":{port}")

    def log(self, instance: str) -> str:
        return (self.workdir / f"{instance}.log").read_text(errors="replace")

    def connections(self, instance: str, client: str) -> dict[int, list[str]]:
        """What slapd `instance` logged of each connection from `client` (an IP), by connection number: the
        text after `conn=N` of each line, in order (the first says where the connection came in)."""
        lines = self.log(instance).splitlines()
        ours = {int(m[1]) for line in lines if (m := re.search(rf"conn=(\d+) fd=\d+ ACCEPT from IP={re.escape(client)}:", line))}
        seen: dict[int, list[str]] = {n: [] for n in ours}
        for line in lines:
            m = re.search(r"conn=(\d+) (.*)", line)
            if m and int(m[1]) in ours:
                seen[int(m[1])].append(m[2])
        return seen


def ssha(password: str) -> str:
    """An RFC 2307 {SSHA} hash, as the operator's directory stores a password."""
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def ldif_value(attribute: str, value: str) -> str:
    safe = value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<")) and not value.endswith(" ")
    return f"{attribute}: {value}" if safe else f"{attribute}:: {base64.b64encode(value.encode()).decode()}"


def directory_ldif(service_password: str, people: dict[str, tuple[str, str]]) -> str:
    """The base, people ({uid: (mail, password)}) and the service account, passwords hashed."""
    entries = [
        [f"dn: {BASE}", "objectClass: dcObject", "objectClass: organization", "o: Example", "dc: example"],
        [f"dn: {PEOPLE}", "objectClass: organizationalUnit", "ou: people"],
        [f"dn: ou=services,{BASE}", "objectClass: organizationalUnit", "ou: services"],
        [f"dn: {SERVICE_ACCOUNT}", "objectClass: organizationalRole", "objectClass: simpleSecurityObject",
         "cn: mail-reader", ldif_value("userPassword", ssha(service_password))],
    ]
    for uid, (mail, password) in people.items():
        entries.append([f"dn: uid={uid},{PEOPLE}", "objectClass: inetOrgPerson", f"uid: {uid}", f"cn: {uid.title()}",
                        "sn: Example", f"mail: {mail}", ldif_value("userPassword", ssha(password))])
    return "\n\n".join("\n".join(entry) for entry in entries) + "\n"


def slapd_conf(work: Path, tls: tuple[Path, Path] | None) -> str:
    """What README asks of an external directory: people readable by the service account (never their
    hash), anonymous may only authenticate, an equality index on mail."""
    return "\n".join([
        *(f"include /etc/ldap/schema/{schema}.schema" for schema in ("core", "cosine", "inetorgperson")),
        "modulepath /usr/lib/ldap", "moduleload back_mdb",
        f"pidfile {work}/slapd.pid", f"argsfile {work}/slapd.args",
        *((f"TLSCertificateFile {tls[0]}", f"TLSCertificateKeyFile {tls[1]}") if tls else ()),
        "database mdb", f'suffix "{BASE}"', f"directory {work}/db",
        "index objectClass,mail eq",
        "access to attrs=userPassword by anonymous auth by * none",
        f'access to dn.subtree="{PEOPLE}" by dn.exact="{SERVICE_ACCOUNT}" read by self read by * none',
        "access to * by * none",
        "",
    ])


def certificate(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA (issuer None: self-signed, CA:TRUE) or a server certificate for `name` issued by `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=2)))
    if issuer is None:
        builder = (builder.issuer_name(subject)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        return builder.sign(key, hashes.SHA256()), key
    ca, ca_key = issuer
    builder = (builder.issuer_name(ca.subject)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    return builder.sign(ca_key, hashes.SHA256()), key


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def write_tls(work: Path, server: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], ca: x509.Certificate) -> tuple[Path, Path]:
    cert, key = server
    (work / "cert.pem").write_text(pem(cert) + pem(ca))
    (work / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    (work / "key.pem").chmod(0o600)
    return work / "cert.pem", work / "key.pem"


def start_directory(net: TestNet, workdir: Path, address_cidr: str, service_password: str,
                    people: dict[str, tuple[str, str]]) -> Directory:
    """The three slapd processes of ldap.example.com in the netns host `directory`, serving once this returns."""
    host = net.add_netns_host("directory", address_cidr)
    address = address_cidr.split("/")[0]
    corp_ca = certificate("Example Corp directory CA (ceres-mail tests)", None)
    other_ca = certificate("Someone else's CA (ceres-mail tests)", None)
    ldif = directory_ldif(service_password, people)
    for instance, (ldaps, ldap) in INSTANCES.items():
        work = workdir / instance
        (work / "db").mkdir(parents=True)
        ca = {"corp": corp_ca, "untrusted": other_ca}.get(instance)
        tls = write_tls(work, certificate(NAME, ca), ca[0]) if ca else None
        conf = work / "slapd.conf"
        conf.write_text(slapd_conf(work, tls))
        (work / "people.ldif").write_text(ldif)
        (work / "people.ldif").chmod(0o600)
        subprocess.run(["/usr/sbin/slapadd", "-f", str(conf), "-l", str(work / "people.ldif")], check=True, capture_output=True)
        urls = [*([f"ldaps://{address}:{ldaps}/"] if ldaps else []), f"ldap://{address}:{ldap}/"]
        host.popen(["/usr/sbin/slapd", "-f", str(conf), "-h", " ".join(urls), "-d", "256"],
                   stdout=subprocess.DEVNULL, stderr=(workdir / f"{instance}.log").open("w"))
    for instance, ports in INSTANCES.items():
        for port in filter(None, ports):
            deadline = time.monotonic() + 20
            probe = ["python3", "-c", f"import socket; socket.create_connection(({address!r}, {port}), 1)"]
            while host.run(probe).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"slapd {instance} does not listen on {port}: {(workdir / f'{instance}.log').read_text()}")
                time.sleep(0.2)
    return Directory(host, workdir, pem(corp_ca[0]))
