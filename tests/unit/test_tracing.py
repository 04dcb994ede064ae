"""Tracing switched by the OTEL_* environment, and what it carries when it is off."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.errors import ConfigurationError


def test_tracing_is_opt_in_by_the_otel_environment() -> None:
    assert tracing.wanted({}) == []
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}) == ["otlp"]
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console,otlp"}) == ["console", "otlp"]
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}) == []
    assert tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) == []
    # Off, nothing is recorded and no context is carried.
    with tracing.span("nothing"):
        assert tracing.carrier() == {}
        assert tracing.current_ids() == {}


def test_messaging_continues_traces_but_never_starts_one() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        # Periodic traffic (heartbeats, polls) carries no context: no span, nothing carried.
        with tracing.publishing("modelruns.worker-events", "event") as alone:
            assert not alone.is_recording()
            assert tracing.carrier() == {}
        with tracing.consuming("modelruns.orchestrator.worker-events", {}, "m-1") as alone:
            assert not alone.is_recording()
        with (
            tracing.span("POST /model-runs") as request,
            tracing.publishing("modelruns.commands", "run.trigger") as publish,
        ):
            headers = tracing.carrier()
        # Header names arrive in any case, values as bytes or str.
        delivered = {"TraceParent": headers["traceparent"].encode(), "x-modelruns-sent-at": 1.5}
        with tracing.consuming("modelruns.orchestrator.commands", delivered, "m-2") as consume:
            assert consume.is_recording()
    finally:
        tracing.use(None)
        provider.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "POST /model-runs",
        "publish modelruns.commands",
        "process modelruns.orchestrator.commands",
    }
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in spans.values() if s.context} == {trace_id}
    consumed = spans["process modelruns.orchestrator.commands"]
    assert consumed.parent is not None and consumed.parent.span_id == publish.get_span_context().span_id
    assert consumed.kind is SpanKind.CONSUMER


def test_query_spans_only_under_a_recorded_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    query = SimpleNamespace(
        query="SELECT 1;", elapsed=0.002, exception=None, conn_params=SimpleNamespace(database="modelruns")
    )
    try:
        tracing.record_query(query)
        with tracing.span("work"):
            tracing.record_query(query)
            tracing.record_query(SimpleNamespace(**{**vars(query), "exception": RuntimeError("boom")}))
    finally:
        tracing.use(None)
        provider.shutdown()
    recorded = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in recorded] == ["SELECT modelruns", "SELECT modelruns"]
    ok, failed = recorded
    assert ok.attributes is not None and ok.attributes["db.query.text"] == "SELECT 1;"
    assert ok.end_time is not None and ok.start_time is not None
    assert ok.end_time - ok.start_time == 2_000_000
    assert not failed.status.is_ok and failed.events[0].name == "exception"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    # A process of its own: configure() installs the global tracer provider, once per process.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


CONFIGURED = """
from shared import tracing
import os
on = tracing.configure("modelruns-test", os.environ)
with tracing.span("hello"):
    pass
tracing.shutdown()
print("ON" if on else "OFF")
"""


def test_the_console_exporter_prints_the_spans_of_a_named_service() -> None:
    done = run_python(CONFIGURED, OTEL_TRACES_EXPORTER="console")
    assert done.stdout.rstrip().endswith("ON")
    assert '"name": "hello"' in done.stdout
    assert '"service.name": "modelruns-test"' in done.stdout
    renamed = run_python(CONFIGURED, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="ml-orchestrator")
    assert '"service.name": "ml-orchestrator"' in renamed.stdout


def test_without_the_sdk_tracing_stays_off() -> None:
    hidden = "import sys; sys.modules['opentelemetry.sdk'] = None\n"
    done = run_python(hidden + CONFIGURED, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    assert done.stdout.strip() == "OFF"
    assert "modelruns[otel]" in done.stderr


def test_an_unknown_exporter_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="zipkin"):
        tracing.configure("modelruns-test", {"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not tracing.enabled()
