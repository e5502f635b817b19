"""The real-engine test layer: the Pulumi CLI built from Go modules runs the program (make test-engine)."""
