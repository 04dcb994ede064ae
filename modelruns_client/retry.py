"""When a failed call is tried again: 429 and 5xx answers and lost connections, after the server's
`Retry-After` when it gives one, else after an exponential backoff with jitter."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Retry:
    """`attempts` tries in all (1: never retry). Backoff doubles from `backoff` up to `max_backoff`,
    drawn from its upper half so that clients failing together do not retry together. A server
    asking to wait longer than `max_retry_after` is taken at its word: the error is raised."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 10.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff <= 0 or self.max_backoff < self.backoff:
            raise ValueError("need 0 < backoff <= max_backoff")
        if self.max_retry_after < 0:
            raise ValueError("max_retry_after must not be negative")

    def delay(
        self, failures: int, retry_after: float | None = None, random: Callable[[], float] = _random.random
    ) -> float | None:
        """Seconds to wait after the `failures`-th failed try in a row; None: give up."""
        if failures < 1:
            raise ValueError("failures count from 1")
        if failures >= self.attempts:
            return None
        base = min(self.max_backoff, self.backoff * 2.0 ** min(failures - 1, 32))
        if retry_after is None:
            return base / 2 + random() * base / 2
        if retry_after > self.max_retry_after:
            return None
        # At least what the server asked; the jitter spreads the clients it told the same.
        return max(retry_after, 0.0) + random() * min(base, 1.0) / 2


NEVER = Retry(attempts=1)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date. None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
