"""A stand-in for a running mailcow, on 127.0.0.1: its JSON API over HTTPS and its IMAPS login.

mailcow's container images cannot be pulled on these machines, so the configure stage is proven against
this contract instead. It follows mailcow's documented API (data/web/api/openapi.yaml of the pinned
release) and the PHP behind it (json_api.php, functions.*.inc.php): the same paths, the JSON request
bodies (`add`: the attributes; `edit`: {items, attr}), the same answers (an object, `{}` for nothing,
a list of {type, msg, log} for writes, refusals as type "danger" with HTTP 200), the same checks
(password2 must match, a mailbox needs its domain, DKIM keys must parse, MTA-STS fields as mailcow
validates them), and the same habit of echoing the request in `log`. Every request is recorded.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DOMAIN = re.compile(r"^(?!-)[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})+$")


def tls_context(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (mailcow's is for the mail host, not 127.0.0.1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@dataclass
class Call:
    method: str
    path: str
    body: object = None

    @property
    def writes(self) -> bool:
        return self.method == "POST"


@dataclass
class FakeMailcow:
    """mailcow's state as its API shows it, plus what the test wants it to do wrong."""

    api_key: str
    domains: dict[str, dict] = field(default_factory=dict)
    mailboxes: dict[str, dict] = field(default_factory=dict)  # address -> attributes incl. "password"
    aliases: dict[int, dict] = field(default_factory=dict)
    dkim: dict[str, dict] = field(default_factory=dict)  # domain -> its one key: {pubkey, selector}
    dkim_private_keys: dict[str, str] = field(default_factory=dict)  # "selector.domain" -> PEM, as mailcow's Redis
    mta_sts: dict[str, dict] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    refuse: dict[str, list] = field(default_factory=dict)  # action -> msg of a "danger" answer
    imap_logins: list[tuple[str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- reads ------------------------------------------------------------------------------------

    def get(self, path: str) -> object:
        parts = path.split("/")
        if parts[0] == "domain" and len(parts) == 2:
            domain = self.domains.get(parts[1])
            return {} if domain is None else {
                "domain_name": parts[1], "active": str(domain["active"]), "description": domain["description"],
                "max_num_mboxes_for_domain": domain["mailboxes"], "max_num_aliases_for_domain": domain["aliases"],
                "max_quota_for_domain": domain["quota"] * 1048576, "def_new_mailbox_quota": domain["defquota"] * 1048576,
                "backupmx": "0", "relay_all_recipients": "0", "rl": False, "tags": [],
            }
        if parts[0] == "mailbox" and len(parts) == 2:
            box = self.mailboxes.get(parts[1])
            return {} if box is None else {
                "username": parts[1], "local_part": box["local_part"], "domain": box["domain"], "name": box["name"],
                "active": str(box["active"]), "quota": box["quota"] * 1048576, "messages": 0, "attributes": {},
            }
        if parts[:2] == ["alias", "all"] and len(parts) == 3:
            found = [{"id": i, "address": a["address"], "goto": a["goto"], "active": str(a["active"]),
                      "domain": a["address"].rsplit("@", 1)[1], "is_catch_all": 0}
                     for i, a in sorted(self.aliases.items()) if a["address"].endswith("@" + parts[2])]
            return found or {}
        if parts[0] == "dkim" and len(parts) == 2:
            key = self.dkim.get(parts[1])
            return {} if key is None else {
                "pubkey": key["pubkey"], "dkim_selector": key["selector"], "length": "2048",
                "dkim_txt": "v=DKIM1;k=rsa;t=s;s=email;p=" + key["pubkey"], "privkey": "",
            }
        if path == "status/version":
            return {"version": "2026-07a"}
        raise LookupError(path)

    def mta_sts_text(self, domain: str) -> str | None:
        policy = self.mta_sts.get(domain)
        if policy is None or policy["active"] != 1:
            return None
        return (f"version: STSv1\nmode: {policy['mode']}\nmax_age: {policy['max_age']}\n"
                + "".join(f"mx: {mx}\n" for mx in policy["mx"]))

    # --- writes (each returns mailcow's list of results) -------------------------------------------

    def post(self, action: str, body: dict) -> list[dict]:
        if action in self.refuse:
            return [{"type": "danger", "log": [action, body], "msg": self.refuse[action]}]
        handler = getattr(self, "_" + action.replace("/", "_").replace("-", "_"), None)
        if handler is None:
            return [{"type": "danger", "log": [action, body], "msg": ["unknown action", action]}]
        msg = handler(body)
        ok = msg[0].endswith(("added", "modified", "saved"))
        return [{"type": "success" if ok else "danger", "log": [action, body, None], "msg": msg}]

    def _add_domain(self, attr: dict) -> list:
        domain = str(attr.get("domain", "")).lower()
        if not DOMAIN.match(domain):
            return ["domain_invalid", domain]
        if domain in self.domains:
            return ["domain_exists", domain]
        self.domains[domain] = {"active": int(attr.get("active", 1)), "description": attr.get("description", ""),
                                **{k: int(attr[k]) for k in ("mailboxes", "aliases", "quota", "maxquota", "defquota")}}
        return ["domain_added", domain]

    def _edit_domain(self, body: dict) -> list:
        for domain in body["items"]:
            if domain not in self.domains:
                return ["access_denied"]
            self.domains[domain].update({k: v for k, v in body["attr"].items() if k in ("active", "description")})
        return ["domain_modified", ", ".join(body["items"])]

    def _add_mailbox(self, attr: dict) -> list:
        address = f"{attr.get('local_part')}@{attr.get('domain')}"
        if attr.get("domain") not in self.domains:
            return ["domain_not_found", attr.get("domain")]
        if not attr.get("password") or attr.get("password") != attr.get("password2"):
            return ["password_mismatch"]
        if address in self.mailboxes or any(a["address"] == address for a in self.aliases.values()):
            return ["object_exists", address]
        if int(attr["quota"]) > self.domains[attr["domain"]]["maxquota"]:
            return ["mailbox_quota_exceeded", attr["quota"]]
        self.mailboxes[address] = {"local_part": attr["local_part"], "domain": attr["domain"], "name": attr.get("name", ""),
                                   "active": int(attr.get("active", 1)), "quota": int(attr["quota"]), "password": attr["password"]}
        return ["mailbox_added", address]

    def _edit_mailbox(self, body: dict) -> list:
        attr = body["attr"]
        if "password" in attr and attr["password"] != attr.get("password2"):
            return ["password_mismatch"]
        for address in body["items"]:
            if address not in self.mailboxes:
                return ["access_denied"]
            box = self.mailboxes[address]
            for key in ("name", "active", "quota", "password"):
                if key in attr:
                    box[key] = int(attr[key]) if key in ("active", "quota") else attr[key]
        return ["mailbox_modified", ", ".join(body["items"])]

    def _add_alias(self, attr: dict) -> list:
        address = attr.get("address", "")
        if address.rsplit("@", 1)[-1] not in self.domains:
            return ["domain_not_found", address]
        if address in self.mailboxes or any(a["address"] == address for a in self.aliases.values()):
            return ["is_alias_or_mailbox", address]
        self.aliases[max(self.aliases, default=0) + 1] = {"address": address, "goto": attr["goto"], "active": int(attr.get("active", 1))}
        return ["alias_added", address]

    def _edit_alias(self, body: dict) -> list:
        for item in body["items"]:
            alias = self.aliases.get(int(item))
            if alias is None:
                return ["access_denied"]
            alias.update({"goto": body["attr"].get("goto", alias["goto"]), "active": int(body["attr"].get("active", alias["active"]))})
        return ["alias_modified", ", ".join(body["items"])]

    def _add_dkim_import(self, attr: dict) -> list:
        domain = attr.get("domain", "")
        selector = attr.get("dkim_selector", "dkim")
        if not DOMAIN.match(domain) or not re.fullmatch(r"[A-Za-z0-9._-]+", selector):
            return ["dkim_domain_or_sel_invalid", domain]
        if domain in self.dkim and int(attr.get("overwrite_existing", 0)) == 0:
            return ["dkim_domain_or_sel_exists", domain]
        try:
            key = serialization.load_pem_private_key(attr["private_key_file"].encode(), password=None)
        except (KeyError, ValueError) as error:
            return ["private_key_error", str(error)]
        spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        # mailcow holds one key per domain: an import first deletes the domain's key, private part included
        old = self.dkim.pop(domain, None)
        if old is not None:
            self.dkim_private_keys.pop(f"{old['selector']}.{domain}", None)
        self.dkim[domain] = {"pubkey": base64.b64encode(spki).decode(), "selector": selector}
        self.dkim_private_keys[f"{selector}.{domain}"] = attr["private_key_file"].strip()
        return ["dkim_added", domain]

    def _mta_sts_fields(self, attr: dict) -> dict | list:
        if str(attr.get("version", "")).lower() != "stsv1":
            return ["version_invalid"]
        if attr.get("mode") not in ("enforce", "testing", "none"):
            return ["mode_invalid"]
        if not 0 < int(attr.get("max_age", 0)) <= 31536000:
            return ["max_age_invalid"]
        mx = [m.strip() for m in str(attr.get("mx", "")).split(",") if m.strip()]
        if not mx:
            return ["mx_invalid"]
        return {"mode": attr["mode"], "max_age": int(attr["max_age"]), "mx": mx, "active": 1 if int(attr.get("active", 0)) == 1 else 0}

    def _add_mta_sts(self, attr: dict) -> list:
        fields = self._mta_sts_fields(attr)
        if isinstance(fields, list):
            return fields
        self.mta_sts[attr["domain"]] = fields
        return ["mta_sts_added", attr["domain"]]

    def _edit_mta_sts(self, body: dict) -> list:
        fields = self._mta_sts_fields(body["attr"])
        if isinstance(fields, list):
            return fields
        for domain in body["items"]:
            self.mta_sts[domain] = fields
        return ["mta_sts_modified", ", ".join(body["items"])]


def _handler(state: FakeMailcow):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: the test reads `state.calls`
            pass

        def _send(self, status: int, payload: object, content_type: str = "application/json") -> None:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            with state.lock:
                state.calls.append(Call("GET", self.path))
                if self.path == "/.well-known/mta-sts.txt":
                    host = self.headers.get("Host", "")
                    text = state.mta_sts_text(host.removeprefix("mta-sts.")) if host.startswith("mta-sts.") else None
                    return self._send(404, "") if text is None else self._send(200, text, "text/plain")
                if self.headers.get("X-API-Key") != state.api_key:
                    return self._send(401, {"type": "error", "msg": "authentication failed"})
                try:
                    return self._send(200, state.get(self.path.removeprefix("/api/v1/get/")))
                except LookupError:
                    return self._send(404, {"type": "error", "msg": "route not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length).decode()
            with state.lock:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                state.calls.append(Call("POST", self.path, body))
                if self.headers.get("X-API-Key") != state.api_key:
                    return self._send(401, {"type": "error", "msg": "authentication failed"})
                if "application/json" not in self.headers.get("Content-Type", "") or body is None:
                    return self._send(400, {"type": "error", "msg": "Request body doesn't contain valid json!"})
                return self._send(200, state.post(self.path.removeprefix("/api/v1/"), body))

    return Handler


class _ImapHandler(socketserver.StreamRequestHandler):
    """Just enough of IMAP4rev1 for a login check: greeting, CAPABILITY, LOGIN, LOGOUT."""

    def handle(self):
        state: FakeMailcow = self.server.state
        self.wfile.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] Dovecot ready.\r\n")
        for line in self.rfile:
            tag, _, rest = line.decode().rstrip("\r\n").partition(" ")
            command, _, arguments = rest.partition(" ")
            if command.upper() == "CAPABILITY":
                self.wfile.write(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n".encode())
            elif command.upper() == "LOGIN":
                user, password = [w.strip('"').replace('\\"', '"').replace("\\\\", "\\")
                                  for w in re.findall(r'"(?:[^"\\]|\\.)*"|\S+', arguments)]
                ok = state.mailboxes.get(user, {}).get("password") == password
                state.imap_logins.append((user, ok))
                self.wfile.write(f"{tag} OK Logged in\r\n".encode() if ok else f"{tag} NO [AUTHENTICATIONFAILED] failed\r\n".encode())
            elif command.upper() == "LOGOUT":
                self.wfile.write(f"* BYE Logging out\r\n{tag} OK done\r\n".encode())
                return
            else:
                self.wfile.write(f"{tag} BAD unknown\r\n".encode())


class _TlsTcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, context: ssl.SSLContext, state: FakeMailcow):
        super().__init__(address, handler)
        self.context, self.state = context, state

    def get_request(self):
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


@dataclass
class Running:
    state: FakeMailcow
    api_url: str
    imap_endpoint: str


def serve(state: FakeMailcow, directory: Path):
    """Start both listeners on 127.0.0.1 (free ports); returns (Running, stop)."""
    context = tls_context(directory)
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    http.socket = context.wrap_socket(http.socket, server_side=True)
    imap = _TlsTcpServer(("127.0.0.1", 0), _ImapHandler, context, state)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (http, imap)]
    for thread in threads:
        thread.start()

    def stop():
        for server in (http, imap):
            server.shutdown()
            server.server_close()

    running = Running(state, f"https://127.0.0.1:{http.server_address[1]}", f"127.0.0.1:{imap.server_address[1]}")
    return running, stop
