"""The README's config reference, generated from Pulumi.yaml so the two cannot drift.

`make docs` rewrites the block between the markers in README.md; a test fails when they differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailctl.stackfile import load_project

BEGIN = "<!-- config-reference:begin (generated from Pulumi.yaml by `make docs`) -->"
END = "<!-- config-reference:end -->"


def _default(declaration: dict[str, Any]) -> str:
    if declaration.get("secret"):
        return "**required, secret**"
    if "default" not in declaration:
        return "**required**"
    value = declaration["default"]
    if value == "":
        return '`""`'
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def render_config_reference(project_dir: Path) -> str:
    project = load_project(project_dir)
    lines = [
        BEGIN,
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for key, declaration in project["config"].items():
        type_ = declaration["type"]
        if type_ == "array":
            type_ = f"array of {declaration['items']['type']}"
        description = " ".join(declaration["description"].split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `{project['name']}:{key}` | {type_} | {_default(declaration)} | {description} |")
    lines += ["", END]
    return "\n".join(lines)


def update_readme(project_dir: Path) -> bool:
    """Rewrite the generated block of README.md; True when it changed."""
    readme = project_dir / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    updated = text[:start] + render_config_reference(project_dir) + text[end:]
    if updated != text:
        readme.write_text(updated)
    return updated != text
