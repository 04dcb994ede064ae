"""Results as a step reports them: checked, numbered, cut, batched."""

from __future__ import annotations

import math
import threading

import pytest

from shared.messages import MAX_RESULTS_PER_MESSAGE
from shared.models.api import MAX_TEST_MESSAGE, MAX_TEST_NAME
from shared.states import TestStatus
from worker.results import MAX_BATCH_BYTES, TRUNCATED, ResultBuffer, cut, make_result


def test_cut_marks_what_it_cuts() -> None:
    assert cut("short", 10) == "short"
    long = "x" * 20_000
    cut_text = cut(long, MAX_TEST_MESSAGE)
    assert len(cut_text) == MAX_TEST_MESSAGE
    assert cut_text.endswith(TRUNCATED)


def test_long_message_and_name_are_cut_not_refused() -> None:
    result = make_result(0, "n" * 1000, "failed", message="m" * 50_000)
    assert len(result.name) == MAX_TEST_NAME
    assert result.message is not None and len(result.message) == MAX_TEST_MESSAGE
    assert result.message.endswith(" [truncated]")
    assert result.status is TestStatus.FAILED


def test_exactly_at_the_limit_is_kept_whole() -> None:
    result = make_result(0, "n", "passed", message="m" * MAX_TEST_MESSAGE)
    assert result.message == "m" * MAX_TEST_MESSAGE


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": "", "status": "passed"}, "name"),
        ({"name": "a", "status": "green"}, "unknown test status"),
        ({"name": "a", "status": "passed", "duration_ms": -1}, "duration_ms"),
        ({"name": "a", "status": "passed", "duration_ms": math.inf}, "duration_ms"),
        ({"name": "a", "status": "passed", "metrics": {"acc": math.nan}}, "finite"),
        ({"name": "a", "status": "passed", "metrics": {"acc": "high"}}, "number"),
        ({"name": "a", "status": "passed", "metrics": {"acc": True}}, "number"),
        ({"name": "a", "status": "passed", "metrics": {"k" * 201: 1.0}}, "metric names"),
        ({"name": "a", "status": "passed", "metrics": {str(i): 1.0 for i in range(201)}}, "at most"),
    ],
)
def test_unstorable_results_are_refused_where_reported(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_result(0, **fields)  # type: ignore[arg-type]


def test_seq_is_report_order_and_batches_are_bounded() -> None:
    woken: list[int] = []
    buffer = ResultBuffer(on_full=lambda: woken.append(1))
    for i in range(2_500):
        buffer.add(name=f"t{i}", status="passed")
    assert buffer.count == 2_500
    assert woken  # a full batch wakes the sender
    batches = []
    while batch := buffer.take():
        batches.append(batch)
    assert [len(b) for b in batches] == [MAX_RESULTS_PER_MESSAGE, MAX_RESULTS_PER_MESSAGE, 500]
    assert [r.seq for b in batches for r in b] == list(range(2_500))


def test_batches_stay_under_the_byte_limit() -> None:
    buffer = ResultBuffer()
    for i in range(80):  # about 20 KB each
        buffer.add(name=f"t{i}", status="failed", message="é" * MAX_TEST_MESSAGE)
    batch = buffer.take()
    assert 0 < len(batch) < 80
    assert sum(len(r.model_dump_json().encode()) for r in batch) <= MAX_BATCH_BYTES


def test_closed_buffer_drops_late_results() -> None:
    buffer = ResultBuffer()
    assert buffer.add(name="a", status="passed")
    buffer.close()
    assert not buffer.add(name="late", status="passed")
    assert buffer.count == 1
    assert buffer.dropped == 1


def test_reporting_from_threads_numbers_every_result_once() -> None:
    buffer = ResultBuffer()

    def report(k: int) -> None:
        for i in range(500):
            buffer.add(name=f"{k}-{i}", status="passed")

    threads = [threading.Thread(target=report, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seqs = [r.seq for r in buffer.pending()]
    assert seqs == list(range(4_000))
    assert len({r.name for r in buffer.pending()}) == 4_000
