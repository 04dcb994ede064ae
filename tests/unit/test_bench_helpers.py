"""The benchmark's pure helpers: percentiles, wrk's output, and RESULTS.md rows."""

from __future__ import annotations

import math

import pytest

from bench.profile import summarize
from bench.results import add_row
from bench.stats import ms, parse_wrk, percentile


def test_percentile_interpolates_between_ranks() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 25) == 2.0
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_ms_cells() -> None:
    assert ms(0.0123) == "12.3 ms"
    assert ms(1.5) == "1500 ms"
    assert ms(math.nan) == "n/a"


WRK = """Running 5s test @ http://127.0.0.1:8080/
  1 threads and 8 connections
  Latency Distribution
     50%  250.00us
     75%    1.10ms
     90%    2.05ms
     99%   12.40ms
  41234 requests in 5.00s, 6.1MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   8246.80
Transfer/sec:      1.22MB
"""


def test_parse_wrk() -> None:
    rps, latency, bad = parse_wrk(WRK)
    assert rps == 8246.80
    assert latency[50.0] == pytest.approx(250e-6)
    assert latency[99.0] == pytest.approx(0.0124)
    assert bad == 3
    with pytest.raises(ValueError):
        parse_wrk("nothing")


def test_add_row_creates_a_section_then_appends_under_it() -> None:
    text = add_row("# Benchmarks\n", "W1 burst", {"a": 1, "b": "x|y"})
    assert text == "# Benchmarks\n\n## W1 burst\n\n| a | b |\n|---|---|\n| 1 | x\\|y |\n"
    text = add_row(text + "\n## Fuzz\n\nTheirs.\n", "W1 burst", {"a": 2, "b": "z"})
    lines = text.splitlines()
    assert lines[lines.index("| 1 | x\\|y |") + 1] == "| 2 | z |"
    assert text.endswith("## Fuzz\n\nTheirs.\n")


def test_add_row_under_a_section_without_a_table_keeps_its_paragraph() -> None:
    text = "## Limits\n\nWhat the machine can do.\n\n## Other\n"
    text = add_row(text, "Limits", {"x": 1})
    assert text == "## Limits\n\nWhat the machine can do.\n\n| x |\n|---|\n| 1 |\n\n## Other\n"


def test_profile_summary_counts_each_function_once_per_sample() -> None:
    collapsed = (
        "main (a/cli.py:1);run (x/loop.py:5);handle (orchestrator/engine.py:10);handle (orchestrator/engine.py:12) 3\n"
        "main (a/cli.py:1);run (x/loop.py:6) 1\n"
    )
    total, top = summarize(collapsed)
    assert total == 4
    assert dict(top) == {"handle (engine.py)": 0.75}


def test_every_flag_a_benchmark_reads_is_parsed() -> None:
    from bench.__main__ import parse

    args = parse([])
    assert (args.names, args.scale, args.steps, args.profile) == ([], 1.0, 5, False)
    chosen = parse(["w1", "--profile", "--topology", "up", "--runs", "200", "--peer", "dbos"])
    assert (chosen.names, chosen.profile, chosen.topology, chosen.runs, chosen.peer) == (
        ["w1"],
        True,
        ["up"],
        200,
        ["dbos"],
    )
