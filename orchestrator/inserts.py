"""The test results a transaction's decisions report, stored in one statement for all the runs.

A decision that reports results needs the rows they made (a redelivered report makes none) before
it goes on, so each run's decisions are a task of their own: once every run still deciding waits
for its insert, one statement stores them all and they go on. A batch of many runs' events pays
one round trip for their results, not one each; a run's decisions stay in their order, and runs
share nothing else while deciding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from orchestrator.repository import Report, Repository
from shared.db.pool import Conn


class ResultInserts:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._waiting: list[tuple[Report, asyncio.Future[list[asyncpg.Record]]]] = []
        # Decisions neither waiting for an insert nor done.
        self._running = 0
        self._due = asyncio.Event()

    async def insert(self, report: Report) -> list[asyncpg.Record]:
        """The rows `report` stored that were not stored before, by seq."""
        if self._running <= 1 and not self._waiting:
            # Nobody else is deciding: nobody to wait for.
            return (await Repository.insert_results(self._conn, [report]))[0]
        stored: asyncio.Future[list[asyncpg.Record]] = asyncio.get_running_loop().create_future()
        self._waiting.append((report, stored))
        self._running -= 1
        if self._running == 0:
            self._due.set()
        return await stored

    async def decide(self, decisions: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """Run `decisions` (each one run's), storing their results together; raise the first
        error of any, once none of them is left running."""
        self._running = len(decisions)
        if len(decisions) <= 1:
            for decision in decisions:
                await decision()
            return
        tasks = [asyncio.ensure_future(decision()) for decision in decisions]
        for task in tasks:
            task.add_done_callback(self._decided)
        try:
            while True:
                await self._due.wait()
                self._due.clear()
                for task in tasks:
                    error = None if not task.done() or task.cancelled() else task.exception()
                    if error is not None:
                        raise error
                if self._waiting and self._running == 0:
                    waiting, self._waiting = self._waiting, []
                    stored = await Repository.insert_results(self._conn, [report for report, _ in waiting])
                    self._running += len(waiting)
                    for (_, future), rows in zip(waiting, stored, strict=True):
                        future.set_result(rows)
                elif all(task.done() for task in tasks):
                    return
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _decided(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        self._running -= 1
        if self._running == 0 or task.exception() is not None:
            self._due.set()
