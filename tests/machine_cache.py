"""The machine cache: where the test tools keep what they build or download, outside the clone.

Why: CI starts from a fresh clone on a machine that keeps its caches between runs, so anything kept inside
the clone (the test image, the apt cache, the wheels, actionlint) was built or downloaded again on every
run. Everything lives under one root instead, each entry in a folder named by a digest of the inputs that
make it, so a changed input makes a new entry rather than a stale hit:

    <root>/engine/<tool>-<version>/      the Pulumi CLI, the kubernetes provider, k3s (tests/engine/build)
    <root>/engine/standin-schemas/       the SDK inputs the stand-in providers check (tests/engine/standins)
    <root>/keycloak/<version>/           Keycloak, built once (tests/e2e/keycloak.py)
    <root>/testnet/images/<key>/         the Debian root filesystem the test hosts boot (tests/testnet/image.py)
    <root>/testnet/snapshots/<key>/      installed snapshots the worlds' hosts boot over (tests/testnet/snapshots.py)
    <root>/testnet/apt-cacher-ng/        Debian packages the test hosts installed (tests/testnet/aptproxy.py)
    <root>/wheels/<key>/                 the pinned wheels (make wheelhouse), for the offline fresh-clone test
    <root>/bin/actionlint-<version>/     actionlint (make tools)

The root is $CERES_MAIL_CACHE, else $XDG_CACHE_HOME/ceres-mail, else ~/.cache/ceres-mail (the Makefile
resolves it the same way). `make clean` keeps it; `make clean-cache` removes it. Each builder takes a file
lock in its entry, so concurrent runs build an entry once and the others wait for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent
TOOL_VERSIONS = Path(__file__).resolve().parent / "tool-versions.mk"
#: what the wheelhouse is made from: the pins (the tests' too), and pyproject.toml's build backend
WHEEL_INPUTS = ("requirements.txt", "requirements-dev.txt", "pyproject.toml")


def root() -> Path:
    """The machine cache's root (see the module docstring)."""
    explicit = os.environ.get("CERES_MAIL_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ceres-mail"


def digest(*parts: bytes | str, length: int = 16) -> str:
    """A short hex name for an entry made from `parts` (each one's length is hashed too: no two lists of
    parts share a digest by moving bytes from one part to the next)."""
    sha = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        sha.update(f"{len(data)}:".encode())
        sha.update(data)
    return sha.hexdigest()[:length]


def file_digest(*paths: Path, length: int = 16) -> str:
    """digest() of the contents of `paths`, in the order given."""
    return digest(*(path.read_bytes() for path in paths), length=length)


def wheelhouse() -> Path:
    """The folder of pinned wheels `make wheelhouse` fills, keyed by requirements.txt and pyproject.toml."""
    return root() / "wheels" / wheel_key()


def wheel_key() -> str:
    """The wheelhouse's key; the Makefile computes the same with `tests/machine_cache.py wheel-key`."""
    return file_digest(*(PROJECT_DIR / name for name in WHEEL_INPUTS))


def tool_version(name: str) -> str:
    """A version from tests/tool-versions.mk (`NAME_VERSION := value`)."""
    wanted = f"{name.upper()}_VERSION"
    for line in TOOL_VERSIONS.read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Z0-9_]+)\s*:?=\s*(\S+)\s*", line)
        if match and match.group(1) == wanted:
            return match.group(2)
    raise KeyError(f"{TOOL_VERSIONS} sets no {wanted}")


def actionlint() -> Path:
    """The actionlint binary `make tools` builds, by its pinned version."""
    version = tool_version("actionlint")
    return root() / "bin" / f"actionlint-{version}" / "actionlint"


@contextlib.contextmanager
def locked(path: Path, what: str, timeout: float, poll: float = 1.0, note_every: float = 15.0) -> Iterator[None]:
    """An exclusive flock on `path` (made if missing), waited for at most `timeout` seconds with a log line
    every `note_every` seconds naming `what` the holder is doing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        next_note = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} still locked after {timeout:g} s ({what})") from None
                if time.monotonic() >= next_note:
                    log.info("waiting for %s (another run: %s)", path, what)
                    next_note += note_every
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


if __name__ == "__main__":  # the Makefile's way to the same wheelhouse key
    import sys

    if sys.argv[1:] != ["wheel-key"]:
        sys.exit(f"usage: {sys.argv[0]} wheel-key")
    print(wheel_key())
