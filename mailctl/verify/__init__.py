"""`mailctl verify`: live checks of the mail server from outside (what a receiving MTA and a mail client will check).

One module per protocol (dns_checks, smtp_checks, imap_checks, https_checks), each check a plain
function returning `Result`s with a status, what was seen, and what to do about it. Every network wait is
bounded by the target's timeout; DNS goes to the resolver the operator names (or the system's), and the
TCP checks connect to the addresses that resolver gives (net.py). What is checked per mail domain (DKIM,
MTA-STS) is checked for every one; the ports come from components/builders/ports.py.
"""
