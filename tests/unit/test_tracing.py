"""Tracing switched by the OTEL_* environment, and what it carries when it is off."""

from __future__ import annotations

from shared import tracing


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
