"""The orchestrator's reads and writes; every statement is in orchestrator/queries.sql."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


# The parameters of write_changes' step and run UPDATEs, in their order: the value each row had
# when read (loaded_status, which the UPDATE guards on) and the values it has now.
STEP_COLUMNS = (
    "id",
    "loaded_status",
    "status",
    "attempt",
    "worker_id",
    "outputs",
    "error",
    "test_counts",
    "results_stored",
    "held_finish",
    "held_finish_at",
    "queued_at",
    "started_at",
    "finished_at",
    "lease_expires_at",
    "stop_requested_at",
    "not_before",
    "dispatch_count",
)
RUN_COLUMNS = (
    "id",
    "loaded_status",
    "status",
    "step_counts",
    "test_counts",
    "last_runseq",
    "error",
    "started_at",
    "finished_at",
)


def columns(rows: Sequence[object], names: Sequence[str]) -> list[list[Any]]:
    """One array per attribute named, in that order: the parameters of an unnest() statement."""
    return [[getattr(row, name) for row in rows] for name in names]


@dataclass(frozen=True)
class Report:
    """Test results a step's attempt reported, to be stored."""

    run_id: UUID
    step_id: UUID
    attempt: int
    results: Sequence[ReportedResult]


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
    async def lock_many(conn: Conn, run_ids: Sequence[UUID]) -> dict[UUID, tuple[RunState, list[StepState]]]:
        """Lock the runs that exist among `run_ids` and read them with their steps."""
        runs = {r["id"]: RunState.from_record(r) for r in await conn.fetch(Q.lock_runs, run_ids)}
        steps: dict[UUID, list[StepState]] = {run_id: [] for run_id in runs}
        for record in await conn.fetch(Q.runs_steps, list(runs)):
            steps[record["run_id"]].append(StepState.from_record(record))
        return {run_id: (run, steps[run_id]) for run_id, run in runs.items()}

    @classmethod
    async def lock(cls, conn: Conn, run_id: UUID) -> tuple[RunState, list[StepState]] | None:
        return (await cls.lock_many(conn, [run_id])).get(run_id)

    async def autovacuum(self) -> bool:
        return bool(await self.pool.fetchval(Q.autovacuum))

    async def run_of_step(self, step_id: UUID) -> UUID | None:
        value = await self.pool.fetchval(Q.step_run, step_id)
        return value if isinstance(value, UUID) else None

    @staticmethod
    async def insert_results(conn: Conn, reports: Sequence[Report]) -> list[list[asyncpg.Record]]:
        """Store the results of many steps' reports in one statement: for each report, in its order,
        the rows that are new (a result stored already is not returned again), by seq."""
        new: dict[tuple[UUID, int], list[asyncpg.Record]] = {(r.step_id, r.attempt): [] for r in reports}
        if len(new) != len(reports):
            raise ValueError("one report per step attempt and statement")
        rows = [(report, result) for report in reports for result in report.results]
        stored = await conn.fetch(
            Q.insert_results,
            [uuid4() for _ in rows],
            [report.run_id for report, _ in rows],
            [report.step_id for report, _ in rows],
            [report.attempt for report, _ in rows],
            [r.seq for _, r in rows],
            [r.name for _, r in rows],
            [r.status.value for _, r in rows],
            [r.duration_ms for _, r in rows],
            [cut_message(r.message) for _, r in rows],
            [r.metrics for _, r in rows],
        )
        for record in sorted(stored, key=lambda record: record["seq"]):
            new[(record["step_id"], record["attempt"])].append(record)
        return [new[(report.step_id, report.attempt)] for report in reports]

    @staticmethod
    async def write(conn: Conn, changes: Sequence[Change]) -> None:
        """Write what `changes` decided, in the caller's transaction (which holds their runs' locks):
        one statement for every table and every change."""
        steps = sorted((s for c in changes for s in c.dirty_steps), key=lambda s: s.id)
        runs = [c.run for c in changes if c.run_dirty]
        events = [(c.run.id, e) for c in changes for e in c.events]
        messages = [m for c in changes for m in c.messages]
        if not (steps or runs or events or messages):
            return
        matched = await conn.fetchrow(
            Q.write_changes,
            *columns(steps, STEP_COLUMNS),
            *columns(runs, RUN_COLUMNS),
            [run_id for run_id, _ in events],
            [e.runseq for _, e in events],
            [e.event_id for _, e in events],
            [e.type for _, e in events],
            [e.body for _, e in events],
            *outbox.columns(messages),
        )
        assert matched is not None
        if matched["steps"] != len(steps):
            raise LostRace(f"{len(steps) - matched['steps']} step(s) moved meanwhile")
        if matched["runs"] != len(runs):
            raise LostRace(f"{len(runs) - matched['runs']} run(s) moved meanwhile")

    async def heartbeat_targets(self, step_ids: list[UUID], attempts: list[int]) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(Q.heartbeat_targets, step_ids, attempts))

    async def renew_leases(
        self, step_ids: list[UUID], attempts: list[int], worker_id: str, lease_seconds: float
    ) -> None:
        await self.pool.execute(Q.renew_leases, step_ids, attempts, worker_id, lease_seconds)

    async def scan(self, name: str, *args: Any) -> list[asyncpg.Record]:
        return list(await self.pool.fetch(getattr(Q, name), *args))
