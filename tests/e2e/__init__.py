"""The end-to-end layer: `pulumi up` of the whole program into the test internet (`make test-e2e`)."""
