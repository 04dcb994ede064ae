"""Named SQL: each service keeps its statements in one `.sql` file, `-- name: x` before each."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
# A line meant as a name that `_NAME` does not take would otherwise merge into the statement above.
_LOOSE_NAME = re.compile(r"^--\s*name\s*:", re.IGNORECASE)


class Queries:
    """The statements of one file, as attributes: `queries.get_run`."""

    def __init__(self, statements: dict[str, str]) -> None:
        self._statements = statements

    def __getattr__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._statements)


def parse(text: str) -> dict[str, str]:
    statements: dict[str, str] = {}
    for line in text.splitlines():
        if _LOOSE_NAME.match(line.lstrip()) and not _NAME.fullmatch(line):
            raise ValueError(
                f"malformed name line {line.strip()!r}: write '-- name: lower_snake_case' at the line's start"
            )
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    for line in parts[0].splitlines():
        if line.strip() and not line.lstrip().startswith("--"):
            raise ValueError(f"SQL before the first '-- name:' line: {line.strip()!r}")
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in statements:
            raise ValueError(f"query {name!r} defined twice")
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        statements[name] = "\n".join(lines).strip().rstrip(";").rstrip()
        if not statements[name]:
            raise ValueError(f"query {name!r} has no statement")
    return statements


def load(package: str, filename: str = "queries.sql") -> Queries:
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return Queries(parse(text))
