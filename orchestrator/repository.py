"""The orchestrator's reads and writes; every statement is in orchestrator/queries.sql."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from orchestrator.change import Change
from orchestrator.state import RunState, StepState
from shared import outbox
from shared.db import queries
from shared.db.pool import Conn
from shared.errors import ModelRunsError
from shared.messages import ReportedResult
from shared.models.api import MAX_TEST_MESSAGE

Q = queries.load("orchestrator")
TRUNCATED = " [truncated]"


class LostRace(ModelRunsError):
    """A guarded UPDATE matched fewer rows than it read: someone moved the state meanwhile."""


def cut_message(message: str | None) -> str | None:
    if message is None or len(message) <= MAX_TEST_MESSAGE:
        return message
    return message[: MAX_TEST_MESSAGE - len(TRUNCATED)] + TRUNCATED


class Repository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @staticmethod
    async def lock(conn: Conn, run_id: UUID) -> tuple[RunState, list[StepState]] | None:
        row = await conn.fetchrow(Q.lock_run, run_id)
        if row is None:
            return None
        steps = [StepState.from_record(r) for r in await conn.fetch(Q.run_steps, run_id)]
        return RunState.from_record(row), steps

    async def run_of_step(self, step_id: UUID) -> UUID | None:
        value = await self.pool.fetchval(Q.step_run, step_id)
        return value if isinstance(value, UUID) else None

    @staticmethod
    async def insert_results(
        conn: Conn, run_id: UUID, step_id: UUID, attempt: int, results: Sequence[ReportedResult]
    ) -> list[asyncpg.Record]:
        return list(
            await conn.fetch(
                Q.insert_results,
                run_id,
                step_id,
                attempt,
                [uuid4() for _ in results],
                [r.seq for r in results],
                [r.name for r in results],
                [r.status.value for r in results],
                [r.duration_ms for r in results],
                [cut_message(r.message) for r in results],
                [r.metrics for r in results],
            )
        )

    @staticmethod
    async def write(conn: Conn, change: Change) -> None:
        """Write what `change` decided, in the caller's transaction (which holds the run lock)."""
        steps = change.dirty_steps
        if steps:
            updated = await conn.fetch(
                Q.update_steps,
                [s.id for s in steps],
                [s.loaded_status.value for s in steps],
                [s.status.value for s in steps],
                [s.attempt for s in steps],
                [s.worker_id for s in steps],
                [s.outputs for s in steps],
                [s.error for s in steps],
                [s.test_counts for s in steps],
                [s.results_stored for s in steps],
                [s.held_finish for s in steps],
                [s.held_finish_at for s in steps],
                [s.queued_at for s in steps],
                [s.started_at for s in steps],
                [s.finished_at for s in steps],
                [s.lease_expires_at for s in steps],
                [s.stop_requested_at for s in steps],
                [s.not_before for s in steps],
                [s.dispatch_count for s in steps],
            )
            if len(updated) != len(steps):
                raise LostRace(f"{len(steps) - len(updated)} step(s) of run {change.run.id} moved meanwhile")
        if change.run_dirty:
            run = change.run
            done = await conn.fetchval(
                Q.update_run,
                run.id,
                run.loaded_status.value,
                run.status.value,
                run.step_counts,
                run.test_counts,
                run.last_runseq,
                run.error,
                run.started_at,
                run.finished_at,
            )
            if done is None:
                raise LostRace(f"run {run.id} moved meanwhile")
        if change.events:
            await conn.execute(
                Q.insert_events,
                change.run.id,
                [e.runseq for e in change.events],
                [e.event_id for e in change.events],
                [e.type for e in change.events],
                [e.body for e in change.events],
            )
        await outbox.insert(conn, change.messages)

    async def heartbeat_targets(self, step_ids: list[UUID], attempts: list[int]) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q.heartbeat_targets, step_ids, attempts))

    async def renew_leases(
        self, step_ids: list[UUID], attempts: list[int], worker_id: str, lease_seconds: float
    ) -> None:
        await self.pool.execute(Q.renew_leases, step_ids, attempts, worker_id, lease_seconds)

    async def scan(self, name: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(getattr(Q, name), *args))
