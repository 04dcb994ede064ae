"""The gateway as a service: health, readiness, metrics, OpenAPI, the broker being away, Postgres
going away, the shared page-token secret, and serve()."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from uuid import UUID

import aio_pika
import aiohttp
import asyncpg
import orjson
import pytest
from openapi_spec_validator import validate

from gateway.service import serve
from shared import amqp
from shared.amqp import Broker
from shared.messages import RunCommand, decode
from shared.outbox import OutboxPublisher
from shared.settings import Settings
from tests.integration.gateway_helpers import (
    SQL,
    Gateway,
    bearer,
    broker_down_settings,
    running_gateway,
    trigger_body,
    without_broker,
)
from tests.integration.tcp_proxy import in_front_of
from tests.waiting import eventually

OPERATION_IDS = {
    ("get", "/model-runs"): "listModelRuns",
    ("post", "/model-runs"): "triggerModelRun",
    ("get", "/model-runs/{runId}"): "getModelRun",
    ("post", "/model-runs/{runId}/cancel"): "cancelModelRun",
    ("get", "/model-runs/{runId}/steps"): "listModelRunSteps",
    ("get", "/model-runs/{runId}/steps/{stepId}/test-results"): "listModelTestResults",
    ("get", "/model-runs/{runId}/events"): "streamModelRunEvents",
}


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


async def test_healthz(gw: Gateway) -> None:
    resp = await gw.client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_readyz_without_the_broker_is_still_ready(gw: Gateway) -> None:
    resp = await gw.client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "postgres": "ok", "rabbitmq": "down"}


async def test_openapi_document(gw: Gateway) -> None:
    resp = await gw.client.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    spec = await resp.json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    found = {
        (method, path): op["operationId"]
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if path.startswith("/model-runs")
    }
    assert found == OPERATION_IDS
    schemas = spec["components"]["schemas"]
    for name in (
        "TriggerRequest",
        "StepSpec",
        "Run",
        "RunList",
        "Step",
        "StepList",
        "TestResult",
        "TestResultList",
        "Problem",
    ):
        assert name in schemas, name
    assert schemas["TriggerRequest"]["additionalProperties"] is False
    trigger = spec["paths"]["/model-runs"]["post"]
    assert trigger["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/TriggerRequest")
    assert "201" in trigger["responses"] and "problem+json" in next(
        iter(trigger["responses"]["400"]["content"])
    )


async def test_metrics(gw: Gateway) -> None:
    run = await gw.trigger()
    await gw.get(f"/model-runs/{run['id']}")
    await gw.get("/model-runs/nope")
    await gw.client.get("/model-runs")
    resp = await gw.client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'modelruns_http_requests_total{method="GET",route="/model-runs/{runId}",status="200"} 1.0' in text
    assert 'modelruns_http_requests_total{method="GET",route="/model-runs/{runId}",status="404"} 1.0' in text
    assert 'modelruns_http_requests_total{method="POST",route="/model-runs",status="201"} 1.0' in text
    assert 'modelruns_http_requests_total{method="GET",route="/model-runs",status="401"} 1.0' in text
    assert (
        'modelruns_http_request_duration_seconds_bucket{le="0.1",method="GET",route="/model-runs/{runId}"}'
        in text
    )
    assert "modelruns_runs_triggered_total 1.0" in text
    names = [
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    ]
    assert all(name.startswith("modelruns_") for name in names), names
    assert run["id"] not in text


async def test_trigger_with_the_broker_unreachable(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_gateway(without_broker(settings), pool) as gw:
        started = time.monotonic()
        run = await gw.trigger()
        assert time.monotonic() - started < 2.0
        got = await gw.get(f"/model-runs/{run['id']}")
        assert got.status == 200
        cancel = await gw.post(f"/model-runs/{run['id']}/cancel")
        assert cancel.status == 200
        rows = await pool.fetch(SQL.outbox_rows)
        assert [(r["exchange"], r["routing_key"]) for r in rows] == [
            (amqp.RESULTS, "acme.run.queued"),
            (amqp.COMMANDS, "run.trigger"),
            (amqp.RESULTS, "acme.run.cancelling"),
            (amqp.COMMANDS, "run.cancel"),
        ]
        assert decode(RunCommand, bytes(rows[1]["body"])).run_id == UUID(run["id"])
        assert (await (await gw.client.get("/readyz")).json())["rabbitmq"] == "down"


async def test_with_the_broker_up_the_gateway_publishes_its_commands(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        queues = await amqp.declare_orchestrator_queues(channel)
        results = await channel.declare_queue("", exclusive=True)
        await results.bind(amqp.RESULTS, "acme.#")
        async with running_gateway(settings, pool) as gw:

            async def ready() -> bool:
                body = await (await gw.client.get("/readyz")).json()
                return bool(body["rabbitmq"] == "ok")

            await eventually(ready, timeout=10, what="the gateway's broker link")
            run = await gw.trigger()
            command = await eventually(
                lambda: queues[amqp.COMMANDS_QUEUE].get(fail=False, no_ack=True), what="the trigger command"
            )
            assert command is not None
            assert decode(RunCommand, command.body) == RunCommand(command="trigger", run_id=UUID(run["id"]))

            async def command_sent() -> list[asyncpg.Record] | None:
                rows = await pool.fetch(SQL.outbox_rows)
                return None if any(r["exchange"] == amqp.COMMANDS for r in rows) else rows

            # Its own event waits for the orchestrator's publisher: the gateway writes commands only.
            left_rows = await eventually(command_sent, what="the command row to go")
            assert left_rows is not None
            (left,) = left_rows
            assert left["exchange"] == amqp.RESULTS and left["routing_key"] == "acme.run.queued"

        broker = Broker(settings.amqp_url, name="test")
        try:
            await broker.connect()
            await OutboxPublisher(pool, broker).drain()
        finally:
            await broker.close()
        event = await eventually(lambda: results.get(fail=False, no_ack=True), what="run.queued")
        assert event is not None
        assert event.content_type == "application/cloudevents+json"
        body = orjson.loads(event.body)
        assert body["type"] == "modelruns.run.queued" and event.message_id == body["id"]
        assert body["source"] == "/modelruns/gateway"
        assert not await pool.fetch(SQL.outbox_rows)
    finally:
        await connection.close()


async def test_postgres_going_away_is_a_fast_503(db_url: str, pool: asyncpg.Pool) -> None:
    proxy, proxied = await in_front_of(db_url, 5432)
    port = proxy.port
    async with running_gateway(broker_down_settings(proxied, api_key_cache_seconds=0), pool) as gw:
        run = await gw.trigger()
        await proxy.stop()
        for path in ("/model-runs", f"/model-runs/{run['id']}"):
            started = time.monotonic()
            resp = await gw.get(path)
            assert time.monotonic() - started < 3.0
            assert resp.status == 503, await resp.text()
            body = await resp.json(content_type=None)
            assert body["code"] == "unavailable" and body["type"] == "/problems/unavailable"
            assert "Traceback" not in orjson.dumps(body).decode()
        started = time.monotonic()
        resp = await gw.post("/model-runs", json=trigger_body())
        assert resp.status == 503 and time.monotonic() - started < 3.0
        ready = await gw.client.get("/readyz")
        assert ready.status == 503
        assert await ready.json() == {"status": "unavailable", "postgres": "down", "rabbitmq": "down"}
        assert (await gw.client.get("/healthz")).status == 200
        # And back.
        proxy.port = port
        await proxy.start()

        async def recovered() -> bool:
            return (await gw.get(f"/model-runs/{run['id']}")).status == 200

        await eventually(recovered, timeout=10, what="the gateway to recover")
        await proxy.stop()


async def test_page_token_secret_is_shared_through_the_database(db_url: str, pool: asyncpg.Pool) -> None:
    settings = broker_down_settings(db_url, page_token_secret=None)
    async with running_gateway(settings, pool) as one, running_gateway(settings, pool) as two:
        for _ in range(3):
            await one.trigger()
        token = (await (await one.get("/model-runs", params={"max_results": "1"})).json())["next_page_token"]
        resp = await two.get("/model-runs", params={"max_results": "1", "page_token": token}, key=one.key)
        assert resp.status == 200, await resp.text()
    configured = broker_down_settings(db_url, page_token_secret="something-else")
    async with running_gateway(configured, pool) as three:
        resp = await three.get("/model-runs", params={"page_token": token}, key=one.key)
        assert resp.status == 400


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_until_stopped(db_url: str, pool: asyncpg.Pool) -> None:
    from shared import apikeys

    key = await apikeys.create_key(pool, "acme", ["runs:read"])
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(broker_down_settings(db_url, http_port=port), stop))
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await eventually(up, what="the gateway to listen")
        async with session.get(f"http://127.0.0.1:{port}/model-runs", headers=bearer(key)) as resp:
            assert resp.status == 200
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_serve_stops_while_waiting_for_postgres() -> None:
    stop = asyncio.Event()
    settings = broker_down_settings("postgresql://postgres@127.0.0.1:1/none", http_port=free_port())
    task = asyncio.create_task(serve(settings, stop))
    await asyncio.sleep(0)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 5)
