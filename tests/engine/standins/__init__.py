"""Stand-in provider plugins for the tests: never shipped, never the product's providers.

The Pulumi engine runs the program with real plugins where they can be built here (kubernetes). The
plugins of random, tls, command, proxmoxve, cloudflare and keycloak are not served by any registry these
machines reach, so each is stood in for by a small plugin of our own (`pulumi-resource-<name>` on PATH),
speaking the engine's provider protocol:

- it knows the property names of every resource type the program uses, read from the pinned Python
  SDK's `*Args` classes, and refuses an unknown property as the real provider's Check would;
- it computes the outputs the program reads (real keys, real random passwords, ids);
- it keeps what it created in a "world" folder (the cloud's side of the story), answers Read for imports
  and refreshes from it, and diffs into update or replace as the real provider does where the program
  relies on the difference.
"""
