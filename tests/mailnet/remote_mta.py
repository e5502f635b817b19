"""The receiving MTA of the test "internet": a mail server of another domain that judges what arrives.

Run inside the `remote` network namespace (`python remote_mta.py ADDRESS DNS_SERVER OUT_DIR`). For every
message it writes OUT_DIR/<n>.json with what a real receiver would decide: DKIM (dkimpy), SPF (pyspf,
RFC 7208) and DMARC alignment (RFC 7489 3.1, relaxed), all resolved through the test's own DNS server,
plus the raw message (OUT_DIR/<n>.eml). It accepts mail for any recipient and never relays.
"""

from __future__ import annotations

import email
import email.utils
import json
import sys
import time
from pathlib import Path

import dkim
import dns.resolver
import spf
from aiosmtpd.controller import Controller


def organizational_domain(domain: str) -> str:
    """Good enough for the test's names (example.com-style): the last two labels."""
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


def _text(value) -> str:
    """dkimpy gives bytes or str depending on the field and version."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


class Judge:
    def __init__(self, out_dir: Path, resolver: dns.resolver.Resolver):
        self.out_dir = out_dir
        self.resolver = resolver
        self.count = 0

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes:
        answers = self.resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(b"".join(rdata.strings) for rdata in answers)

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content
        message = email.message_from_bytes(content)
        from_domain = email.utils.parseaddr(message.get("From", ""))[1].rsplit("@", 1)[-1].lower()
        verifier = dkim.DKIM(content)
        dkim_pass = bool(verifier.verify(dnsfunc=self.dnsfunc))
        dkim_domain = _text(verifier.domain).lower()
        mail_from = envelope.mail_from or ""
        spf_result, spf_explanation = spf.check2(i=session.peer[0], s=mail_from, h=session.host_name or "")
        spf_domain = mail_from.rsplit("@", 1)[-1].lower() if "@" in mail_from else ""
        aligned_dkim = dkim_pass and organizational_domain(dkim_domain) == organizational_domain(from_domain)
        aligned_spf = spf_result == "pass" and organizational_domain(spf_domain) == organizational_domain(from_domain)
        self.count += 1
        verdict = {
            "peer": session.peer[0],
            "helo": session.host_name,
            "mail_from": mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from_domain": from_domain,
            "subject": message.get("Subject", ""),
            "from": message.get("From", ""),
            "reply_to": message.get("Reply-To", ""),
            "message_id": message.get("Message-ID", ""),
            "dkim": "pass" if dkim_pass else "fail",
            "dkim_domain": dkim_domain,
            "dkim_selector": _text(verifier.selector),
            "spf": spf_result,
            "spf_explanation": spf_explanation,
            "dmarc_aligned": aligned_dkim or aligned_spf,
            "tls": session.ssl is not None,
        }
        (self.out_dir / f"{self.count}.eml").write_bytes(content)
        (self.out_dir / f"{self.count}.json").write_text(json.dumps(verdict, indent=2, sort_keys=True))
        return "250 OK judged"


def main() -> None:
    address, dns_server, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server]
    dns.resolver.default_resolver = resolver  # pyspf resolves through dnspython's default resolver
    controller = Controller(Judge(out, resolver), hostname=address, port=25, server_hostname="mx.example.net",
                            decode_data=False)
    controller.start()
    print(f"remote MTA judging on {address}:25", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
