"""The shell template engine every install stage is rendered with, the `Stage` it renders into, and the
command line and standard input a stage runs with on its host.

Every script is a header of shell variables rendered from plain values (quoted with shlex) followed by
fixed shell text, so the same inputs give the same bytes. That text lives in `.sh` templates under
`shell/` (`lib/` shared by every stage, `common/` the stages of both mail stacks, `native/`, `mailcow/` and
`gateway/` one per stage): what follows a template's `# ---- rendered below ----` line is its text, the
lines above it (what the template is, the header variables it uses) are for readers and shellcheck only,
and a line `# ---- include lib/<name>.sh ----` stands for that template's text. Each template passes
shellcheck on its own, as it is: shellcheck takes an unassigned UPPER_CASE name for one set outside the
file (here: by the header or lib/secrets.sh), and a template using a lowercase variable another one sets
(`changed`, from lib/prelude.sh) says so with a targeted `# shellcheck disable=SC2154`.

Secrets never appear in a script or command line: they arrive on standard input as `NAME=base64` lines
(`render_secrets_stdin`), are read into variables and written only to root-owned files. A file a stage
needs on the host (a program of components/vm_programs) travels the same way, with its sha256 in the
header. Every stage converges: files are rewritten only when their content differs and services restart
only then, so a re-run changes nothing.
"""

from __future__ import annotations

import base64
import functools
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

SHELL = resources.files(__package__).joinpath("shell")  #: the templates' directory
CUT = "# ---- rendered below ----\n"
INCLUDE = re.compile(r"^# ---- include (lib/[\w.-]+\.sh) ----\n", re.MULTILINE)


@functools.cache
def template(path: str) -> str:
    """The text `shell/<path>` renders: what follows its preamble, each include replaced by that template's text."""
    _, cut, text = SHELL.joinpath(*path.split("/")).read_text(encoding="utf-8").partition(CUT)
    if not cut:
        raise ValueError(f"shell/{path} has no line {CUT.strip()!r}")
    return INCLUDE.sub(lambda include: template(include[1]), text)


# The templates that open a stage's script, after its header: strict mode; strict mode and put_file for the
# stages that write files; the reader of the stage's stdin (the header's SECRETS names what it takes).
STRICT = ("lib/strict.sh",)
PRELUDE = (*STRICT, "lib/prelude.sh")
READ_SECRETS = ("lib/secrets.sh",)
SECRETS_READER = template("lib/secrets.sh")


def script_header(stage: str, host: str, **variables: str | tuple[str, ...]) -> str:
    lines = ["#!/usr/bin/env bash", f"# ceres-mail {stage} stage for {host}; rendered by the stack, re-runs converge.",
             f"STAGE={stage}"]
    for name, value in variables.items():
        if any(c in "".join(value) for c in "$`"):
            lines.append("# shellcheck disable=SC2016  # literal text, not an expansion")
        if isinstance(value, tuple):
            lines.append(f"{name}=({' '.join(shlex.quote(v) for v in value)})")
        else:
            lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def render_script(stage: str, host: str, templates: Iterable[str], **variables: str | tuple[str, ...]) -> str:
    """A stage's script: its header of quoted values, then the text of its templates in order."""
    return script_header(stage, host, **variables) + "".join(template(path) for path in templates)


def render_secrets_stdin(secrets: dict[str, str]) -> str:
    """A stage's standard input: one `NAME=base64(value)` line per secret, in a stable order."""
    return "".join(f"{name}={base64.b64encode(value.encode()).decode()}\n" for name, value in sorted(secrets.items()))


def render_install_command(script: str, stage: str, user: str = "") -> str:
    """The remote command line: the script as an argument, stdin left for secrets, run as root. A `user` of
    root (many VPS images have no sudo) runs it directly; anyone else through `sudo -n`."""
    run = f"bash -c {shlex.quote(script)} ceres-mail-{stage}"
    return run if user == "root" else f"sudo -n {run}"


@dataclass(frozen=True)
class Stage:
    """One remote install command: its name, its script, and what it reads from stdin.

    `files` are (variable name, text) of files the stage needs on the host: not secrets, but they travel on
    stdin with the secrets (the header's SECRETS names them too) rather than as a long argument; the header
    carries each one's sha256, so a changed file still changes the script and re-runs the stage.
    """

    name: str
    script: str
    secrets: tuple[str, ...] = ()  #: names of the secrets on stdin
    files: tuple[tuple[str, str], ...] = ()
    #: host names the stage asks an ACME server to certify (http-01): it must wait until they resolve
    certifies: tuple[str, ...] = ()
    #: resources outside the server the stage waits for, by the name the platform gives them
    #: (MailServerArgs.waits_on): the VM's end of the gateway waits for the VPS's, "gateway-vps"
    after: tuple[str, ...] = ()
