"""How every consumed message is settled, decided in one place.

- handled: ack, with the others acknowledged in the same turn (shared.acks).
- poison (InvalidMessage): reject without requeue, so it is dead-lettered with a log line.
- Postgres unreachable: keep the message and try again with backoff; worker events carry facts
  that exist nowhere else, so they are never dropped because the database was away.
- anything else: requeue; the queue's delivery limit dead-letters a message that keeps failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from shared import amqp, tracing
from shared.acks import Acknowledger
from shared.db.pool import CONNECTION_ERRORS
from shared.errors import DatabaseUnavailable, InvalidMessage

log = logging.getLogger(__name__)
Handler = Callable[[bytes], Awaitable[None]]
Consume = Callable[[AbstractIncomingMessage], Awaitable[None]]
TRANSIENT: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    DatabaseUnavailable,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.QueryCanceledError,
)
MAX_BACKOFF = 5.0


def settling(
    queue: str,
    handler: Handler,
    acks: Acknowledger,
    count: Callable[[str], None] = lambda _: None,
    lag: Callable[[float], None] = lambda _: None,
) -> Consume:
    async def consume(message: AbstractIncomingMessage) -> None:
        sent = amqp.lag_of(message.headers)
        if sent is not None:
            lag(sent)
        # Handling continues the trace of whoever published the message.
        with tracing.consuming(queue, message.headers, message.message_id):
            await settle(message)

    async def settle(message: AbstractIncomingMessage) -> None:
        delay = 0.1
        while True:
            try:
                await handler(message.body)
            except InvalidMessage as exc:
                log.warning(
                    "poison message dead-lettered",
                    extra={
                        "action": "message.poison",
                        "queue": queue,
                        "error": str(exc),
                        "message_id": message.message_id,
                    },
                )
                await acks.reject(message, requeue=False)
                count("poison")
                return
            except TRANSIENT as exc:
                log.warning(
                    "postgres unavailable, holding the message",
                    extra={"action": "message.retry", "queue": queue, "error": repr(exc)},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            except Exception:
                log.exception(
                    "message handling failed",
                    extra={"action": "message.failed", "queue": queue, "message_id": message.message_id},
                )
                await acks.nack(message, requeue=True)
                count("requeued")
                return
            await acks.ack(message)
            count("handled")
            return

    return consume
