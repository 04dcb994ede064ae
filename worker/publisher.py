"""Worker events to the orchestrator: held in memory, in order, until the broker confirms them.

Each attempt's events form a stream that is sent strictly in order (started, results..., finished).
The publisher sends one message at a time, and it carries everything queued meanwhile (a
WorkerBatch of many streams' events, each stream's in order) once there is more than one event:
a busy worker pays one publish and one confirm for many events, and the orchestrator one
delivery and one ack. A failed publish is sent again whole, so nothing overtakes it. A broker
outage only delays the streams; they resume when `Broker` has reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from itertools import islice

from aio_pika.abc import AbstractChannel, AbstractExchange
from pydantic import BaseModel

from shared import amqp, tracing
from shared.errors import BrokerUnavailable
from shared.messages import MAX_EVENTS_PER_BATCH, batch_body, encode

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT = 10.0
WINDOW = 256
# A batch stops growing past this many bytes of events (it always holds at least one).
BATCH_BYTES = 1024 * 1024
RETRY_MIN = 0.1
RETRY_MAX = 2.0
LOG_EVERY = 30.0


@dataclass
class Pending:
    body: bytes
    type: str
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    confirmed: asyncio.Future[None] | None = None
    # The trace context it was queued in (the attempt's), continued when it is finally sent.
    trace: dict[str, str] = field(default_factory=tracing.carrier)


class EventPublisher:
    def __init__(self, broker: amqp.Broker, *, window: int = WINDOW) -> None:
        self.broker = broker
        self.window = window
        self.published = 0
        self._streams: dict[Hashable, deque[Pending]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._opening = asyncio.Lock()
        self._failing_since: float | None = None
        self._last_log = 0.0

    @property
    def pending(self) -> int:
        return sum(len(stream) for stream in self._streams.values())

    def enqueue(
        self, stream: Hashable, message: BaseModel, *, confirm: bool = False
    ) -> asyncio.Future[None] | None:
        """Queue `message` behind the stream's earlier ones; with `confirm`, a future that resolves
        once the broker has confirmed it. Encoding happens here, so a bad message fails its caller."""
        item = Pending(encode(message), str(getattr(message, "type", "event")))
        if confirm:
            item.confirmed = asyncio.get_running_loop().create_future()
        self._streams.setdefault(stream, deque()).append(item)
        self._idle.clear()
        self._wake.set()
        return item.confirmed

    async def publish_once(self, message: BaseModel, timeout: float = PUBLISH_TIMEOUT) -> bool:
        """One try, no retry: for heartbeats, where a fresh one beats a stale one resent."""
        item = Pending(encode(message), str(getattr(message, "type", "event")))
        try:
            await self._publish(item, timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("one-off publish failed", extra={"action": "worker.publish_failed", "error": repr(exc)})
            return False
        return True

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued event is confirmed; False when `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()
        self._channel = None

    async def _ready(self) -> AbstractExchange:
        if self._channel is not None and not self._channel.is_closed and self._exchange is not None:
            return self._exchange
        async with self._opening:
            return await self._open()

    async def _open(self) -> AbstractExchange:
        if self._channel is not None and not self._channel.is_closed and self._exchange is not None:
            return self._exchange
        # A robust channel reopens itself once the connection is back; only a channel closed for
        # good (or none yet) is replaced, and only while the broker is reachable.
        if self.broker.connection is None or not self.broker.connected.is_set():
            raise BrokerUnavailable("the broker is not connected")
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
            self._channel = None
        channel = await self.broker.channel(confirms=True)
        self._exchange = (await amqp.declare_exchanges(channel))[amqp.WORKER_EVENTS]
        self._channel = channel
        return self._exchange

    async def _publish(self, item: Pending, timeout: float) -> None:
        await self._ready()
        assert self._channel is not None
        with tracing.publishing(amqp.WORKER_EVENTS, amqp.WORKER_EVENT_KEY, parent=item.trace):
            # mandatory: a confirm alone also confirms a message that reached no queue; the channel
            # raises on the return, and that is a failure to retry.
            await amqp.publish(
                self._channel,
                amqp.WORKER_EVENTS,
                amqp.WORKER_EVENT_KEY,
                item.body,
                message_id=item.message_id,
                mandatory=True,
                headers=amqp.message_headers(tracing.carrier()),
                message_type=item.type,
                timeout=timeout,
            )

    def _next(self) -> tuple[list[tuple[Hashable, int]], Pending | None]:
        """The queued events of the first `window` streams, as how many of each stream's it holds
        and the one message that carries them (a batch continues the first event's trace)."""
        taken: list[tuple[Hashable, int]] = []
        bodies: list[bytes] = []
        first: Pending | None = None
        size = 0
        for key, stream in islice(self._streams.items(), self.window):
            sent = 0
            for item in stream:
                if bodies and (size + len(item.body) > BATCH_BYTES or len(bodies) == MAX_EVENTS_PER_BATCH):
                    break
                first = first or item
                bodies.append(item.body)
                size += len(item.body)
                sent += 1
            if sent:
                taken.append((key, sent))
            if sent < len(stream):
                break  # the batch is full
        if first is None or len(bodies) == 1:
            return taken, first
        return taken, Pending(batch_body(bodies), "batch", trace=first.trace)

    def _note_failure(self, error: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            log.warning(
                "worker events not confirmed, holding them",
                extra={"action": "worker.events_held", "pending": self.pending, "error": repr(error)},
            )

    def _note_success(self) -> None:
        if self._failing_since is not None:
            log.info(
                "worker events flowing again",
                extra={
                    "action": "worker.events_resumed",
                    "held_seconds": round(time.monotonic() - self._failing_since, 3),
                    "pending": self.pending,
                },
            )
            self._failing_since = None
            self._last_log = 0.0

    async def run(self) -> None:
        delay = RETRY_MIN
        while True:
            await self._wake.wait()
            taken, message = self._next()
            if message is None:
                self._wake.clear()
                self._idle.set()
                continue
            try:
                await self._publish(message, PUBLISH_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_failure(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            for key, sent in taken:
                # Events queued on these streams while the message was out stay for the next one.
                stream = self._streams[key]
                for _ in range(sent):
                    item = stream.popleft()
                    self.published += 1
                    if item.confirmed is not None and not item.confirmed.done():
                        item.confirmed.set_result(None)
                if not stream:
                    del self._streams[key]
            self._note_success()
            delay = RETRY_MIN
