"""posttls-finger, Postfix's own SMTP TLS client, as the judge of DANE on the mail host's SMTP ports.

It asks the DNS the way a DANE-validating Postfix sender does (DNSSEC through the resolver of its
namespace, here the signed tree's validating one), looks up the port's TLSA, and says whether the
certificate the host presents matches it ("Verified TLS connection established"). It runs from a
namespace of the test internet with a main.cf of its own (MAIL_CONFIG): this machine has Postfix installed
for this tool alone, with no configuration and no service. Port 465 is TLS from the first byte (-w).
IMAP (993) is beyond it: the verify check's dane row judges that port.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.testnet.linux import Programs

#: what posttls-finger says when the TLSA of the port names the certificate's key (RFC 7672 validation)
VERIFIED = "Verified TLS connection established"
#: Postfix as a sender that requires DANE: TLSA lookups with DNSSEC, nothing else trusted
MAIN_CF = "smtp_dns_support_level = dnssec\nsmtp_tls_loglevel = 1\n"


def posttls_finger(place: Programs, workdir: Path, host: str, port: int) -> subprocess.CompletedProcess:
    """posttls-finger at `host`:`port` requiring DANE (`-l dane-only`: no TLSA, or none that matches, fails)."""
    config = workdir / "posttls-finger"
    config.mkdir(parents=True, exist_ok=True)
    (config / "main.cf").write_text(MAIN_CF)
    argv = ["posttls-finger", "-c", "-l", "dane-only", "-t", "15", "-T", "30", *(["-w"] if port == 465 else []),
            f"[{host}]:{port}"]
    return place.run(argv, timeout=90, env={"MAIL_CONFIG": str(config), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
