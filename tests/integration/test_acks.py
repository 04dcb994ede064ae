"""Acks coalesced on real RabbitMQ: a mix of acks, nacks and rejects in any order keeps the channel
open, settles each delivery as asked (nacked ones come back, rejected ones do not) and leaves
nothing unacknowledged; a burst acked together is one frame."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from shared.acks import Acknowledger
from tests.waiting import eventually

pytestmark = pytest.mark.services
QUEUE = "acks-test"


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        yield channel
    finally:
        await connection.close()


async def fill(channel: AbstractChannel, n: int) -> AbstractQueue:
    queue = await channel.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    for i in range(n):
        await channel.default_exchange.publish(
            aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=QUEUE,
        )
    return queue


async def held_deliveries(channel: AbstractChannel, n: int) -> list[AbstractIncomingMessage]:
    """`n` messages filled in and delivered, none settled yet."""
    queue = await fill(channel, n)
    held: list[AbstractIncomingMessage] = []

    async def hold(message: AbstractIncomingMessage) -> None:
        held.append(message)

    await queue.consume(hold)
    await eventually(lambda: asyncio.sleep(0, len(held) == n), what="every message delivered")
    return held


async def left_in(amqp_url: str) -> int:
    """Messages in the queue, once every channel that held deliveries is closed."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count
    finally:
        await connection.close()


async def test_a_mix_in_any_order_settles_each_delivery_as_asked(
    channel: AbstractChannel, amqp_url: str
) -> None:
    n = 300
    queue = await fill(channel, n)
    acks = Acknowledger()
    shuffle = random.Random(7)
    deliveries: Counter[int] = Counter()
    acked: set[int] = set()
    rejected: set[int] = set()

    async def handle(message: AbstractIncomingMessage) -> None:
        i = int(message.body)
        deliveries[i] += 1
        # Settled in an order of their own: some at once, some a few turns of the loop later.
        for _ in range(shuffle.randrange(4)):
            await asyncio.sleep(0)
        if i % 7 == 0 and not message.redelivered:
            await acks.nack(message, requeue=True)
        elif i % 11 == 0:
            await acks.reject(message, requeue=False)
            rejected.add(i)
        else:
            await acks.ack(message)
            acked.add(i)

    await queue.consume(handle)
    await eventually(
        lambda: asyncio.sleep(0, len(acked) + len(rejected) == n), timeout=20, what="every message settled"
    )
    assert not channel.is_closed
    assert acked == {i for i in range(n) if i % 11} and rejected == {i for i in range(n) if i % 11 == 0}
    # Nacked ones came back once; nothing else was delivered twice.
    assert {i for i, times in deliveries.items() if times > 1} == {i for i in range(n) if i % 7 == 0}
    assert max(deliveries.values()) == 2
    assert acks.frames < acks.acked
    await channel.close()
    assert await left_in(amqp_url) == 0


async def test_a_burst_acked_together_is_one_frame(channel: AbstractChannel, amqp_url: str) -> None:
    n = 100
    held = await held_deliveries(channel, n)
    acks = Acknowledger()
    # Asked in reverse: the cover still waits for the whole turn, not for the first tag.
    await asyncio.gather(*(acks.ack(m) for m in reversed(held)))
    assert (acks.acked, acks.frames) == (n, 1)
    await channel.close()
    assert await left_in(amqp_url) == 0


async def test_an_ack_on_a_closed_channel_fails_and_the_delivery_returns(
    channel: AbstractChannel, amqp_url: str
) -> None:
    held = await held_deliveries(channel, 3)
    acks = Acknowledger()
    await acks.ack(held[0])
    await channel.close()
    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        await acks.ack(held[1])
    assert await left_in(amqp_url) == 2


async def test_an_undecided_delivery_is_never_covered(channel: AbstractChannel, amqp_url: str) -> None:
    held = await held_deliveries(channel, 5)
    acks = Acknowledger()
    # The second stays undecided while those around it are acked.
    await asyncio.gather(*(acks.ack(m) for i, m in enumerate(held) if i != 1))
    # One `multiple` for the first; above the gap only single acks, as a cover would take the second.
    assert acks.frames == 4
    await channel.close()
    assert await left_in(amqp_url) == 1
