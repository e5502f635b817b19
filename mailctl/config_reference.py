"""The generated parts of Pulumi.yaml and the README: the config block and reference, and the synopsis.

`SettingsSchema` (components/settings/schema.py) is the one home of every key's type, default and
description, and mailctl's parser (`mailctl.cli.build_parser`) the one home of its commands and options.
`make docs` (`mailctl config-reference --write`) writes Pulumi.yaml's config block, the README's config
reference and the README's synopsis of the operator commands from them; a test fails when either file
differs from what it would write, so the CLI's defaults, the program's and the documented ones are the
same by construction, and so are the options mailctl takes and the ones the README shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from components.settings.schema import UNTYPED_KEYS, PROJECT, SECTIONS, UNDECLARED_KEYS, SettingsSchema, is_secret
from mailctl.cli import build_parser

SCHEMA = "components/settings/schema.py"
BEGIN = f"<!-- config-reference:begin (generated from {SCHEMA} by `make docs`) -->"
END = "<!-- config-reference:end -->"
SYNOPSIS_BEGIN = "<!-- mailctl-synopsis:begin (generated from mailctl/cli.py by `make docs`) -->"
SYNOPSIS_END = "<!-- mailctl-synopsis:end -->"
SYNOPSIS_PROG = ".venv/bin/mailctl"
SYNOPSIS_WIDTH = 107  # a synopsis line, its code block's indent included, ends by this column
# Pulumi.yaml is written from this line to its end; the project's name and runtime above it are by hand.
PULUMI_BEGIN = f"# Written by `make docs` from {SCHEMA}, from here to the end: change a key there.\n"
RULE_WIDTH = 103  # the section headings' rules end in this column


def _pulumi_type(info: FieldInfo) -> str:
    if is_secret(info):
        return "string"
    annotation = info.annotation
    if typing.get_origin(annotation) is list:
        return "array"
    return {bool: "boolean", int: "integer"}.get(annotation, "string")


def _declaration(key: str, info: FieldInfo) -> dict[str, Any]:
    """A key as Pulumi.yaml declares it. A secret has no default: the CLI would refuse a plaintext one; a
    list of strings and objects has no type, which Pulumi has no word for (UNTYPED_KEYS)."""
    declaration: dict[str, Any] = {} if key in UNTYPED_KEYS else {"type": _pulumi_type(info)}
    if declaration.get("type") == "array":
        declaration["items"] = {"type": "string"}
    if is_secret(info):
        declaration["secret"] = True
    declaration["description"] = info.description
    if not info.is_required() and not is_secret(info):
        default = info.get_default(call_default_factory=True)
        if dataclasses.is_dataclass(default):
            default = dataclasses.asdict(default)
        declaration["default"] = list(default) if isinstance(default, tuple) else default
    return declaration


def declarations(undeclared: bool = False) -> dict[str, dict[str, Any]]:
    """Config key -> its declaration, in the schema's order: the declared keys, or (`undeclared`) the
    optional secrets Pulumi cannot declare (UNDECLARED_KEYS)."""
    keys = {to_camel(name): info for name, info in SettingsSchema.model_fields.items()}
    return {key: _declaration(key, info) for key, info in keys.items() if (key in UNDECLARED_KEYS) == undeclared}


# --- Pulumi.yaml ----------------------------------------------------------------------------------


def yaml_scalar(value: Any) -> str:
    """A YAML scalar every YAML reader takes for this value: plain where it reads back the same (and
    cannot be taken for a number or a date), else double-quoted."""
    if isinstance(value, (bool, int)):
        return json.dumps(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    try:
        plain_reads_back = yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain_reads_back = False
    if plain_reads_back and value.strip() == value and re.match(r"[A-Za-z]", value):
        return value
    return json.dumps(value)


def render_pulumi_config() -> str:
    """The `config:` block of Pulumi.yaml, with its heading line."""
    lines = [PULUMI_BEGIN.rstrip("\n"), "config:"]
    for key, declaration in declarations().items():
        if key in SECTIONS:
            heading = f"  # --- {SECTIONS[key]} "
            lines.append(heading + "-" * (RULE_WIDTH - len(heading)))
        lines.append(f"  {key}:")
        for field, value in declaration.items():
            if field == "items":
                lines += ["    items:", f"      type: {value['type']}"]
            else:
                lines.append(f"    {field}: {yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


def updated_pulumi_yaml(text: str) -> str:
    """Pulumi.yaml's text with its config block written from the schema."""
    return text[: text.index(PULUMI_BEGIN)] + render_pulumi_config()


# --- README.md: the config reference --------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default(declaration: dict[str, Any]) -> str:
    if declaration.get("secret"):
        return "**required, secret**"
    if "default" not in declaration:
        return "**required**"
    value = declaration["default"]
    if value == "":
        return '`""`'
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _type(declaration: dict[str, Any]) -> str:
    if "type" not in declaration:
        return "object" if isinstance(declaration.get("default"), dict) else "array of string or object"
    if declaration["type"] == "array":
        return f"array of {declaration['items']['type']}"
    return declaration["type"]


