"""Pure helpers for the figures: percentiles, rates, and wrk's output."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; NaN when empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> str:
    """Seconds as milliseconds for a table cell."""
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.inf


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_LATENCY = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+(\d+(?:\.\d+)?)", re.MULTILINE)
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors:.*?timeout (\d+)")


def parse_wrk(output: str) -> tuple[float, dict[float, float], int]:
    """wrk --latency output as (requests/s, {percentile: seconds}, bad responses)."""
    found = _RPS.search(output)
    if found is None:
        raise ValueError(f"no Requests/sec line in wrk output: {output[-500:]!r}")
    latencies = {float(q): float(v) * _UNITS[unit] for q, v, unit in _LATENCY.findall(output)}
    bad = 0
    for non_2xx, timeouts in _ERRORS.findall(output):
        bad += int(non_2xx or 0) + int(timeouts or 0)
    return float(found.group(1)), latencies, bad
