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
from typing import Any
from uuid import UUID

from asyncpg import Record

from orchestrator.change import Change
from orchestrator.engine import Engine
from orchestrator.repository import Repository
from shared import tracing
from shared.amqp import Broker
from shared.db.pool import CONNECTION_ERRORS
from shared.settings import Settings

log = logging.getLogger(__name__)
BATCH = 200
StepRepair = Callable[[UUID, UUID, int], Awaitable[Change | None]]
# What a pass can repair: the `kind` label of modelruns_reconciler_repairs.
REPAIR_KINDS = (
    "queued_run_started",
    "cancel_carried_out",
    "lease_expired",
    "timed_out",
    "stop_forced",
    "held_finish_released",
)


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
            with repairing("queued_run_started", row["id"]):
                change = await self.engine.advance(row["id"])
            if change is not None and change.events:
                done["queued_run_started"] += 1
        for row in await self.repo.scan("cancelling_runs", stale, BATCH):
            with repairing("cancel_carried_out", row["id"]):
                change = await self.engine.advance(row["id"])
            if change is not None and change.events:
                done["cancel_carried_out"] += 1
        # Heartbeats travel over the broker and renew leases in Postgres: while either is away
        # from this orchestrator, or has just come back, silence says nothing about the workers
        # (the beats held meanwhile are handled first).
        lease = self.settings.step_lease_seconds
        if self.broker.up_for() >= lease and self.db_up_for() >= lease:
            for row in await self.repo.scan("expired_leases", BATCH):
                if await self._changed("lease_expired", row, self.engine.expire_lease):
                    done["lease_expired"] += 1
        grace = self.settings.step_lease_seconds
        for row in await self.repo.scan("overdue_steps", grace, BATCH):
            if await self._changed("timed_out", row, self.engine.time_out):
                done["timed_out"] += 1
        for row in await self.repo.scan("overdue_stops", self.settings.cancel_deadline_seconds, BATCH):
            if await self._changed("stop_forced", row, self.engine.force_stop):
                done["stop_forced"] += 1
        for row in await self.repo.scan("stale_held_finishes", grace, BATCH):
            if await self._changed("held_finish_released", row, self.engine.release_held_finish):
                done["held_finish_released"] += 1
        if done:
            log.info("reconciled", extra={"action": "reconcile.repaired", **dict(done)})
        self.repairs.update(done)
        for kind, count in done.items():
            self.on_repair(kind, count)
        return done

    @staticmethod
    async def _changed(kind: str, row: Record, act: StepRepair) -> bool:
        with repairing(kind, row["run_id"], step_id=row["id"], attempt=row["attempt"]):
            change = await act(row["run_id"], row["id"], row["attempt"])
        return change is not None and bool(change.events or change.dirty_steps)


def repairing(kind: str, run_id: UUID, **ids: Any) -> Any:
    """Each repair starts a trace of its own, which the messages it sends carry on."""
    attributes = {"modelruns.repair": kind, "modelruns.run_id": str(run_id)}
    attributes.update({f"modelruns.{name}": str(value) for name, value in ids.items()})
    return tracing.span(f"reconcile {kind}", attributes=attributes)