def render_config_reference() -> str:
    """The README's block: every declared key, then the keys read but not declared."""
    lines = [BEGIN, "", "| key | type | default | description |", "|---|---|---|---|"]
    for key, declaration in declarations().items():
        lines.append(f"| `{PROJECT}:{key}` | {_type(declaration)} | {_default(declaration)} | "
                     f"{_cell(declaration['description'])} |")
    lines += [
        "",
        "These keys are read but not declared above, because Pulumi cannot declare an optional secret (a",
        "declared key without a default must be set in every stack, and a secret cannot carry a default):",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for key, declaration in declarations(undeclared=True).items():
        lines.append(f"| `{PROJECT}:{key}` | {_type(declaration)}, secret | none | {_cell(declaration['description'])} |")
    lines += ["", END]
    return "\n".join(lines)


# --- README.md: the operator commands' synopsis ---------------------------------------------------
# argparse has no public way to walk a parser: these read its `_actions` and `_mutually_exclusive_groups`,
# which its own usage formatter reads too.


def _usage_word(action: argparse.Action) -> str:
    """An argument as its usage shows it: `--json`, `--stack STACK`, `PLAN.json` (the first option string,
    as argparse's own usage gives it)."""
    value = action.metavar or action.dest.upper()
    if not action.option_strings:
        return value
    flag = action.option_strings[0]
    return flag if action.nargs == 0 else f"{flag} {value}"


def _usage_words(parser: argparse.ArgumentParser) -> list[str]:
    """A command's arguments, positionals first (as an operator types them), then the options in the
    parser's order; a mutually exclusive group at its first option, `[a | b]` (or `(a | b)` if required)."""
    groups = {id(action): group for group in parser._mutually_exclusive_groups for action in group._group_actions}
    positionals, options, done = [], [], set()
    for action in parser._actions:
        if "-h" in action.option_strings or isinstance(action.choices, dict):
            continue  # help, and the subcommands, which get lines of their own
        if not action.option_strings:
            positionals.append(_usage_word(action))
            continue
        group = groups.get(id(action))
        if group is None:
            word = _usage_word(action)
            options.append(word if action.required else f"[{word}]")
        elif id(group) not in done:
            done.add(id(group))
            inner = " | ".join(_usage_word(member) for member in group._group_actions)
            options.append(f"({inner})" if group.required else f"[{inner}]")
    return positionals + options


def _commands(parser: argparse.ArgumentParser,
              words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(the words that name a command, its parser) for every command that takes no further subcommand."""
    subcommands = next((action.choices for action in parser._actions if isinstance(action.choices, dict)), None)
    if subcommands is None:
        yield words, parser
        return
    for name, child in subcommands.items():
        yield from _commands(child, (*words, name))


def _usage_lines(prefix: str, words: list[str]) -> list[str]:
    """`prefix word word …` wrapped at SYNOPSIS_WIDTH, each further line starting under the first word."""
    lines, line = [], prefix
    for word in words:
        if len(line) + 1 + len(word) > SYNOPSIS_WIDTH and line.strip() != prefix.strip():
            lines.append(line)
            line = " " * len(prefix)
        line += " " + word
    return lines + [line]


def render_synopsis(parser: argparse.ArgumentParser | None = None) -> str:
    """The README's block: mailctl's own options, then a usage of every command with all its options."""
    parser = parser or build_parser()
    lines = [SYNOPSIS_BEGIN, ""]
    lines += _usage_lines(f"    {SYNOPSIS_PROG}", _usage_words(parser) + ["COMMAND", "..."])
    for words, command in _commands(parser):
        lines += _usage_lines(f"    {SYNOPSIS_PROG} {' '.join(words)}", _usage_words(command))
    lines += ["", SYNOPSIS_END]
    return "\n".join(lines)


def _replace_block(text: str, begin: str, end: str, block: str) -> str:
    """text with the block from the marker `begin` (its words before " (") to `end` replaced by block."""
    start, stop = text.index(begin.split(" (", 1)[0]), text.index(end) + len(end)
    return text[:start] + block + text[stop:]


def updated_readme(text: str) -> str:
    """README.md's text with its generated blocks written from the schema and from mailctl's parser."""
    text = _replace_block(text, BEGIN, END, render_config_reference())
    return _replace_block(text, SYNOPSIS_BEGIN, SYNOPSIS_END, render_synopsis())


# --- `make docs` ----------------------------------------------------------------------------------

WRITERS = {"Pulumi.yaml": updated_pulumi_yaml, "README.md": updated_readme}


def written_files(project_dir: Path) -> dict[Path, str]:
    """Each file `make docs` writes, with the text it would hold."""
    return {project_dir / name: update((project_dir / name).read_text()) for name, update in WRITERS.items()}


def write(project_dir: Path) -> list[Path]:
    """Write Pulumi.yaml's config block and the README's reference and synopsis; the files that changed."""
    changed = []
    for path, text in written_files(project_dir).items():
        if path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed
