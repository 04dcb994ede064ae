"""Worker events of one run, gathered into one transaction while that run's previous one is under
way. The first event of a quiet run goes at once, alone; events that arrive meanwhile wait for it
and then go together, so a burst costs one lock, one read and one write per run instead of one
per event. Every caller's await returns only once the transaction holding its event committed, so
a message is still acknowledged only after its effects are durable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar
from uuid import UUID

log = logging.getLogger(__name__)
E = TypeVar("E")
MAX_BATCH = 64


class RunBatcher(Generic[E]):
    def __init__(
        self, apply: Callable[[UUID, Sequence[E]], Awaitable[None]], *, max_batch: int = MAX_BATCH
    ) -> None:
        self.apply = apply
        self.max_batch = max_batch
        self._waiting: dict[UUID, list[tuple[E, asyncio.Future[None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, run_id: UUID, event: E) -> None:
        """Return once `event` is committed; raise what its transaction raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(run_id)
        if waiting is None:
            self._waiting[run_id] = [(event, done)]
            task = asyncio.create_task(self._drain(run_id), name=f"run-batch-{run_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            waiting.append((event, done))
        await done

    async def _drain(self, run_id: UUID) -> None:
        waiting = self._waiting[run_id]
        batch: list[tuple[E, asyncio.Future[None]]] = []
        try:
            while waiting:
                batch = waiting[: self.max_batch]
                del waiting[: len(batch)]
                await self._apply(run_id, batch)
                batch = []
        except BaseException as exc:
            for _, done in batch + waiting:
                if not done.done():
                    done.set_exception(exc)
            raise
        finally:
            del self._waiting[run_id]

    async def _apply(self, run_id: UUID, batch: list[tuple[E, asyncio.Future[None]]]) -> None:
        try:
            await self.apply(run_id, [event for event, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            # One event must not fail the others: each goes again alone.
            log.info(
                "a batch of worker events failed, handling them one by one",
                extra={"action": "engine.batch_split", "run_id": str(run_id), "error": repr(exc)},
            )
            for event, done in batch:
                try:
                    await self.apply(run_id, [event])
                except Exception as one:
                    _settle(done, one)
                else:
                    _settle(done, None)
            return
        for _, done in batch:
            _settle(done, None)


def _settle(done: asyncio.Future[None], exc: BaseException | None) -> None:
    if done.done():
        return  # its waiter was cancelled
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)
