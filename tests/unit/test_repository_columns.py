"""The orchestrator writes a batch in one statement that takes one array per column: the names the
repository sends must be the columns of each unnest() in the statement, in its order
(loaded_status is what `expected` guards on), and the outbox's arrays those of its insert."""

from __future__ import annotations

import re

from orchestrator.repository import RUN_COLUMNS, STEP_COLUMNS, Q, columns
from shared import outbox
from shared.outbox import Outgoing

EVENT_COLUMNS = ("run_id", "runseq", "event_id", "type", "body")


def unnests(sql: str) -> list[list[str]]:
    """The parameters of each unnest(), in the statement's order."""
    return [[f"${n}" for n in re.findall(r"\$(\d+)", args)] for args in re.findall(r"unnest\(([^)]*)\)", sql)]


def aliases(sql: str) -> list[list[str]]:
    return [[name.strip() for name in found.split(",")] for found in re.findall(r"\)\s+AS u\(([^)]*)\)", sql)]


def inserted(sql: str, table: str) -> list[str]:
    found = re.search(rf"INSERT INTO {table} \(([^)]*)\)", sql)
    assert found is not None, sql
    return [name.strip() for name in found.group(1).split(",")]


def test_the_updates_arrays_are_the_statements_columns_in_order() -> None:
    expected = [
        ["expected" if name == "loaded_status" else name for name in names]
        for names in (STEP_COLUMNS, RUN_COLUMNS)
    ]
    assert aliases(Q.write_changes) == expected


def test_every_array_is_one_parameter_in_sequence() -> None:
    steps, runs, events, messages = unnests(Q.write_changes)
    assert [len(steps), len(runs), len(events)] == [len(STEP_COLUMNS), len(RUN_COLUMNS), len(EVENT_COLUMNS)]
    assert len(messages) == len(outbox.columns([]))
    assert steps + runs + events + messages == [
        f"${n}" for n in range(1, 1 + len(steps + runs + events + messages))
    ]


def test_the_inserts_take_the_columns_sent() -> None:
    assert inserted(Q.write_changes, "run_events") == list(EVENT_COLUMNS)
    assert inserted(Q.write_changes, "outbox") == inserted(outbox.Q.insert, "outbox")
    assert len(unnests(outbox.Q.insert)[0]) == len(outbox.columns([]))


def test_outbox_columns_follow_the_rows() -> None:
    first = Outgoing(
        "modelruns.results", "acme.run.started", b"{}", "m1", False, headers={"traceparent": "t"}
    )
    second = Outgoing("modelruns.commands", "run.cancel", b"[]", "m2", True)
    exchange, key, body, content_type, message_id, mandatory, at, headers = outbox.columns([first, second])
    assert exchange == ["modelruns.results", "modelruns.commands"]
    assert key == ["acme.run.started", "run.cancel"]
    assert body == [b"{}", b"[]"]
    assert content_type == ["application/json", "application/json"]
    assert message_id == ["m1", "m2"]
    assert mandatory == [False, True]
    assert at == [first.available_at, second.available_at]
    # A row without its own context takes the writer's: none here, as no span is recording.
    assert headers == [{"traceparent": "t"}, {}]


def test_columns_are_one_array_per_name_in_row_order() -> None:
    class Row:
        def __init__(self, a: int, b: str) -> None:
            self.a, self.b = a, b

    assert columns([Row(1, "x"), Row(2, "y")], ("b", "a")) == [["x", "y"], [1, 2]]
    assert columns([], ("a",)) == [[]]
