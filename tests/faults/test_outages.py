"""The broker or the database taken away and brought back, and a step that outlives the broker's
consumer timeout. Both are the suite's private instances (see instances.py)."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import aiormq
import pytest

from tests.e2e.test_run_path import body, synthetic
from tests.faults.conftest import Case
from tests.faults.instances import CONSUMER_TIMEOUT_MS
from tests.faults.invariants import outbox_drains
from tests.faults.test_crashes import running_on
from tests.waiting import eventually

OUTAGE_SECONDS = 5.0  # longer than the lease (2 s): silence must not read as dead workers


def lost_workers(case: Case) -> list[str]:
    return [
        e["data"]["name"]
        for run_id in case.runs
        for e in case.subscriber.of_run(run_id)
        if e["type"].startswith("modelruns.step.")
        and (e["data"].get("error") or {}).get("code") == "worker_lost"
    ]


async def test_a_broker_outage_delays_runs_but_loses_none(case: Case) -> None:
    cluster = case.cluster
    before = [
        await case.trigger(
            body(
                synthetic("first", duration_seconds=2, results=[{"name": "t", "status": "passed"}]),
                synthetic("second", "first", duration_seconds=0.5),
            )
        )
        for _ in range(4)
    ]
    await running_on(case, before[-1]["id"], "first")
    await asyncio.to_thread(case.rabbitmq.stop_app)
    try:
        # Triggers still answer 201 (their messages wait in the outbox), and services started now
        # wait for the broker instead of failing.
        during = [await case.trigger(body(synthetic("late", duration_seconds=0.5))) for _ in range(3)]
        assert all(run["status"] == "queued" for run in during)
        late_worker = cluster.add_worker("w4")
        late_orchestrator = cluster.add_orchestrator("o4")
        late_worker.start()
        late_orchestrator.start()
        await asyncio.sleep(OUTAGE_SECONDS)
        assert late_worker.alive() and late_orchestrator.alive()
        assert not late_worker.ready() and not late_orchestrator.ready()
    finally:
        await asyncio.to_thread(case.rabbitmq.start_app)
    try:
        await asyncio.to_thread(late_worker.wait_ready)
        await asyncio.to_thread(late_orchestrator.wait_ready)
        runs = await case.verify(timeout=60)
        assert {r["status"] for r in runs.values()} == {"succeeded"}
        assert lost_workers(case) == []
        await outbox_drains(cluster.db_url)
    finally:
        for name in ("w4", "o4"):
            await asyncio.to_thread(cluster.services.pop(name).terminate)


async def test_a_database_restart_answers_problems_meanwhile_and_loses_nothing(case: Case) -> None:
    runs = [
        await case.trigger(
            body(synthetic("work", duration_seconds=3, results=[{"name": "t", "status": "passed"}]))
        )
        for _ in range(4)
    ]
    await running_on(case, runs[-1]["id"], "work")
    await asyncio.to_thread(case.postgres.stop)
    try:
        started = time.monotonic()
        for method, path, request in [
            ("GET", "/model-runs", None),
            ("GET", f"/model-runs/{runs[0]['id']}", None),
            ("POST", "/model-runs", body(synthetic("refused"))),
        ]:
            status, problem = await case.api.call(method, path, request)
            assert status == 503 and problem["code"] == "unavailable", (method, path, status, problem)
        async with case.api.session.get(case.api.base + "/readyz") as response:
            assert response.status == 503
            assert (await response.json())["postgres"] == "down"
        assert time.monotonic() - started < 10, "answers while the database is down must not hang"
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    finally:
        await asyncio.to_thread(case.postgres.start)

    async def serving() -> bool:
        status, _ = await case.api.call("GET", "/model-runs")
        return status == 200

    await eventually(serving, timeout=20, what="the gateway serving again")
    runs.append(await case.trigger(body(synthetic("after"))))
    done = await case.verify(timeout=60)
    assert {r["status"] for r in done.values()} == {"succeeded"}, [r["error"] for r in done.values()]
    assert lost_workers(case) == []


async def test_a_step_longer_than_the_consumer_timeout_keeps_its_channel(case: Case) -> None:
    seconds = 3 * CONSUMER_TIMEOUT_MS / 1000
    run = await case.trigger(body(synthetic("long", duration_seconds=seconds)))
    worker = await running_on(case, run["id"], "long")

    # The lowered timeout is in force: a consumer that holds a delivery unacknowledged loses its
    # channel within the timeout and a tick.
    connection = await aio_pika.connect(case.cluster.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("faults.held", durable=True)
        await channel.default_exchange.publish(aio_pika.Message(b"hold me"), "faults.held")
        holder = await connection.channel()
        held = await holder.get_queue("faults.held")
        message = await held.get(no_ack=False)
        assert message is not None

        async def closed() -> bool:
            return holder.is_closed

        await eventually(closed, timeout=CONSUMER_TIMEOUT_MS / 1000 + 10, what="the holder's channel closed")
        with pytest.raises((aio_pika.exceptions.ChannelInvalidStateError, aiormq.exceptions.AMQPError)):
            await message.ack()
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()

    done = await case.verify(timeout=seconds + 30)
    assert done[run["id"]]["status"] == "succeeded"
    steps = await case.api.steps(run["id"])
    assert steps["long"]["attempt"] == 1 and steps["long"]["worker_id"] == worker
    service = case.cluster[worker]
    assert not service.actions("worker.ack_failed")
