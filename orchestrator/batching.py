"""Messages of many runs, gathered into one transaction while earlier transactions are under way.

Each round trip to Postgres costs more than the decisions it carries, so the orchestrator pays for
one lock, one read and one write per batch, not per message. A quiet orchestrator sends the first
message at once, alone; what arrives while `in_flight` transactions are open waits for the next,
and goes with everything else that arrived meanwhile. A run is in at most one open transaction,
so its messages are decided in the order they were submitted. Every caller's await returns only
once the transaction holding its message committed, so a message is still acknowledged only
after its effects are durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar
from uuid import UUID

log = logging.getLogger(__name__)
E = TypeVar("E")
Apply = Callable[[Mapping[UUID, Sequence[E]]], Awaitable[None]]
MAX_BATCH = 256
# One open transaction at a time: under load its batches are the largest (W1 gave 192 steps/s
# with two, 221-258 with one), and a quiet orchestrator still sends a message at once.
IN_FLIGHT = 1


class Batcher(Generic[E]):
    def __init__(
        self,
        apply: Apply[E],
        *,
        max_batch: int = MAX_BATCH,
        in_flight: int = IN_FLIGHT,
        whole: tuple[type[BaseException], ...] = (),
    ) -> None:
        """`whole`: errors that are no message's fault (Postgres away) fail the batch at once
        rather than being tried again message by message."""
        if max_batch < 1 or in_flight < 1:
            raise ValueError("max_batch and in_flight must be at least 1")
        self.apply = apply
        self.whole = whole
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._waiting: dict[UUID, list[tuple[E, asyncio.Future[None]]]] = {}
        self._busy: set[UUID] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        return sum(len(items) for items in self._waiting.values())

    async def submit(self, run_id: UUID, item: E) -> None:
        """Return once `item` is committed; raise what its transaction raised."""
        await self.submit_many([(run_id, item)])

    async def submit_many(self, items: Sequence[tuple[UUID, E]]) -> None:
        """Return once every item is committed (each run's in the order given); raise the first
        error of any. The others are decided all the same."""
        loop = asyncio.get_running_loop()
        dones: list[asyncio.Future[None]] = []
        for run_id, item in items:
            done = loop.create_future()
            self._waiting.setdefault(run_id, []).append((item, done))
            dones.append(done)
        self._kick()
        outcomes = await asyncio.gather(*dones, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _kick(self) -> None:
        while len(self._tasks) < self.in_flight:
            batch = self._take()
            if not batch:
                return
            self._busy.update(batch)
            task = asyncio.create_task(self._run(batch), name="orchestrator-batch")
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _take(self) -> dict[UUID, list[tuple[E, asyncio.Future[None]]]]:
        """The oldest waiting runs that are in no open transaction, up to `max_batch` items; a run
        with more than that waiting goes alone, the rest of its items in later batches."""
        batch: dict[UUID, list[tuple[E, asyncio.Future[None]]]] = {}
        taken = 0
        for run_id in list(self._waiting):
            if run_id in self._busy:
                continue
            items = self._waiting[run_id]
            room = self.max_batch - taken
            if len(items) > room and batch:
                break
            batch[run_id] = items[:room]
            taken += len(batch[run_id])
            if len(items) > room:
                del items[:room]
            else:
                del self._waiting[run_id]
            if taken >= self.max_batch:
                break
        return batch

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a batch ended without settling", exc_info=task.exception())
        self._kick()

    async def _run(self, batch: dict[UUID, list[tuple[E, asyncio.Future[None]]]]) -> None:
        try:
            await self._apply(batch)
        except BaseException as exc:
            # Cancelled (the orchestrator is stopping): nobody is acknowledged.
            for items in batch.values():
                for _, done in items:
                    _settle(done, exc)
            raise
        finally:
            self._busy.difference_update(batch)

    async def _apply(self, batch: dict[UUID, list[tuple[E, asyncio.Future[None]]]]) -> None:
        if await self._try(batch):
            return
        # One message must not fail the others: each run goes again alone, and within a run that
        # still fails, each message alone.
        log.info(
            "a batch failed, handling its messages one by one",
            extra={"action": "engine.batch_split", "runs": len(batch)},
        )
        for run_id, items in batch.items():
            if len(batch) > 1 and len(items) > 1 and await self._try({run_id: items}):
                continue
            for one in items:
                await self._try({run_id: [one]})

    async def _try(self, batch: dict[UUID, list[tuple[E, asyncio.Future[None]]]]) -> bool:
        """Apply `batch`; True when that settled every item: it committed, or it failed for a
        reason that is no item's own, or it held one item. Otherwise nothing is settled and the
        batch is to be tried again in parts."""
        dones = [done for items in batch.values() for _, done in items]
        try:
            await self.apply({run_id: [item for item, _ in items] for run_id, items in batch.items()})
        except Exception as exc:
            if len(dones) > 1 and not isinstance(exc, self.whole):
                log.debug("batch failed", extra={"action": "engine.batch_failed", "error": repr(exc)})
                return False
            for done in dones:
                _settle(done, exc)
            return True
        for done in dones:
            _settle(done, None)
        return True


def _settle(done: asyncio.Future[None], exc: BaseException | None) -> None:
    if done.done():
        return  # settled already, or its waiter was cancelled
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)
