"""What stands in a judged value for what cannot be shown: a secret, or a value not known yet.

The offline plan writes these markers (mailctl.plan) and the pack's adapter turns the engine's own into
them (policy.pack), so a rule sees the same value either way. A leaf module: it imports nothing, and
everything that writes or reads a plan takes its markers from here.
"""

SECRET = "[secret]"  #: a secret's value, never shown
UNKNOWN_TEXT = "(known after apply)"  #: a value a provider computes during the update
