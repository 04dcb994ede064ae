"""Hostile messages injected straight into the queues: duplicated, reordered and late worker events,
and poison that must be dead-lettered without a crash loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from pydantic import BaseModel

from shared import amqp
from shared.messages import (
    MAX_MESSAGE_BYTES,
    ReportedResult,
    StepDispatch,
    StopStep,
    WorkerFinished,
    WorkerResults,
    WorkerStarted,
    decode,
    encode,
)
from tests.e2e.test_run_path import body, synthetic
from tests.faults.conftest import Case
from tests.faults.test_crashes import running_on
from tests.waiting import eventually

GHOST_POOL = "ghost"  # no worker takes it: the test plays the worker
FAKES = ("fake-a", "fake-b", "intruder")


class FakeWorker:
    """Reads dispatches of the ghost pool, speaks for any worker id, hears their stops."""

    def __init__(self, channel: AbstractChannel, dispatches: AbstractQueue, control: AbstractQueue) -> None:
        self.channel = channel
        self.dispatches = dispatches
        self.control = control
        self.stops: list[tuple[str, StopStep]] = []

    async def send(self, *messages: BaseModel) -> None:
        exchange = await self.channel.get_exchange(amqp.WORKER_EVENTS)
        for message in messages:
            await exchange.publish(
                aio_pika.Message(encode(message), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                amqp.WORKER_EVENT_KEY,
                mandatory=True,
            )

    async def dispatch(self, attempt: int) -> StepDispatch:
        async def probe() -> StepDispatch | None:
            message = await self.dispatches.get(no_ack=True, fail=False)
            if message is None:
                return None
            dispatch = decode(StepDispatch, message.body)
            return dispatch if dispatch.attempt == attempt else None

        dispatch = await eventually(probe, timeout=20, what=f"the dispatch of attempt {attempt}")
        assert dispatch is not None
        return dispatch

    async def heard(self, worker_id: str, reason: str, attempt: int) -> None:
        async def probe() -> bool:
            while (message := await self.control.get(no_ack=True, fail=False)) is not None:
                self.stops.append((str(message.routing_key), decode(StopStep, message.body)))
            return any(
                key == amqp.control_key(worker_id) and stop.reason == reason and stop.attempt == attempt
                for key, stop in self.stops
            )

        await eventually(probe, timeout=20, what=f"a {reason} stop for {worker_id}")


@pytest.fixture
async def fake(case: Case) -> AsyncIterator[FakeWorker]:
    connection = await aio_pika.connect(case.cluster.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await amqp.declare_exchanges(channel)
        dispatches = await amqp.declare_pool_queue(channel, GHOST_POOL)
        control = await channel.declare_queue("", exclusive=True)
        for worker_id in FAKES:
            await control.bind(amqp.CONTROL, amqp.control_key(worker_id))
        yield FakeWorker(channel, dispatches, control)
    finally:
        await connection.close()


def results(*seqs: int) -> list[ReportedResult]:
    return [ReportedResult(seq=seq, name=f"r{seq}", status="passed") for seq in seqs]


async def test_duplicated_reordered_and_late_events_have_no_effect_beyond_the_first(
    case: Case, fake: FakeWorker
) -> None:
    run = await case.trigger(body({**synthetic("s"), "pool": GHOST_POOL, "max_attempts": 2}))
    first = await fake.dispatch(1)
    ref: dict[str, Any] = {"run_id": first.run_id, "step_id": first.step_id}

    # The finish overtakes its start and its two results: it implies the start and waits.
    await fake.send(
        WorkerFinished(
            **ref,
            attempt=1,
            worker_id="fake-a",
            outcome="failed",
            error={"code": "step_failed", "message": "boom", "retryable": True},
            results_count=2,
        )
    )
    assert await running_on(case, run["id"], "s") == "fake-a"
    # The results twice, and the start late: stored once, then the held finish fails attempt 1.
    batch = WorkerResults(**ref, attempt=1, worker_id="fake-a", results=results(0, 1))
    await fake.send(batch, batch, WorkerStarted(**ref, attempt=1, worker_id="fake-a"))
    second = await fake.dispatch(2)
    assert second.step_id == first.step_id

    await fake.send(WorkerStarted(**ref, attempt=2, worker_id="fake-b"))
    assert await running_on(case, run["id"], "s", attempt=2) == "fake-b"
    # A second start of the same attempt from another worker, and the old attempt's word.
    await fake.send(
        WorkerStarted(**ref, attempt=2, worker_id="intruder"),
        WorkerResults(**ref, attempt=1, worker_id="fake-a", results=results(2)),
        WorkerFinished(**ref, attempt=1, worker_id="fake-a", outcome="succeeded", results_count=3),
    )
    await fake.heard("intruder", "fenced", 2)
    await fake.heard("fake-a", "fenced", 1)
    steps = await case.api.steps(run["id"])
    assert steps["s"]["status"] == "running" and steps["s"]["worker_id"] == "fake-b"

    done = WorkerFinished(**ref, attempt=2, worker_id="fake-b", outcome="succeeded", results_count=1)
    mine = WorkerResults(**ref, attempt=2, worker_id="fake-b", results=results(0))
    await fake.send(done, mine, mine, done)
    runs = await case.verify(timeout=30)
    assert runs[run["id"]]["status"] == "succeeded"
    assert runs[run["id"]]["test_counts"]["total"] == 1
    conn = await case.db()
    try:
        stored = await conn.fetch(
            "SELECT attempt, seq FROM test_results WHERE run_id = $1 ORDER BY attempt, seq", UUID(run["id"])
        )
    finally:
        await conn.close()
    assert [(r["attempt"], r["seq"]) for r in stored] == [(1, 0), (1, 1), (2, 0)]


async def test_poison_is_dead_lettered_with_a_log_line_and_no_crash_loop(
    case: Case, fake: FakeWorker
) -> None:
    cluster = case.cluster
    starts = {name: s.starts for name, s in cluster.services.items()}
    poison_before = len(cluster.all_entries("message.poison"))
    dead_before = len(cluster.all_entries("message.dead"))
    started = orjson.loads(
        encode(WorkerStarted(run_id=UUID(int=1), step_id=UUID(int=2), attempt=1, worker_id="x"))
    )
    bodies = [
        b"{not json",
        orjson.dumps({**started, "v": 2}),
        orjson.dumps({"v": 1, "type": "started", "data": "x" * (MAX_MESSAGE_BYTES + 1)}),
    ]
    for exchange, key in [(amqp.WORKER_EVENTS, amqp.WORKER_EVENT_KEY), (amqp.COMMANDS, "run.trigger")]:
        target = await fake.channel.get_exchange(exchange)
        for poison in bodies:
            await target.publish(aio_pika.Message(poison), key, mandatory=True)
    steps = await fake.channel.get_exchange(amqp.STEPS)
    await steps.publish(aio_pika.Message(b"[1, 2"), "default", mandatory=True)

    def seen() -> tuple[int, int, int]:
        return (
            len(cluster.all_entries("message.poison")) - poison_before,
            len(cluster.all_entries("message.dead")) - dead_before,
            len(cluster.all_entries("worker.dispatch_invalid")),
        )

    await eventually(
        lambda: asyncio.sleep(0, result=seen()[0] >= 6 and seen()[1] >= 7 and seen()[2] >= 1),
        timeout=20,
        what="every poison message logged and dead-lettered",
    )
    await asyncio.sleep(1.0)  # room for a crash loop to show itself, were there one
    assert seen()[:2] == (6, 7), "a poison message was handled more than once"
    assert all(s.alive() for s in cluster.services.values())
    assert {name: s.starts for name, s in cluster.services.items()} == starts
    dead = await fake.channel.get_queue(amqp.DEAD_QUEUE)
    assert await dead.get(no_ack=True, fail=False) is None, "a dead message was left unsettled"

    # Every quorum queue has an explicit delivery limit, so nothing can loop for ever.
    queues = await asyncio.to_thread(case.rabbitmq.queues, cluster.amqp_url)
    quorum = [(name, arguments) for name, kind, arguments in queues if kind == "quorum"]
    assert {name for name, _ in quorum} >= {
        amqp.COMMANDS_QUEUE,
        amqp.WORKER_EVENTS_QUEUE,
        amqp.DEAD_QUEUE,
        amqp.pool_queue("default"),
    }
    for name, arguments in quorum:
        assert "x-delivery-limit" in arguments, (name, arguments)

    run = await case.trigger(body(synthetic("after")))
    assert (await case.verify(timeout=30))[run["id"]]["status"] == "succeeded"
