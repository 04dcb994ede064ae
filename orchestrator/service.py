"""`modelruns orchestrator`: consumes commands and worker events, reconciles, sends the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from uuid import UUID

from aio_pika.abc import AbstractIncomingMessage

from orchestrator.acking import Consume, Handler, settling
from orchestrator.batching import Batcher
from orchestrator.change import Change
from orchestrator.engine import Decidable, Engine
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.reconciler import Reconciler
from orchestrator.repository import Repository
from shared import amqp
from shared.acks import Acknowledger
from shared.amqp import Broker
from shared.db.pool import CONNECTION_ERRORS, wait_for_pool
from shared.errors import DatabaseUnavailable, InvalidMessage
from shared.events import TERMINAL_RUN_EVENTS
from shared.messages import (
    RunCommand,
    StepDispatch,
    WorkerHeartbeat,
    decode,
    decode_worker_message,
)
from shared.ops import OpsServer
from shared.outbox import OutboxPublisher
from shared.settings import Settings

log = logging.getLogger(__name__)
PREFETCH = 64


class Orchestrator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = f"orchestrator-{socket.gethostname()}-{os.getpid()}"
        self.broker = Broker(settings.amqp_url, name=self.name)
        self.tasks: list[asyncio.Task[None]] = []
        self.metrics = OrchestratorMetrics()
        self.ops: OpsServer | None = None
        # Every delivery of the consuming channel is settled through it, the dead letters' too.
        self.acks = Acknowledger()

    def observe(self, change: Change) -> None:
        self.metrics.observe(change)
        for fact in change.events:
            if fact.type in TERMINAL_RUN_EVENTS:
                log.info(
                    "run finished",
                    extra={
                        "action": "run.finished",
                        "run_id": str(change.run.id),
                        "tenant_id": change.run.tenant_id,
                        "status": fact.type.rsplit(".", 1)[1],
                    },
                )

    async def refresh(self) -> None:
        depth, oldest = await self.publisher.depth()
        self.metrics.outbox_depth.set(depth)
        self.metrics.outbox_oldest.set(oldest)
        self.metrics.published.set(self.publisher.published)

    async def readiness(self) -> dict[str, str]:
        checks = {"postgres": "ok", "rabbitmq": "ok" if self.broker.up_for() > 0 else "down"}
        try:
            await self.refresh()
        except Exception:
            checks["postgres"] = "down"
        return checks

    def settle(self, queue: str, handler: Handler) -> Consume:
        return settling(
            queue,
            handler,
            self.acks,
            count=lambda outcome: self.metrics.messages.labels(queue, outcome).inc(),
            lag=self.metrics.consumer_lag.labels(queue).observe,
        )

    async def start(self) -> None:
        self.pool = await wait_for_pool(self.settings.database_url, max_size=self.settings.database_pool_size)
        self.repo = Repository(self.pool)
        if not await self.repo.autovacuum():
            # Every step rewrites its outbox rows, its step and its run: without vacuuming, their
            # dead rows pile up and every claim and lock reads through them.
            log.warning(
                "postgres runs with autovacuum off: the outbox, steps and runs tables will bloat",
                extra={"action": "postgres.autovacuum_off"},
            )
        await self.broker.connect()
        self.publisher = OutboxPublisher(
            self.pool,
            self.broker,
            poll_seconds=self.settings.outbox_poll_seconds,
        )
        self.engine = Engine(self.repo, self.settings, on_commit=self.publisher.wake, on_change=self.observe)
        # Commands and worker events share the batches: a trigger and the events of other runs
        # are one transaction.
        self.batcher: Batcher[Decidable] = Batcher(
            self.engine.handle, whole=(*CONNECTION_ERRORS, DatabaseUnavailable)
        )
        self.reconciler = Reconciler(
            self.engine,
            self.repo,
            self.broker,
            self.settings,
            on_repair=lambda kind, n: self.metrics.repairs.labels(kind).inc(n),
        )
        self.channel = await self.broker.channel(confirms=False, prefetch=PREFETCH)
        queues = await amqp.declare_orchestrator_queues(self.channel)
        await queues[amqp.COMMANDS_QUEUE].consume(self.settle(amqp.COMMANDS_QUEUE, self.on_command))
        await queues[amqp.WORKER_EVENTS_QUEUE].consume(
            self.settle(amqp.WORKER_EVENTS_QUEUE, self.on_worker_event)
        )
        await queues[amqp.DEAD_QUEUE].consume(self.on_dead_letter)
        self.tasks = [
            asyncio.create_task(self.publisher.run(), name="outbox"),
            asyncio.create_task(self.reconciler.run(), name="reconciler"),
        ]
        if self.settings.ops_port is not None:
            self.ops = OpsServer(
                self.settings.http_host,
                self.settings.ops_port,
                self.metrics.registry,
                self.readiness,
                refresh=self.refresh,
            )
            await self.ops.start()
        self.publisher.wake()
        log.info("orchestrator ready", extra={"action": "orchestrator.ready", "orchestrator": self.name})

    async def stop(self) -> None:
        if self.ops is not None:
            await self.ops.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.broker.close()
        await self.pool.close()

    async def on_command(self, body: bytes) -> None:
        command = decode(RunCommand, body)
        await self.batcher.submit(command.run_id, command)

    async def on_worker_event(self, body: bytes) -> None:
        events, problems = decode_worker_message(body)
        for problem in problems:
            log.warning(
                "poison worker event dropped", extra={"action": "message.poison_event", "error": problem}
            )
            self.metrics.messages.labels(amqp.WORKER_EVENTS_QUEUE, "poison_event").inc()
        steps: list[tuple[UUID, Decidable]] = []
        for event in events:
            if isinstance(event, WorkerHeartbeat):
                await self.engine.heartbeat(event)
            else:
                steps.append((event.run_id, event))
        if steps:
            await self.batcher.submit_many(steps)

    async def on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """Settle what the broker gave up on: a dispatch is re-sent or its attempt failed; anything
        else is logged and dropped (the reconciler repairs what a lost nudge left behind)."""
        headers = message.headers or {}
        origin = str(headers.get("x-first-death-queue") or "")
        reason = str(headers.get("x-first-death-reason") or "")
        extra = {
            "action": "message.dead",
            "queue": origin,
            "reason": reason,
            "message_id": message.message_id,
        }
        try:
            if origin.startswith(amqp.STEPS + "."):
                try:
                    dispatch = decode(StepDispatch, message.body)
                except InvalidMessage as exc:
                    log.warning(
                        "dropped a dead dispatch that does not parse", extra={**extra, "error": str(exc)}
                    )
                else:
                    log.warning(
                        "dispatch dead-lettered",
                        extra={**extra, "step_id": str(dispatch.step_id), "attempt": dispatch.attempt},
                    )
                    await self.engine.undeliverable(dispatch)
            else:
                log.warning("dropped a dead message", extra=extra)
        except Exception:
            log.exception("dead letter handling failed", extra=extra)
            await self.acks.nack(message, requeue=True)
            return
        await self.acks.ack(message)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    orchestrator = Orchestrator(settings)
    await orchestrator.start()
    try:
        await stop.wait()
    finally:
        await orchestrator.stop()
