"""docs/benchmarks.md is written by several commands; each owns its "## " sections and keeps the rest."""

from __future__ import annotations

import re
from pathlib import Path

_HEADING = re.compile(r"^## .*$", re.MULTILINE)


def split(document: str) -> tuple[str, dict[str, str]]:
    """The text before the first "## " heading, and each section by its heading line."""
    starts = [m.start() for m in _HEADING.finditer(document)]
    head = document[: starts[0]] if starts else document
    sections = {}
    for start, end in zip(starts, [*starts[1:], len(document)], strict=False):
        text = document[start:end]
        sections[text.split("\n", 1)[0]] = text.rstrip("\n") + "\n"
    return head, sections


def replace(document: str, section: str) -> str:
    """document with the section of section's heading replaced by section, or section appended."""
    head, sections = split(document)
    _, new = split(section)
    sections.update(new)
    return head.rstrip("\n") + "\n\n" + "\n".join(sections.values())


def keep_others(previous: str, page: str) -> str:
    """page followed by each section of previous whose heading page does not have."""
    _, old = split(previous)
    _, mine = split(page)
    kept = [text for heading, text in old.items() if heading not in mine]
    return "\n".join([page.rstrip("\n") + "\n", *kept])


def write(path: Path, section: str) -> None:
    """Put section into the Markdown file at path (created if missing), keeping its other sections."""
    document = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace(document, section))
