"""Values that stand in for an operator's own in a stack file the tests or tools write.

A plain module, without pytest: `tools/plan_snapshots.py` runs from a clone and imports it, and
`tests/conftest.py` re-exports what the test modules take from it.
"""

#: a `secure:` value as `pulumi config set --secret` writes it; the offline recorder never decrypts it
SECURE = {"secure": "v1:cGxhY2Vob2xkZXI="}

#: an SSH host key (ed25519) as `ssh-keyscan -t ed25519 <host>` prints it, without the host: of no machine
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
