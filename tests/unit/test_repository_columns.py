"""The orchestrator's multi-row UPDATEs take one array per column: the names the repository sends
must be the columns of the statement's unnest(), in its order (loaded_status is what `expected`
guards on)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from orchestrator.repository import RUN_COLUMNS, STEP_COLUMNS, Q, columns


def unnest_columns(sql: str) -> list[str]:
    found = re.search(r"\)\s+AS u\(([^)]*)\)", sql)
    assert found is not None, sql
    return [name.strip() for name in found.group(1).split(",")]


@pytest.mark.parametrize(("sql", "names"), [(Q.update_steps, STEP_COLUMNS), (Q.update_runs, RUN_COLUMNS)])
def test_the_arrays_sent_are_the_statements_columns_in_order(sql: str, names: Sequence[str]) -> None:
    expected = ["expected" if name == "loaded_status" else name for name in names]
    assert unnest_columns(sql) == expected
    assert max(int(n) for n in re.findall(r"\$(\d+)", sql)) == len(names)


def test_columns_are_one_array_per_name_in_row_order() -> None:
    class Row:
        def __init__(self, a: int, b: str) -> None:
            self.a, self.b = a, b

    assert columns([Row(1, "x"), Row(2, "y")], ("b", "a")) == [["x", "y"], [1, 2]]
    assert columns([], ("a",)) == [[]]
