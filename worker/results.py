"""Test results a step reports: checked and numbered where they are reported, then taken in
batches small enough for one message."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from shared.messages import MAX_RESULTS_PER_MESSAGE, ReportedResult
from shared.models.api import MAX_TEST_MESSAGE, MAX_TEST_NAME
from shared.states import TestStatus

TRUNCATED = " [truncated]"
MAX_METRICS = 200
MAX_METRIC_NAME = 200
# The broker and the orchestrator refuse messages over a few MiB; one result is at most ~210 KB.
MAX_BATCH_BYTES = 1024 * 1024


def cut(text: str, limit: int) -> str:
    """`text` within `limit` characters, visibly marked when it had to be cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def make_result(
    seq: int,
    name: str,
    status: TestStatus | str,
    duration_ms: float | None = None,
    message: str | None = None,
    metrics: Mapping[str, float] | None = None,
) -> ReportedResult:
    """A result as the orchestrator accepts it, or ValueError for what no cut can repair: the
    step's code gets the error where it made the mistake, not a lost batch later."""
    if not isinstance(name, str) or not name:
        raise ValueError("a test result needs a non-empty name")
    try:
        status = TestStatus(status)
    except ValueError:
        raise ValueError(
            f"unknown test status {status!r}; expected one of {', '.join(s.value for s in TestStatus)}"
        ) from None
    if duration_ms is not None:
        duration_ms = float(duration_ms)
        if not math.isfinite(duration_ms) or duration_ms < 0:
            raise ValueError(f"duration_ms must be a finite number >= 0, not {duration_ms!r}")
    checked: dict[str, float] | None = None
    if metrics is not None:
        if len(metrics) > MAX_METRICS:
            raise ValueError(f"at most {MAX_METRICS} metrics per test result")
        checked = {}
        for key, value in metrics.items():
            if not isinstance(key, str) or len(key) > MAX_METRIC_NAME:
                raise ValueError(f"metric names are strings of at most {MAX_METRIC_NAME} characters")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"metric {key!r} must be a number, not {type(value).__name__}")
            # JSON has no NaN or infinity: one would poison the whole batch.
            if not math.isfinite(value):
                raise ValueError(f"metric {key!r} must be finite, not {value!r}")
            checked[key] = float(value)
    return ReportedResult(
        seq=seq,
        name=cut(name, MAX_TEST_NAME),
        status=status,
        duration_ms=duration_ms,
        message=None if message is None else cut(str(message), MAX_TEST_MESSAGE),
        metrics=checked,
    )


def _size(result: ReportedResult) -> int:
    return len(result.model_dump_json().encode())


class ResultBuffer:
    """Numbers results in report order and holds them until taken. Safe to use from any thread."""

    def __init__(self, on_full: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._pending: deque[ReportedResult] = deque()
        self._count = 0
        self._closed = False
        self._on_full = on_full
        self.dropped = 0

    @property
    def count(self) -> int:
        """Results accepted so far (the attempt's `results_count`)."""
        return self._count

    def add(self, **fields: Any) -> bool:
        """Record one result; False when the attempt is over and the result is dropped."""
        with self._lock:
            if self._closed:
                self.dropped += 1
                return False
            result = make_result(self._count, **fields)
            self._pending.append(result)
            self._count += 1
            full = len(self._pending) >= MAX_RESULTS_PER_MESSAGE
        if full and self._on_full is not None:
            self._on_full()
        return True

    def close(self) -> None:
        """Refuse further results: the attempt's finish is the last word."""
        with self._lock:
            self._closed = True

    def pending(self) -> list[ReportedResult]:
        with self._lock:
            return list(self._pending)

    def take(self) -> list[ReportedResult]:
        """Remove and return one batch: at most MAX_RESULTS_PER_MESSAGE results and MAX_BATCH_BYTES."""
        batch: list[ReportedResult] = []
        size = 0
        with self._lock:
            while self._pending and len(batch) < MAX_RESULTS_PER_MESSAGE:
                result = self._pending[0]
                size += _size(result)
                if batch and size > MAX_BATCH_BYTES:
                    break
                batch.append(self._pending.popleft())
        return batch
