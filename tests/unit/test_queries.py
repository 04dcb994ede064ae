"""The named-SQL loader, and every named-SQL file of the project parsed by it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.db import queries
from shared.db.queries import Queries, parse

ROOT = Path(__file__).resolve().parents[2]
_STRING = re.compile(r"'(?:[^']|'')*'")


def test_names_and_bodies() -> None:
    text = """-- The file's own comment, before any statement.

-- name: get_run
-- Why this statement exists: a comment inside it is dropped.
SELECT id, status
FROM runs
WHERE id = $1;

-- name: list_runs
SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT $1;
-- name:   insert_run_2
INSERT INTO runs (id) VALUES ($1)
"""
    assert parse(text) == {
        "get_run": "SELECT id, status\nFROM runs\nWHERE id = $1",
        "list_runs": "SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT $1",
        "insert_run_2": "INSERT INTO runs (id) VALUES ($1)",
    }


def test_order_of_definition_is_kept() -> None:
    assert list(parse("-- name: b\nSELECT 2;\n-- name: a\nSELECT 1;")) == ["b", "a"]


def test_trailing_comment_and_semicolon() -> None:
    assert parse("-- name: x\nSELECT 1;\n-- trailing note\n\n") == {"x": "SELECT 1"}


def test_inline_comments_and_strings_are_kept() -> None:
    body = "SELECT '-- not a comment', 1 -- why\nFROM t"
    assert parse(f"-- name: x\n{body}\n") == {"x": body}


def test_indented_comment_lines_are_dropped() -> None:
    assert parse("-- name: x\nSELECT 1\n    -- why\nFROM t") == {"x": "SELECT 1\nFROM t"}


def test_crlf_files() -> None:
    assert parse("-- name: x\r\nSELECT 1;\r\n-- name: y\r\nSELECT 2;\r\n") == {
        "x": "SELECT 1",
        "y": "SELECT 2",
    }


def test_no_statements() -> None:
    assert parse("") == {}
    assert parse("-- only a comment\n\n") == {}


def test_duplicates_are_refused() -> None:
    with pytest.raises(ValueError, match="'a' defined twice"):
        parse("-- name: a\nSELECT 1;\n-- name: b\nSELECT 2;\n-- name: a\nSELECT 3;")


@pytest.mark.parametrize(
    "line",
    [
        "-- name: GetRun",
        "-- name: get-run",
        "-- name: 1run",
        "-- name: get run",
        "-- Name: get_run",
        "--name : get_run",
        "-- name: get_run -- note",
        "  -- name: get_run",
        "-- name:",
    ],
)
def test_malformed_name_lines_are_refused(line: str) -> None:
    # Taken as a comment, such a line would silently merge its SQL into the statement above.
    with pytest.raises(ValueError, match="malformed name line"):
        parse(f"-- name: first\nSELECT 1;\n{line}\nSELECT 2;")


def test_sql_before_the_first_name_is_refused() -> None:
    with pytest.raises(ValueError, match="before the first"):
        parse("SELECT 0;\n-- name: a\nSELECT 1;")


def test_an_empty_statement_is_refused() -> None:
    with pytest.raises(ValueError, match="'a' has no statement"):
        parse("-- name: a\n-- only a comment\n;\n-- name: b\nSELECT 1;")


def test_queries_attributes() -> None:
    q = Queries(parse("-- name: b\nSELECT 2;\n-- name: a\nSELECT 1;"))
    assert q.a == "SELECT 1"
    assert q.b == "SELECT 2"
    assert q.names() == ["a", "b"]
    with pytest.raises(AttributeError, match="no query named 'c'"):
        _ = q.c


def test_load_reads_package_files() -> None:
    q = queries.load("shared.db", "migrate.sql")
    assert {"lock", "unlock", "create_ledger", "applied", "record", "database_exists"} <= set(q.names())
    assert "$1" in q.database_exists


def named_sql_files() -> list[Path]:
    found = [
        path
        for top in ("gateway", "orchestrator", "shared")
        for path in sorted((ROOT / top).rglob("*.sql"))
        if path.name != "schema.sql" and "migrations" not in path.relative_to(ROOT).parts
    ]
    return found + sorted((ROOT / "tests").rglob("*.sql"))


def test_named_sql_files_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in named_sql_files()}
    assert {"shared/db/migrate.sql", "shared/outbox.sql", "tests/integration/catalog.sql"} <= names


@pytest.mark.parametrize("path", named_sql_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_named_sql_file_parses(path: Path) -> None:
    statements = parse(path.read_text(encoding="utf-8"))
    assert statements, f"{path} defines no statement"
    for name, sql in statements.items():
        assert sql.strip(), name
        # One statement each: asyncpg prepares them, and a prepared statement holds one command.
        assert ";" not in _STRING.sub("''", sql), f"{path.name}: {name} holds more than one statement"


@pytest.mark.parametrize("path", named_sql_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_named_sql_file_is_loadable_as_package_data(path: Path) -> None:
    # What the services load at run time: the file through importlib.resources, by package.
    package = ".".join(path.parent.relative_to(ROOT).parts)
    assert queries.load(package, path.name).names() == sorted(parse(path.read_text(encoding="utf-8")))
