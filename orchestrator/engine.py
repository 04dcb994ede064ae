"""The orchestrator's decisions, one transaction each under the run's row lock.

Every handler re-reads the truth from Postgres and acts only if the message still fits it, so a
message handled twice, late or out of order changes nothing that is already right.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from uuid import UUID

import asyncpg

from orchestrator.change import Change
from orchestrator.inserts import ResultInserts
from orchestrator.repository import LostRace, Report, Repository
from orchestrator.state import StepState
from shared import outbox
from shared.messages import (
    RunCommand,
    StepDispatch,
    StepErrorReport,
    StopStep,
    WorkerFinished,
    WorkerHeartbeat,
    WorkerResults,
    WorkerStarted,
    utc_now,
)
from shared.models.resources import result_resource
from shared.retry import DEFAULT_POLICY, RetryPolicy
from shared.settings import Settings
from shared.states import RunStatus, StepStatus

log = logging.getLogger(__name__)
Decide = Callable[[Change, ResultInserts], Awaitable[None]]
# What the orchestrator's queues carry that is decided under a run's lock.
Decidable = RunCommand | WorkerStarted | WorkerResults | WorkerFinished
RACE_RETRIES = 5


async def _advance(change: Change, _: ResultInserts) -> None:
    change.advance()


class Engine:
    def __init__(
        self,
        repo: Repository,
        settings: Settings,
        *,
        on_commit: Callable[[], None] = lambda: None,
        on_change: Callable[[Change], None] = lambda _: None,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self.on_change = on_change
        self.repo = repo
        self.settings = settings
        self.on_commit = on_commit
        self.policy = policy

    async def in_run(self, run_id: UUID, decide: Decide) -> Change | None:
        """Lock the run, let `decide` change it, write the change; None when the run does not exist."""
        return (await self.in_runs({run_id: decide}))[run_id]

    async def in_runs(self, decisions: Mapping[UUID, Decide]) -> dict[UUID, Change | None]:
        """`in_run` for many runs in one transaction: their locks (taken in id order, so two
        such transactions never deadlock on runs), one read of them all, one write of every
        change, and one insert of all the test results they report. A race lost on any run
        decides them all again."""
        for attempt in range(1, RACE_RETRIES + 1):
            try:
                async with self.repo.pool.acquire() as conn, conn.transaction():
                    snapshots = await self.repo.lock_many(conn, list(decisions))
                    now = utc_now()
                    changes: dict[UUID, Change | None] = {}
                    inserts = ResultInserts(conn)
                    deciding: list[Callable[[], Awaitable[None]]] = []
                    for run_id, decide in decisions.items():
                        snapshot = snapshots.get(run_id)
                        if snapshot is None:
                            changes[run_id] = None
                            continue
                        run, steps = snapshot
                        change = Change(
                            run,
                            steps,
                            now=now,
                            lease_seconds=self.settings.step_lease_seconds,
                            policy=self.policy,
                        )
                        deciding.append(functools.partial(decide, change, inserts))
                        changes[run_id] = change
                    await inserts.decide(deciding)
                    written = [c for c in changes.values() if c is not None]
                    await self.repo.write(conn, written)
            except (LostRace, asyncpg.exceptions.DeadlockDetectedError) as exc:
                if attempt == RACE_RETRIES:
                    raise
                log.info(
                    "state moved meanwhile, deciding again",
                    extra={"action": "engine.race", "runs": len(decisions), "error": str(exc)},
                )
                continue
            if any(c.messages for c in written):
                self.on_commit()
            for change in written:
                self.on_change(change)
            return changes
        raise AssertionError("unreachable")

    async def handle(self, batch: Mapping[UUID, Sequence[Decidable]]) -> None:
        """Commands and worker events of many runs in one transaction, each run's in the order
        given: the decisions one transaction each would make, for one lock, one read and one
        write of them all."""

        def of_run(items: Sequence[Decidable]) -> Decide:
            decisions = [self._decision(item) for item in items]

            async def decide(change: Change, inserts: ResultInserts) -> None:
                for decision in decisions:
                    await decision(change, inserts)

            return decide

        await self.in_runs({run_id: of_run(items) for run_id, items in batch.items()})

    # -- commands -----------------------------------------------------------------------------

    async def advance(self, run_id: UUID) -> Change | None:
        """A trigger, a cancel, or the reconciler's nudge: carry the run as far as it goes now."""
        return await self.in_run(run_id, _advance)

    # -- worker events -----------------------------------------------------------------------

    def _holds(self, change: Change, step: StepState | None, attempt: int, worker_id: str) -> bool:
        """Whether `worker_id` holds this attempt, deciding it when the message is the first word
        of the attempt. One worker's messages can be handled out of order (an orchestrator
        handles many at once, and several orchestrators share the queue), so results or a finish
        that overtook their start imply it. A message that has no claim is answered with a stop."""
        if step is None:
            return False
        if step.status is StepStatus.QUEUED and step.attempt == attempt:
            if change.run.status is RunStatus.CANCELLING:
                change.cancel(step, "run cancelled")
                change.tell_stop(change.run.id, step.id, attempt, worker_id, "cancelled")
                change.advance()
                return False
            change.start(step, worker_id)
            log.info(
                "step started",
                extra={
                    "action": "step.started",
                    "run_id": str(change.run.id),
                    "step_id": str(step.id),
                    "attempt": step.attempt,
                    "worker_id": worker_id,
                },
            )
            return True
        if step.attempt == attempt and step.worker_id == worker_id:
            # This worker's own attempt: still running, or already settled (a late duplicate).
            return step.status is StepStatus.RUNNING
        # One worker per attempt: any other, or an attempt that was given up on, is told to stop.
        log.info(
            "fenced a worker",
            extra={
                "action": "step.fenced",
                "run_id": str(change.run.id),
                "step_id": str(step.id),
                "attempt": attempt,
                "worker_id": worker_id,
                "step_status": str(step.status),
            },
        )
        change.tell_stop(change.run.id, step.id, attempt, worker_id, "fenced")
        return False

    async def started(self, event: WorkerStarted) -> None:
        await self.in_run(event.run_id, self._decision(event))

    async def results(self, event: WorkerResults) -> None:
        await self.in_run(event.run_id, self._decision(event))

    async def finished(self, event: WorkerFinished) -> None:
        await self.in_run(event.run_id, self._decision(event))

    def _decision(self, item: Decidable) -> Decide:
        if isinstance(item, RunCommand):
            return _advance
        if isinstance(item, WorkerStarted):
            return self._on_started(item)
        if isinstance(item, WorkerResults):
            return self._on_results(item)
        return self._on_finished(item)

    def _on_started(self, event: WorkerStarted) -> Decide:
        async def decide(change: Change, _: ResultInserts) -> None:
            self._holds(change, change.by_id.get(event.step_id), event.attempt, event.worker_id)

        return decide

    def _on_results(self, event: WorkerResults) -> Decide:
        async def decide(change: Change, inserts: ResultInserts) -> None:
            step = change.by_id.get(event.step_id)
            if step is None or not self._holds(change, step, event.attempt, event.worker_id):
                return
            cap = self.settings.max_test_results_per_step
            if step.results_stored + len(event.results) > cap:
                # Worker messages are untrusted input: a step that floods results is stopped, its
                # first `cap` results kept; reporting that much again would do the same.
                worker = step.worker_id
                change.fail_attempt(
                    step,
                    "too_many_results",
                    f"the step reported more than {cap} test results",
                    retryable=False,
                )
                if worker is not None:
                    change.tell_stop(change.run.id, step.id, event.attempt, worker, "fenced")
                change.advance()
                return
            rows = await inserts.insert(Report(change.run.id, step.id, step.attempt, event.results))
            counts = dict(step.test_counts)
            for row in rows:
                counts["total"] += 1
                counts[str(row["status"])] += 1
                change.emit_result(result_resource(row))
            step.test_counts = counts
            step.results_stored += len(rows)
            step.dirty = True
            if step.held_finish is not None and step.results_stored >= int(step.held_finish["results_count"]):
                self._finish(change, step, WorkerFinished.model_validate(step.held_finish))
            change.advance()

        return decide

    def _on_finished(self, event: WorkerFinished) -> Decide:
        async def decide(change: Change, _: ResultInserts) -> None:
            step = change.by_id.get(event.step_id)
            if step is None or not self._holds(change, step, event.attempt, event.worker_id):
                return
            if event.results_count > step.results_stored:
                # The finish overtook some of its results: it waits for them (or for the
                # reconciler, which releases a finish held too long).
                step.held_finish = event.model_dump(mode="json")
                step.held_finish_at = change.now
                step.dirty = True
                return
            self._finish(change, step, event)
            change.advance()

        return decide

    def _finish(self, change: Change, step: StepState, event: WorkerFinished) -> None:
        log.info(
            "step finished",
            extra={
                "action": "step.finished",
                "run_id": str(change.run.id),
                "step_id": str(step.id),
                "attempt": step.attempt,
                "outcome": event.outcome,
            },
        )
        if event.outcome == "succeeded":
            change.succeed(step, event.outputs)
        elif event.outcome == "failed":
            error = event.error or StepErrorReport(code="step_failed", message="the step failed")
            change.fail_attempt(step, error.code, error.message, retryable=error.retryable)
        elif step.stop_requested_at is not None or change.run.status is RunStatus.CANCELLING:
            change.cancel(step, "stopped by request")
        else:
            change.fail_attempt(step, "worker_lost", "the worker stopped the step unasked", retryable=True)

    async def heartbeat(self, event: WorkerHeartbeat) -> None:
        if not event.steps:
            return
        ids = [ref.step_id for ref in event.steps]
        attempts = [ref.attempt for ref in event.steps]
        renew: list[tuple[UUID, int]] = []
        stops: list[StopStep] = []
        for target in await self.repo.heartbeat_targets(ids, attempts):
            if target["status"] is None:
                continue  # names nothing we know: ignored
            same_attempt = target["current_attempt"] == target["attempt"]
            if str(target["status"]) == "running" and same_attempt and target["worker_id"] == event.worker_id:
                renew.append((target["step_id"], target["attempt"]))
                if target["stop_requested_at"] is not None or str(target["run_status"]) == "cancelling":
                    # The stop may have been lost: the next beat repeats it.
                    stops.append(
                        StopStep(
                            run_id=target["run_id"],
                            step_id=target["step_id"],
                            attempt=target["attempt"],
                            reason="cancelled",
                        )
                    )
            elif str(target["status"]) == "queued" and same_attempt:
                continue  # its start is still on its way to us
            else:
                stops.append(
                    StopStep(
                        run_id=target["run_id"],
                        step_id=target["step_id"],
                        attempt=target["attempt"],
                        reason="fenced",
                    )
                )
        if renew:
            await self.repo.renew_leases(
                [r[0] for r in renew],
                [r[1] for r in renew],
                event.worker_id,
                self.settings.step_lease_seconds,
            )
        if stops:
            await self.send(
                [
                    outbox.control(
                        event.worker_id, stop, f"stop:{stop.step_id}:{stop.attempt}:{event.worker_id}"
                    )
                    for stop in stops
                ]
            )

    async def send(self, messages: list[outbox.Outgoing]) -> None:
        async with self.repo.pool.acquire() as conn, conn.transaction():
            await outbox.insert(conn, messages)
        self.on_commit()

    # -- repairs (the reconciler's and the dead-letter handler's) ----------------------------

    async def on_step(
        self, run_id: UUID, step_id: UUID, attempt: int, act: Callable[[Change, StepState], None]
    ) -> Change | None:
        """Act on one attempt if it is still the current one."""

        async def decide(change: Change, _: ResultInserts) -> None:
            step = change.by_id.get(step_id)
            if step is None or step.attempt != attempt:
                return
            act(change, step)
            change.advance()

        return await self.in_run(run_id, decide)

    async def expire_lease(self, run_id: UUID, step_id: UUID, attempt: int) -> Change | None:
        def act(change: Change, step: StepState) -> None:
            if (
                step.status is not StepStatus.RUNNING
                or step.lease_expires_at is None
                or step.lease_expires_at > change.now
            ):
                return
            worker = step.worker_id or "unknown"
            log.warning(
                "lease expired",
                extra={
                    "action": "step.worker_lost",
                    "run_id": str(run_id),
                    "step_id": str(step_id),
                    "attempt": attempt,
                    "worker_id": worker,
                },
            )
            change.tell_stop(run_id, step_id, attempt, worker, "worker_lost")
            change.fail_attempt(step, "worker_lost", f"worker {worker} stopped heartbeating", retryable=True)

        return await self.on_step(run_id, step_id, attempt, act)

    async def time_out(self, run_id: UUID, step_id: UUID, attempt: int) -> Change | None:
        def act(change: Change, step: StepState) -> None:
            if step.status is not StepStatus.RUNNING or step.started_at is None:
                return
            if step.started_at + timedelta(seconds=step.timeout_seconds) > change.now:
                return
            if step.worker_id:
                change.tell_stop(run_id, step_id, attempt, step.worker_id, "timeout")
            change.fail_attempt(
                step, "timeout", f"the step ran longer than {step.timeout_seconds} s", retryable=True
            )

        return await self.on_step(run_id, step_id, attempt, act)

    async def force_stop(self, run_id: UUID, step_id: UUID, attempt: int) -> Change | None:
        def act(change: Change, step: StepState) -> None:
            if step.status is StepStatus.RUNNING and step.stop_requested_at is not None:
                change.cancel(step, "the worker did not confirm the stop in time")

        return await self.on_step(run_id, step_id, attempt, act)

    async def release_held_finish(self, run_id: UUID, step_id: UUID, attempt: int) -> Change | None:
        def act(change: Change, step: StepState) -> None:
            if step.status is StepStatus.RUNNING and step.held_finish is not None:
                log.warning(
                    "finishing a step whose results never all arrived",
                    extra={
                        "action": "step.results_missing",
                        "run_id": str(run_id),
                        "step_id": str(step_id),
                        "attempt": attempt,
                    },
                )
                self._finish(change, step, WorkerFinished.model_validate(step.held_finish))

        return await self.on_step(run_id, step_id, attempt, act)

    async def undeliverable(self, dispatch: StepDispatch) -> Change | None:
        """A dispatch was dead-lettered: send it again a bounded number of times, then fail the attempt."""

        def act(change: Change, step: StepState) -> None:
            if step.status is not StepStatus.QUEUED:
                return
            step.dispatch_count += 1
            step.dirty = True
            if step.dispatch_count <= self.settings.dispatch_redeliveries:
                change.redispatch(step)
                return
            change.fail_attempt(
                step,
                "undeliverable",
                f"the dispatch was dead-lettered {step.dispatch_count} times",
                retryable=True,
            )

        return await self.on_step(dispatch.run_id, dispatch.step_id, dispatch.attempt, act)
