"""The transactional outbox: messages are written in the transaction that decided them and sent
after it commits, with pipelined publisher confirms; a row is deleted only once the broker confirmed
it. A crash between commit and publish delays a message, never loses it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange
from pydantic import BaseModel

from shared import amqp, jsonutil, tracing
from shared.db import queries
from shared.db.pool import CONNECTION_ERRORS, Conn
from shared.events import CONTENT_TYPE
from shared.messages import encode, utc_now

log = logging.getLogger(__name__)
Q = queries.load("shared", "outbox.sql")
PUBLISH_TIMEOUT = 10.0


@dataclass
class Outgoing:
    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    mandatory: bool
    content_type: str = "application/json"
    available_at: datetime = field(default_factory=utc_now)
    # The trace context to continue when it is sent; empty: that of the transaction writing it.
    headers: dict[str, str] = field(default_factory=dict)


def internal(
    exchange: str, routing_key: str, message: BaseModel, message_id: str, *, at: datetime | None = None
) -> Outgoing:
    """A command, dispatch or control message: mandatory, since an unroutable one is a failure."""
    return Outgoing(exchange, routing_key, encode(message), message_id, True, available_at=at or utc_now())


def control(worker_id: str, message: BaseModel, message_id: str) -> Outgoing:
    """A stop for one worker: not mandatory. Its queue is exclusive and goes with the worker, so an
    unroutable stop means nobody is left to tell; retrying it would keep it in the outbox for
    ever. A worker that was only cut off hears the stop again in answer to its next heartbeat."""
    return Outgoing(amqp.CONTROL, amqp.control_key(worker_id), encode(message), message_id, False)


def public(routing_key: str, event: dict[str, Any]) -> Outgoing:
    """A fact for the results exchange: not mandatory, since nobody has to listen."""
    return Outgoing(amqp.RESULTS, routing_key, jsonutil.dumps(event), str(event["id"]), False, CONTENT_TYPE)


def columns(messages: Sequence[Outgoing]) -> list[list[Any]]:
    """The rows of `messages` as one array per column, in the order of the insert's unnest(): for
    `insert`, or for a statement of the caller's that writes the outbox beside other tables."""
    context = tracing.carrier() if messages else {}
    return [
        [m.exchange for m in messages],
        [m.routing_key for m in messages],
        [m.body for m in messages],
        [m.content_type for m in messages],
        [m.message_id for m in messages],
        [m.mandatory for m in messages],
        [m.available_at for m in messages],
        [m.headers or context for m in messages],
    ]


async def insert(conn: Conn, messages: Sequence[Outgoing]) -> None:
    if messages:
        await conn.execute(Q.insert, *columns(messages))


class OutboxPublisher:
    """Sends the outbox. `wake()` after a commit that wrote rows; a poll catches delayed rows and
    whatever another process left behind.

    A publisher sends the rows of the exchanges it is given (every row when none are): the
    gateway's sends commands only, as its broker user may write nowhere else, and the
    orchestrator's sends everything, the gateway's events included. A publisher that sends
    dispatches declares a pool's queue before its first one: a step for a pool with no worker yet
    then waits in its queue instead of being returned as unroutable."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: amqp.Broker,
        *,
        poll_seconds: float = 0.5,
        batch: int = 500,
        exchanges: Collection[str] | None = None,
        in_flight: int = 2,
    ) -> None:
        self.pool = pool
        self.in_flight = in_flight
        self.exchanges = None if exchanges is None else sorted(exchanges)
        self.broker = broker
        self.poll_seconds = poll_seconds
        self.batch = batch
        self._pool_queues: set[str] = set()
        self.published = 0
        self._wake = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    def wake(self) -> None:
        self._wake.set()

    async def _exchange(self, name: str) -> AbstractExchange:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self.broker.channel(confirms=True)
            self._exchanges = await amqp.declare_exchanges(self._channel)
        return self._exchanges[name]

    async def _send(self, rows: Sequence[asyncpg.Record]) -> tuple[list[int], list[int]]:
        async def one(row: asyncpg.Record) -> None:
            await self._exchange(row["exchange"])  # (re)opens the channel and declares them
            if row["exchange"] == amqp.STEPS and row["routing_key"] not in self._pool_queues:
                assert self._channel is not None
                await amqp.declare_pool_queue(self._channel, row["routing_key"])
                self._pool_queues.add(row["routing_key"])
            with tracing.publishing(row["exchange"], row["routing_key"], parent=row["headers"]):
                assert self._channel is not None
                await amqp.publish(
                    self._channel,
                    row["exchange"],
                    row["routing_key"],
                    bytes(row["body"]),
                    message_id=row["message_id"],
                    mandatory=row["mandatory"],
                    headers=amqp.message_headers(tracing.carrier()),
                    content_type=row["content_type"],
                    timeout=PUBLISH_TIMEOUT,
                )

        # Exchanges are looked up once before the pipelined publish, so a reconnect is paid once.
        await self._exchange(amqp.RESULTS)
        outcomes = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        ok: list[int] = []
        failed: list[int] = []
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                failed.append(row["id"])
                log.warning(
                    "publish failed, will retry",
                    extra={
                        "action": "outbox.publish_failed",
                        "exchange": row["exchange"],
                        "routing_key": row["routing_key"],
                        "error": repr(outcome),
                        "attempts": row["attempts"] + 1,
                    },
                )
            else:
                ok.append(row["id"])
        return ok, failed

    async def drain_once(self) -> int:
        """Send one batch; returns how many rows were confirmed (0 when nothing was due or all failed)."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(Q.claim, self.batch, self.exchanges)
            if not rows:
                return 0
            try:
                ok, failed = await self._send(rows)
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
                log.warning(
                    "broker unavailable for the outbox",
                    extra={"action": "outbox.broker_down", "error": repr(exc)},
                )
                ok, failed = [], [r["id"] for r in rows]
            if ok:
                await conn.execute(Q.delete, ok)
            if failed:
                await conn.execute(Q.defer, failed)
        self.published += len(ok)
        if failed and not ok:
            return 0
        return len(ok)

    async def drain(self) -> int:
        total = 0
        while True:
            sent = await self.drain_once()
            total += sent
            if sent < self.batch:
                return total

    async def run(self) -> None:
        """Drain on every wake and poll. A wake while a drain waits for its confirms starts another
        beside it (up to `in_flight`): rows committed meanwhile need not wait for the round before
        them. The claims skip each other's rows, and both publish on one channel, in order."""
        draining: set[asyncio.Task[None]] = set()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                self._wake.clear()
                if len(draining) >= self.in_flight:
                    await asyncio.wait(draining, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(self._drain_logged(), name="outbox-drain")
                draining.add(task)
                task.add_done_callback(draining.discard)
        finally:
            for task in draining:
                task.cancel()

    async def _drain_logged(self) -> None:
        try:
            await self.drain()
        except CONNECTION_ERRORS as exc:
            log.warning(
                "postgres unavailable for the outbox",
                extra={"action": "outbox.db_down", "error": repr(exc)},
            )
            await asyncio.sleep(self.poll_seconds)
        except asyncpg.PostgresError as exc:
            log.error("outbox drain failed", extra={"action": "outbox.error", "error": repr(exc)})
            await asyncio.sleep(self.poll_seconds)

    async def depth(self) -> tuple[int, float]:
        row = await self.pool.fetchrow(Q.depth)
        assert row is not None
        return int(row["depth"]), float(row["oldest_seconds"])
