"""Plays the orchestrator's side of the broker for worker tests: publishes dispatches and stops,
collects worker events, and reads queue depths from RabbitMQ itself."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from shared import amqp
from shared.messages import (
    StepDispatch,
    StopStep,
    WorkerFinished,
    WorkerHeartbeat,
    WorkerResults,
    WorkerStarted,
    decode_worker_message,
    encode,
)
from shared.settings import Settings
from tests.conftest import rabbitmqctl
from tests.waiting import eventually
from worker.service import Worker

Event = WorkerStarted | WorkerHeartbeat | WorkerResults | WorkerFinished


def vhost_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/")) or "/"


@dataclass
class QueueStats:
    ready: int
    consumers: int


async def unacked(url: str, queue: str) -> int:
    """Deliveries of `queue` not yet acknowledged. RabbitMQ refreshes this figure only every few
    seconds (collect_statistics_interval): wait on it with a generous deadline."""
    out = await asyncio.to_thread(
        rabbitmqctl,
        "list_queues",
        "-p",
        vhost_of(url),
        "--no-table-headers",
        "name",
        "messages_unacknowledged",
    )
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    raise AssertionError(f"queue {queue} not found in {out!r}")


def make_dispatch(
    kind: str = "synthetic",
    params: dict[str, Any] | None = None,
    *,
    attempt: int = 1,
    timeout_seconds: int = 60,
    pool: str = "default",
    name: str = "step",
) -> StepDispatch:
    return StepDispatch(
        run_id=uuid.uuid4(),
        step_id=uuid.uuid4(),
        tenant_id="acme",
        attempt=attempt,
        name=name,
        kind=kind,
        params=params or {},
        parameters={"dataset": "iris"},
        inputs={},
        timeout_seconds=timeout_seconds,
        pool=pool,
    )


@dataclass
class Orchestrator:
    url: str
    connection: AbstractRobustConnection
    channel: AbstractChannel
    events: list[Event] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        # After a reconnect an unacknowledged event comes again: keep each message once.
        if message.message_id in self.seen_ids:
            await message.ack()
            return
        if message.message_id:
            self.seen_ids.add(message.message_id)
        events, problems = decode_worker_message(message.body)
        assert not problems, problems
        self.events.extend(events)
        await message.ack()

    async def listen(self) -> None:
        queues = await amqp.declare_orchestrator_queues(self.channel)
        await queues[amqp.WORKER_EVENTS_QUEUE].consume(self._on_event)

    async def dispatch(self, dispatch: StepDispatch) -> StepDispatch:
        await self.publish_raw(encode(dispatch), dispatch.pool)
        return dispatch

    async def publish_raw(self, body: bytes, pool: str = "default") -> None:
        exchange = await self.channel.get_exchange(amqp.STEPS)
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), pool, mandatory=True
        )

    async def stop(
        self,
        worker: Worker,
        dispatch: StepDispatch,
        reason: Literal["cancelled", "fenced", "timeout", "worker_lost"] = "cancelled",
    ) -> None:
        exchange = await self.channel.get_exchange(amqp.CONTROL)
        message = StopStep(
            run_id=dispatch.run_id,
            step_id=dispatch.step_id,
            attempt=dispatch.attempt,
            reason=reason,
        )
        await exchange.publish(
            aio_pika.Message(encode(message)), amqp.control_key(worker.worker_id), mandatory=True
        )

    def of(self, dispatch: StepDispatch) -> list[WorkerStarted | WorkerResults | WorkerFinished]:
        return [
            e
            for e in self.events
            if not isinstance(e, WorkerHeartbeat)
            and (e.step_id, e.attempt) == (dispatch.step_id, dispatch.attempt)
        ]

    def heartbeats_with(self, dispatch: StepDispatch) -> list[WorkerHeartbeat]:
        return [
            e
            for e in self.events
            if isinstance(e, WorkerHeartbeat)
            and any((r.step_id, r.attempt) == (dispatch.step_id, dispatch.attempt) for r in e.steps)
        ]

    async def started(self, dispatch: StepDispatch, timeout: float = 10.0) -> WorkerStarted:
        async def probe() -> WorkerStarted | None:
            found = [e for e in self.of(dispatch) if isinstance(e, WorkerStarted)]
            return found[0] if found else None

        found = await eventually(probe, timeout=timeout, what=f"started of {dispatch.name}")
        assert found is not None
        return found

    async def finished(self, dispatch: StepDispatch, timeout: float = 10.0) -> WorkerFinished:
        async def probe() -> WorkerFinished | None:
            found = [e for e in self.of(dispatch) if isinstance(e, WorkerFinished)]
            return found[0] if found else None

        found = await eventually(probe, timeout=timeout, what=f"finished of {dispatch.name}")
        assert found is not None
        return found

    async def stats(self, queue: str = amqp.pool_queue("default")) -> QueueStats:
        """Ready messages and consumers, as the queue itself answers a passive declare (current,
        unlike the management statistics)."""
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return QueueStats(int(result.message_count or 0), int(result.consumer_count or 0))
        finally:
            await channel.close()

    async def unacked(self, queue: str = amqp.pool_queue("default")) -> int:
        return await unacked(self.url, queue)


@asynccontextmanager
async def orchestrator(url: str, *, declare_event_queue: bool = True) -> AsyncIterator[Orchestrator]:
    connection = await aio_pika.connect_robust(url, reconnect_interval=0.5)
    channel = await connection.channel()
    await amqp.declare_exchanges(channel)
    await amqp.declare_pool_queue(channel, "default")
    orch = Orchestrator(url, connection, channel)
    if declare_event_queue:
        await orch.listen()
    try:
        yield orch
    finally:
        await connection.close()


def worker_settings(url: str, scratch: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "amqp_url": url,
        "heartbeat_seconds": 0.3,
        "step_lease_seconds": 3,
        "worker_concurrency": 4,
        "worker_python_allow": ("tests.unit.worker_steps",),
        "worker_scratch_dir": str(scratch),
        "worker_shutdown_grace_seconds": 5,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    worker = Worker(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 20)
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


PY = sys.executable
