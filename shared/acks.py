"""Settling deliveries: the acks of one consumer channel go out as one `multiple` ack where that is
safe, so a busy consumer pays one frame for many deliveries.

On a quorum queue RabbitMQ spends about as much CPU on a lone ack as on the delivery it settles,
and a seventh of that when one frame acks fifty (bench/RESULTS.md, Summary); the client pays a
frame for each. An ack with `multiple` settles every unsettled delivery of its channel up to
its tag, so it may cover a tag only when each tag below it is either being acknowledged now or
settled already. The broker numbers a channel's deliveries 1, 2, 3, ... with no gaps, so a tag not
heard of yet is a delivery still on its way to its handler, and the cover stops below it.

Acks asked for in one turn of the event loop go together; none waits for more than that turn. A
nack or reject goes out on its own at once, and is in the channel's write queue before any later
`multiple` ack that passes over its tag, so it is never acknowledged instead.
"""

from __future__ import annotations

import asyncio
import bisect
import weakref
from collections.abc import Awaitable, Callable

import aiormq
from aio_pika.abc import AbstractIncomingMessage


class AlreadySettled(ValueError):
    """A delivery settled twice: RabbitMQ would close the channel for it."""


class Ledger:
    """Which deliveries of one channel are settled and which acks are asked for, by tag; no I/O.

    Tags settled above the floor are kept as runs of consecutive tags, so a delivery that is never
    settled (its channel's tags above it keep coming) costs a run per gap, not an entry per tag."""

    def __init__(self) -> None:
        # Every tag up to the floor is settled; above it, `_starts[i]..._ends[i]` are settled runs,
        # disjoint, ascending and never touching one another or the floor.
        self.floor = 0
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._asked: set[int] = set()

    @property
    def asked(self) -> bool:
        return bool(self._asked)

    def is_settled(self, tag: int) -> bool:
        return tag <= self.floor or self._run_end(tag) is not None

    def ask(self, tag: int) -> None:
        """Ack `tag` in the next `plan()`."""
        self._check(tag)
        self._asked.add(tag)

    def settle(self, tag: int) -> None:
        """A frame of its own settles `tag` (a nack, a reject), before any later plan's acks."""
        self._check(tag)
        self._add(tag)

    def plan(self) -> tuple[int | None, list[int]]:
        """The frames that ack every tag asked for: one `multiple` ack up to the cover (None when
        no asked tag is reachable from the floor without passing an unsettled one), then a single
        ack for each asked tag above it, in order. Every asked tag counts as settled from here."""
        cover: int | None = None
        tag = self.floor + 1
        while True:
            if tag in self._asked:
                cover = tag
                tag += 1
            elif (end := self._run_end(tag)) is not None:
                tag = end + 1
            else:
                break
        ordered = sorted(self._asked)
        for asked in ordered:
            self._add(asked)
        self._asked.clear()
        return cover, [t for t in ordered if cover is None or t > cover]

    def _check(self, tag: int) -> None:
        if tag < 1:
            raise ValueError(f"delivery tags start at 1, not {tag}")
        if self.is_settled(tag) or tag in self._asked:
            raise AlreadySettled(f"delivery {tag} is settled already")

    def _run_end(self, tag: int) -> int | None:
        """The last tag of the settled run above the floor that holds `tag`, if any does."""
        i = bisect.bisect_right(self._starts, tag) - 1
        if i >= 0 and self._ends[i] >= tag:
            return self._ends[i]
        return None

    def _add(self, tag: int) -> None:
        """Mark an unsettled `tag` settled, joining it to the runs (or the floor) beside it."""
        i = bisect.bisect_right(self._starts, tag)
        joins_left = i > 0 and self._ends[i - 1] == tag - 1
        joins_right = i < len(self._starts) and self._starts[i] == tag + 1
        if joins_left and joins_right:
            self._ends[i - 1] = self._ends[i]
            del self._starts[i], self._ends[i]
        elif joins_left:
            self._ends[i - 1] = tag
        elif joins_right:
            self._starts[i] = tag
        else:
            self._starts.insert(i, tag)
            self._ends.insert(i, tag)
        if self._starts and self._starts[0] == self.floor + 1:
            self.floor = self._ends[0]
            del self._starts[0], self._ends[0]

    @property
    def runs(self) -> int:
        """Settled runs above the floor: one per delivery still unsettled below a settled one."""
        return len(self._starts)


class _Channel:
    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.ledger = Ledger()
        # Sends go one at a time, in the order their tags were settled in the ledger.
        self.sending = asyncio.Lock()
        # The round still taking acks: it has not planned yet.
        self.gathering: asyncio.Future[None] | None = None


class Acknowledger:
    """Settles the deliveries of manual-ack consumers. Every delivery of a channel it settles must
    be settled through it (a direct `message.ack()` beside it could be acked twice)."""

    def __init__(self) -> None:
        self._channels: weakref.WeakKeyDictionary[aiormq.abc.AbstractChannel, _Channel] = (
            weakref.WeakKeyDictionary()
        )
        self.acked = 0
        self.frames = 0

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Return once the ack is in the channel's write queue, with the others of this turn."""
        state, tag = self._delivery(message)
        state.ledger.ask(tag)
        if state.gathering is None:
            state.gathering = asyncio.ensure_future(self._round(state))
            # Retrieved here too, for a round whose every asker was cancelled.
            state.gathering.add_done_callback(_retrieve)
        # Shielded: the round sends the acks of others too.
        await asyncio.shield(state.gathering)
        self.acked += 1

    async def nack(self, message: AbstractIncomingMessage, *, requeue: bool) -> None:
        await self._alone(message, lambda raw, tag: raw.basic_nack(tag, requeue=requeue, wait=False))

    async def reject(self, message: AbstractIncomingMessage, *, requeue: bool) -> None:
        await self._alone(message, lambda raw, tag: raw.basic_reject(tag, requeue=requeue, wait=False))

    async def _alone(
        self,
        message: AbstractIncomingMessage,
        send: Callable[[aiormq.abc.AbstractChannel, int], Awaitable[object]],
    ) -> None:
        state, tag = self._delivery(message)
        async with state.sending:
            state.ledger.settle(tag)
            await send(state.channel, tag)
        self.frames += 1

    def _delivery(self, message: AbstractIncomingMessage) -> tuple[_Channel, int]:
        tag = message.delivery_tag
        if tag is None:
            raise TypeError("a message consumed without acks cannot be settled")
        channel = message.channel  # raises when the channel it came on is closed
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel(channel)
        return state, tag

    async def _round(self, state: _Channel) -> None:
        # One turn of the loop, so that the acks of everyone woken by the same commit or confirm
        # join this round.
        await asyncio.sleep(0)
        async with state.sending:
            state.gathering = None
            if not state.ledger.asked:
                return
            cover, singles = state.ledger.plan()
            # aiormq raises ChannelInvalidStateError for a channel that has closed meanwhile.
            if cover is not None:
                await state.channel.basic_ack(cover, multiple=True, wait=False)
            for tag in singles:
                await state.channel.basic_ack(tag, wait=False)
        self.frames += (cover is not None) + len(singles)


def _retrieve(round_: asyncio.Future[None]) -> None:
    if not round_.cancelled():
        round_.exception()

