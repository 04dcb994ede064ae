"""OpenTelemetry tracing, off unless the standard OTEL_* environment asks for it.

Only the OpenTelemetry API is a dependency (without an SDK every span is a no-op); the SDK and
the OTLP exporter come with the `otel` extra. Spans cover HTTP requests, AMQP publishes and
consumes, and Postgres queries. The W3C trace context travels in AMQP message headers, and an
outbox row keeps the context of the transaction that wrote it, so the publish that follows (in
whichever process) continues the same trace: gateway → orchestrator → worker and back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.errors import ConfigurationError

log = logging.getLogger(__name__)

INSTRUMENTATION = "modelruns"
PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = frozenset(PROPAGATOR.fields)  # traceparent, tracestate
# The span a query is recorded under is cut to this many characters of its text.
MAX_QUERY_TEXT = 2000

_provider: trace.TracerProvider | None = None


def use(provider: trace.TracerProvider | None) -> None:
    """Record spans with `provider` (None: back to the global one, a no-op without an SDK)."""
    global _provider
    _provider = provider


def enabled() -> bool:
    return _provider is not None


def tracer() -> trace.Tracer:
    return (_provider or trace.get_tracer_provider()).get_tracer(INSTRUMENTATION)


def wanted(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the OTEL_* environment asks for; none means tracing stays off.

    Tracing is on when OTEL_TRACES_EXPORTER names an exporter, or when an OTLP endpoint is set
    (the exporter then defaults to otlp); OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
    keeps it off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if "none" in named:
        return []
    if named:
        return named
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return ["otlp"] if endpoint else []


def configure(service: str, environ: Mapping[str, str]) -> bool:
    """Install an SDK tracer provider when the environment asks for tracing; True when it did.
    The SDK itself reads the rest of its standard variables (OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_*, OTEL_BSP_*, OTEL_TRACES_SAMPLER)."""
    exporters = wanted(environ)
    if not exporters:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        log.warning(
            "tracing asked for but the OpenTelemetry SDK is not installed: pip install 'modelruns[otel]'",
            extra={"action": "tracing.unavailable"},
        )
        return False
    made: list[SpanExporter] = []
    for name in exporters:
        if name == "console":
            made.append(ConsoleSpanExporter())
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise ConfigurationError(
                    "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'modelruns[otel]'"
                ) from exc
            made.append(OTLPSpanExporter())
        else:
            raise ConfigurationError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (otlp, console, none)")
    # The role's name, unless the environment names the service itself.
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": service}))
    for exporter in made:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    use(provider)
    log.info("tracing on", extra={"action": "tracing.on", "exporters": ",".join(exporters)})
    return True


def shutdown() -> None:
    """Flush and stop the provider `configure` installed."""
    provider = _provider
    use(None)
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()


# -- context in and out of message headers ------------------------------------------------------


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers; empty when no span is being recorded."""
    headers: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        PROPAGATOR.inject(headers)
    return headers


def trace_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The W3C headers among an AMQP message's (values may arrive as bytes)."""
    found: dict[str, str] = {}
    for name, value in (headers or {}).items():
        # HTTP header names come in any case.
        if name.lower() in TRACE_HEADERS and value is not None:
            found[name.lower()] = value.decode() if isinstance(value, bytes) else str(value)
    return found


def current_ids() -> dict[str, str]:
    """trace_id and span_id of the span being recorded, for log lines; empty otherwise."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    parent: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span made current for the block; with `parent` (message headers), a child of the context
    they carry, so a consumer continues its producer's trace."""
    context = PROPAGATOR.extract(trace_headers(parent)) if parent is not None else None
    with tracer().start_as_current_span(
        name, context=context, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


@contextmanager
def _continuing(
    name: str, kind: SpanKind, parent: Mapping[str, Any] | None, attributes: dict[str, Any]
) -> Iterator[Span]:
    """A span only where there is a trace to continue: messaging never starts a trace of its own,
    so heartbeats and other periodic traffic stay out of the traces. Traces start at an HTTP
    request or a reconciler repair."""
    if not trace_headers(parent) and not trace.get_current_span().get_span_context().is_valid:
        yield trace.INVALID_SPAN
        return
    with span(
        name, kind=kind, parent=parent if trace_headers(parent) else None, attributes=attributes
    ) as current:
        yield current


def publishing(exchange: str, routing_key: str, parent: Mapping[str, Any] | None = None) -> Any:
    """A PRODUCER span for one AMQP publish (semantic conventions for messaging), continuing the
    context `parent` carries (an outbox row's, a queued worker event's) or the current one."""
    return _continuing(
        f"publish {exchange}",
        SpanKind.PRODUCER,
        parent,
        {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.destination.name": exchange,
            "messaging.rabbitmq.destination.routing_key": routing_key,
        },
    )


def consuming(queue: str, headers: Mapping[str, Any] | None, message_id: str | None) -> Any:
    """A CONSUMER span for handling one AMQP delivery, continuing the producer's trace."""
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
    }
    if message_id:
        attributes["messaging.message.id"] = message_id
    return _continuing(f"process {queue}", SpanKind.CONSUMER, headers or {}, attributes)


# -- Postgres -------------------------------------------------------------------------------------


def _operation(query: str) -> str:
    words = query.split(None, 1)
    return words[0].rstrip(";").upper() if words else "QUERY"


def record_query(record: Any) -> None:
    """An asyncpg query logger: one CLIENT span per query, back-dated by its elapsed time. asyncpg
    calls it through `call_soon`, which copies the context of the query, so the span's parent is
    the span the query ran under. Queries outside any span (pollers, scans) are not recorded."""
    if not trace.get_current_span().get_span_context().is_valid:
        return
    end = time.time_ns()
    params = getattr(record, "conn_params", None)
    attributes: dict[str, Any] = {
        "db.system.name": "postgresql",
        "db.system": "postgresql",
        "db.operation.name": _operation(record.query),
        "db.query.text": record.query[:MAX_QUERY_TEXT],
    }
    database = getattr(params, "database", None)
    if database:
        attributes["db.namespace"] = database
    recorded = tracer().start_span(
        f"{attributes['db.operation.name']} {database or 'postgresql'}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        start_time=end - int(record.elapsed * 1e9),
    )
    if record.exception is not None:
        recorded.record_exception(record.exception)
        recorded.set_status(Status(StatusCode.ERROR, type(record.exception).__name__))
    recorded.end(end_time=end)
