"""Metrics and traces of a whole run: a gateway, an orchestrator and a worker in this process, each
scraped on its own /metrics, and one trace that follows the run through all three; the events the
run recorded are checked against the AsyncAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from uuid import UUID

import aiohttp
import asyncpg
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway.repository import GatewayRepository
from orchestrator.service import Orchestrator
from shared import amqp, tracing
from shared.settings import Settings
from tests.asyncapi_support import validate_event
from tests.integration.gateway_helpers import Gateway, running_gateway
from tests.integration.services_helpers import orchestrator_and_worker
from tests.waiting import eventually
from worker.service import Worker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

BODY = {
    "model": {"name": "iris-classifier", "version": "1.4.0"},
    "steps": [
        {"name": "train", "kind": "synthetic", "params": {"duration_seconds": 1.0}},
        {
            "name": "check",
            "kind": "synthetic",
            "depends_on": ["train"],
            "params": {"results": [{"name": "accuracy >= 0.9", "status": "passed"}]},
        },
    ],
}


@dataclass
class Stack:
    gateway: Gateway
    orchestrator: Orchestrator
    worker: Worker
    http: aiohttp.ClientSession

    async def scrape_ops(self, port: int | None) -> Samples:
        assert port is not None
        async with self.http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            return parse(await resp.text())

    async def scrape_gateway(self) -> Samples:
        resp = await self.gateway.get("/metrics")
        assert resp.status == 200
        return parse(await resp.text())

    async def run_once(self) -> str:
        run = await self.gateway.trigger(BODY)

        async def ended() -> bool:
            resp = await self.gateway.get(f"/model-runs/{run['id']}")
            return (await resp.json())["status"] in ("succeeded", "failed", "cancelled")

        await eventually(ended, timeout=30, what="the run to end")
        resp = await self.gateway.get(f"/model-runs/{run['id']}")
        assert (await resp.json())["status"] == "succeeded"
        # Every fact the run recorded (and published) is what docs/asyncapi.json describes.
        stored = await GatewayRepository(self.gateway.pool).events_after(UUID(run["id"]), 0, 1000)
        assert len(stored) >= 8
        for row in stored:
            validate_event(row["body"])
        return str(run["id"])


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the series of `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


@contextlib.asynccontextmanager
async def running_stack(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Stack]:
    # The reconciler is slowed so that only the messages move the run: a repair would start a
    # trace of its own, and this test follows the one the trigger began.
    settings = settings.model_copy(update={"ops_port": 0, "reconcile_seconds": 60.0})
    async with (
        orchestrator_and_worker(settings) as (orchestrator, worker),
        running_gateway(settings, pool) as gateway,
        aiohttp.ClientSession() as http,
    ):
        yield Stack(gateway, orchestrator, worker, http)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


async def test_each_service_serves_its_metrics_and_they_move(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_stack(settings, pool) as stack:
        run = asyncio.create_task(stack.run_once())

        async def busy() -> Samples:
            samples = await stack.scrape_ops(stack.worker.ops_port)
            return samples if value(samples, "modelruns_worker_slots_busy") == 1 else {}

        while_running = await eventually(busy, timeout=20, what="a busy worker slot")
        assert value(while_running, "modelruns_worker_slots") == settings.worker_concurrency
        await run

        gateway = await stack.scrape_gateway()
        assert (
            value(gateway, "modelruns_http_requests_total", method="POST", route="/model-runs", status="201")
            == 1
        )
        assert value(gateway, "modelruns_http_request_duration_seconds_count", route="/model-runs") >= 1
        assert value(gateway, "modelruns_http_request_duration_seconds_bucket", le="+Inf") >= 1
        assert value(gateway, "modelruns_runs_triggered_total") == 1

        ops_port = stack.orchestrator.ops.bound_port if stack.orchestrator.ops else None

        async def settled() -> Samples:
            # The API shows the end once it is committed; the metrics move just after, and the
            # outbox empties once the broker confirmed the last events.
            samples = await stack.scrape_ops(ops_port)
            done = value(samples, "modelruns_runs_finished_total", status="succeeded") == 1
            return samples if done and value(samples, "modelruns_outbox_depth") == 0 else {}

        orchestrator = await eventually(settled, timeout=20, what="the run counted and the outbox empty")
        assert value(orchestrator, "modelruns_runs_finished_total", status="failed") == 0
        assert (
            value(orchestrator, "modelruns_steps_finished_total", status="succeeded", kind="synthetic") == 2
        )
        assert value(orchestrator, "modelruns_step_duration_seconds_count", status="succeeded") == 2
        # train ran for a second: never in the buckets below that.
        assert value(orchestrator, "modelruns_step_duration_seconds_bucket", le="0.5") <= 1
        # The orchestrator times a step between its own decisions, each a few milliseconds after
        # the worker's message: the start's delay may exceed the finish's.
        assert value(orchestrator, "modelruns_step_duration_seconds_sum") >= 0.9
        assert value(orchestrator, "modelruns_dispatch_latency_seconds_count", pool="default") == 2
        for queue in (amqp.COMMANDS_QUEUE, amqp.WORKER_EVENTS_QUEUE):
            assert value(orchestrator, "modelruns_consumer_lag_seconds_count", queue=queue) >= 1, queue
            assert (
                value(orchestrator, "modelruns_messages_consumed_total", queue=queue, outcome="handled") >= 1
            )
        # The repairs exist at zero.
        assert value(orchestrator, "modelruns_reconciler_repairs_total", kind="lease_expired") == 0
        assert value(orchestrator, "modelruns_events_recorded_total", type="modelruns.run.succeeded") == 1

        async def idle() -> Samples:
            samples = await stack.scrape_ops(stack.worker.ops_port)
            done = value(samples, "modelruns_worker_steps_total", outcome="succeeded") == 2
            return samples if done and value(samples, "modelruns_worker_slots_busy") == 0 else {}

        worker = await eventually(idle, timeout=20, what="the worker's slots free")
        assert value(worker, "modelruns_consumer_lag_seconds_count", queue=amqp.pool_queue("default")) >= 2
        for every in (gateway, orchestrator, worker):
            assert all(name.startswith("modelruns_") for name in names(every)), names(every)


def by_name(found: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


async def test_one_trace_follows_a_run_across_the_services(
    settings: Settings, pool: asyncpg.Pool, spans: InMemorySpanExporter
) -> None:
    async with running_stack(settings, pool) as stack:
        run_id = await stack.run_once()
        assert (await stack.gateway.get("/healthz")).status == 200
    finished = list(spans.get_finished_spans())
    # Probes and scrapes are not traced.
    assert not by_name(finished, "GET /healthz")
    (request,) = by_name(finished, "POST /model-runs")
    assert request.kind is SpanKind.SERVER
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 201
    assert request.context is not None
    trace_id = request.context.trace_id
    one = [s for s in finished if s.context is not None and s.context.trace_id == trace_id]
    names_in_trace = {s.name for s in one}
    for expected in (
        f"publish {amqp.COMMANDS}",
        f"process {amqp.COMMANDS_QUEUE}",
        f"publish {amqp.STEPS}",
        f"process {amqp.pool_queue('default')}",
        f"publish {amqp.WORKER_EVENTS}",
        f"process {amqp.WORKER_EVENTS_QUEUE}",
        f"publish {amqp.RESULTS}",
    ):
        assert expected in names_in_trace, (expected, sorted(names_in_trace))
    # Both steps ran in this trace: the second was dispatched while handling the first's end.
    attempts = by_name(one, f"process {amqp.pool_queue('default')}")
    assert len(attempts) == 2
    assert {(s.attributes or {}).get("modelruns.run_id") for s in attempts} == {run_id}
    # Postgres queries are in it, under the request and under the orchestrator's handling.
    queries = [
        s for s in one if s.kind is SpanKind.CLIENT and (s.attributes or {}).get("db.system") == "postgresql"
    ]
    assert queries
    span_ids = {s.context.span_id: s for s in one if s.context is not None}
    assert any(q.parent is not None and q.parent.span_id == request.context.span_id for q in queries)
    # Every consumer's parent is a producer of the same trace: the context rode the message.
    for consumer in (s for s in one if s.kind is SpanKind.CONSUMER):
        assert consumer.parent is not None
        producer = span_ids.get(consumer.parent.span_id)
        assert producer is not None and producer.kind is SpanKind.PRODUCER, consumer.name
    # Messaging only continues traces: heartbeats and polls start none.
    messaging = [s for s in finished if s.kind in (SpanKind.PRODUCER, SpanKind.CONSUMER)]
    assert all(s.parent is not None for s in messaging), [s.name for s in messaging if s.parent is None]
    # The trigger's publish continues the request, through the outbox row that kept its context.
    (command,) = by_name(one, f"publish {amqp.COMMANDS}")
    assert command.parent is not None
    assert command.parent.span_id == request.context.span_id


async def test_an_orchestrator_warns_when_postgres_does_not_vacuum(
    settings: Settings, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox, steps and runs are rewritten at every step; a server with autovacuum off (as
    some CI images run) lets them bloat, which an operator should hear about at start."""
    caplog.set_level(logging.WARNING, logger="orchestrator.service")
    orchestrator = Orchestrator(settings)
    await orchestrator.start()
    try:
        vacuums = await pool.fetchval("SELECT current_setting('autovacuum')::boolean")
        warned = [r for r in caplog.records if getattr(r, "action", None) == "postgres.autovacuum_off"]
        assert len(warned) == (0 if vacuums else 1)
    finally:
        await orchestrator.stop()
