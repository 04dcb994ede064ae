"""Log lines: JSON with a stable `action` and the ids, readable text on a terminal, and the trace
ids of the span a line was logged under."""

from __future__ import annotations

import io
import logging
import sys

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from shared import logs, tracing

IDS = {"action": "step.started", "run_id": "r-1", "step_id": "s-1", "attempt": 2}


def record(**extra: object) -> logging.LogRecord:
    made = logging.LogRecord("modelruns.test", logging.INFO, __file__, 1, "step %s", ("started",), None)
    made.__dict__.update(extra)
    return made


def test_json_lines_carry_the_action_and_the_ids() -> None:
    entry = orjson.loads(logs.JsonFormatter().format(record(**IDS)))
    assert entry["message"] == "step started"
    assert entry["level"] == "info" and entry["logger"] == "modelruns.test"
    assert entry["time"].endswith("Z")
    assert {k: entry[k] for k in IDS} == IDS
    assert "trace_id" not in entry


def test_text_lines_read_as_a_sentence_then_the_fields() -> None:
    line = logs.TextFormatter().format(record(**IDS))
    assert "INFO" in line and "step started" in line
    assert "action=step.started run_id=r-1 step_id=s-1 attempt=2" in line


def test_a_line_logged_under_a_recorded_span_names_its_trace() -> None:
    provider = TracerProvider()
    tracing.use(provider)
    try:
        with tracing.span("work") as span:
            entry = orjson.loads(logs.JsonFormatter().format(record(**IDS)))
        context = span.get_span_context()
        assert entry["trace_id"] == f"{context.trace_id:032x}"
        assert entry["span_id"] == f"{context.span_id:016x}"
    finally:
        tracing.use(None)
        provider.shutdown()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("fmt", "tty", "json"),
    [("auto", True, False), ("auto", False, True), ("json", True, True), ("text", False, False)],
)
def test_the_format_follows_the_setting_and_the_terminal(
    monkeypatch: pytest.MonkeyPatch, fmt: str, tty: bool, json: bool
) -> None:
    stream = Terminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", fmt)
        logging.getLogger("modelruns.test").info("hello", extra={"action": "test.hello"})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = stream.getvalue().strip()
    if json:
        assert orjson.loads(line)["action"] == "test.hello"
    else:
        assert line.endswith("hello  action=test.hello")
