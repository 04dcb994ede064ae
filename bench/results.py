"""bench/RESULTS.md: one section per benchmark, each a table that every run appends a dated row to."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def cell(value: object) -> str:
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if text else " "


def add_row(text: str, section: str, row: Mapping[str, object]) -> str:
    """`text` with `row` appended to the table under `## {section}`; a missing section (or a
    section without a table) gets one with `row`'s keys as its header. Other sections are untouched."""
    heading = f"## {section}"
    header = "| " + " | ".join(cell(k) for k in row) + " |"
    line = "| " + " | ".join(cell(v) for v in row.values()) + " |"
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        body = text.rstrip("\n")
        prefix = body + "\n\n" if body else ""
        return prefix + "\n".join([heading, "", header, "|" + "---|" * len(row), line]) + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    table = [i for i in range(start + 1, end) if lines[i].startswith("|")]
    if table:
        at = table[-1] + 1
        new = [line]
    else:
        at = start + 1
        while at < end and not lines[at].strip():
            at += 1
        while at < end and lines[at].strip():
            at += 1  # after the section's opening paragraph
        new = ["", header, "|" + "---|" * len(row), line]
    return "\n".join([*lines[:at], *new, *lines[at:]]) + "\n"


def record(section: str, row: Mapping[str, object], path: Path = RESULTS) -> None:
    stamped = {"date (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), **row}
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(add_row(text, section, stamped), encoding="utf-8")
