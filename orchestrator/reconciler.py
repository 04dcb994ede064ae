"""Level-triggered repairs: what a lost message, a dead worker or a crash left behind.

Each pass looks at the database and nudges the engine, which re-checks everything under the
run's lock, so any number of orchestrators can reconcile at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from orchestrator.change import Change
from orchestrator.engine import Engine
from orchestrator.repository import Repository
from shared.amqp import Broker
from shared.db.pool import CONNECTION_ERRORS
from shared.settings import Settings

log = logging.getLogger(__name__)
BATCH = 200


class Reconciler:
    def __init__(
        self,
        engine: Engine,
        repo: Repository,
        broker: Broker,
        settings: Settings,
        on_repair: Callable[[str, int], None] = lambda kind, n: None,
    ) -> None:
        self.on_repair = on_repair
        self.engine = engine
        self.repo = repo
        self.broker = broker
        self.settings = settings
        self.repairs: Counter[str] = Counter()
        # Since when this orchestrator has reached Postgres without a break (see `once`).
        self._db_up_since: float | None = time.monotonic()

    def db_up_for(self) -> float:
        return 0.0 if self._db_up_since is None else time.monotonic() - self._db_up_since

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_seconds)
            try:
                await self.once()
            except CONNECTION_ERRORS as exc:
                self._db_up_since = None
                log.warning(
                    "postgres unavailable for the reconciler",
                    extra={"action": "reconcile.db_down", "error": repr(exc)},
                )
            except Exception:
                log.exception("reconcile pass failed", extra={"action": "reconcile.failed"})

    async def once(self) -> Counter[str]:
        done: Counter[str] = Counter()
        stale = self.settings.reconcile_seconds
        queued = await self.repo.scan("stale_queued_runs", stale, BATCH)
        if self._db_up_since is None:
            self._db_up_since = time.monotonic()
        for row in queued:
            change = await self.engine.advance(row["id"])
            if change is not None and change.events:
                done["queued_run_started"] += 1
        for row in await self.repo.scan("cancelling_runs", stale, BATCH):
            change = await self.engine.advance(row["id"])
            if change is not None and change.events:
                done["cancel_carried_out"] += 1
        # Heartbeats travel over the broker and renew leases in Postgres: while either is away
        # from this orchestrator, or has just come back, silence says nothing about the workers
        # (the beats held meanwhile are handled first).
        lease = self.settings.step_lease_seconds
        if self.broker.up_for() >= lease and self.db_up_for() >= lease:
            for row in await self.repo.scan("expired_leases", BATCH):
                if await self._changed(self.engine.expire_lease(row["run_id"], row["id"], row["attempt"])):
                    done["lease_expired"] += 1
        grace = self.settings.step_lease_seconds
        for row in await self.repo.scan("overdue_steps", grace, BATCH):
            if await self._changed(self.engine.time_out(row["run_id"], row["id"], row["attempt"])):
                done["timed_out"] += 1
        for row in await self.repo.scan("overdue_stops", self.settings.cancel_deadline_seconds, BATCH):
            if await self._changed(self.engine.force_stop(row["run_id"], row["id"], row["attempt"])):
                done["stop_forced"] += 1
        for row in await self.repo.scan("stale_held_finishes", grace, BATCH):
            if await self._changed(self.engine.release_held_finish(row["run_id"], row["id"], row["attempt"])):
                done["held_finish_released"] += 1
        if done:
            log.info("reconciled", extra={"action": "reconcile.repaired", **dict(done)})
        self.repairs.update(done)
        for kind, count in done.items():
            self.on_repair(kind, count)
        return done

    @staticmethod
    async def _changed(pending: Awaitable[Change | None]) -> bool:
        change = await pending
        return change is not None and bool(change.events or change.dirty_steps)
