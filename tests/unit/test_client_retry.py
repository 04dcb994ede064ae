"""When the client tries again: backoff bounds, Retry-After, giving up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelruns_client.retry import NEVER, RETRY_STATUSES, Retry, parse_retry_after

NOW = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)


@given(
    attempts=st.integers(1, 40),
    backoff=st.floats(0.001, 5),
    spread=st.floats(1, 100),
    failures=st.integers(1, 60),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_backoff_stays_in_the_upper_half_of_a_capped_doubling(
    attempts: int, backoff: float, spread: float, failures: int, draw: float
) -> None:
    retry = Retry(attempts=attempts, backoff=backoff, max_backoff=backoff * spread)
    delay = retry.delay(failures, random=lambda: draw)
    if failures >= attempts:
        assert delay is None
        return
    base = min(retry.max_backoff, backoff * 2 ** (failures - 1))
    assert delay is not None and base / 2 <= delay <= base


@given(retry_after=st.floats(0, 60), failures=st.integers(1, 4), draw=st.floats(0, 1, exclude_max=True))
def test_retry_after_is_waited_at_least_and_jittered_a_little(
    retry_after: float, failures: int, draw: float
) -> None:
    delay = Retry().delay(failures, retry_after, random=lambda: draw)
    assert delay is not None and retry_after <= delay <= retry_after + 0.5


def test_giving_up() -> None:
    assert Retry(max_retry_after=10).delay(1, 11) is None  # the server asks for longer than we wait
    assert Retry(attempts=3).delay(3) is None
    assert NEVER.delay(1) is None
    assert Retry().delay(1, 0.0) is not None
    with pytest.raises(ValueError):
        Retry().delay(0)


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"backoff": 0}, {"backoff": 2, "max_backoff": 1}, {"max_retry_after": -1}]
)
def test_invalid_policies(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_what_is_retried() -> None:
    assert {429, 500, 502, 503, 504} == RETRY_STATUSES


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("1", 1.0),
        (" 120 ", 120.0),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
        ("Thu, 03 Dec 2026 10:00:05 GMT", 5.0),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds
