"""One transaction's decisions about one run: state moves through the state machines, the public
facts they produce (numbered by runseq), and the messages to send. The repository writes it all
in the same transaction; nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from orchestrator import planner
from orchestrator.state import RunState, StepState
from shared import amqp, outbox
from shared.events import SOURCE_ORCHESTRATOR, Entity, make_event, routing_key
from shared.messages import StepDispatch, StopStep
from shared.models.api import empty_test_counts, step_counts_of
from shared.models.resources import run_resource, step_resource
from shared.retry import DEFAULT_POLICY, RetryPolicy, next_attempt
from shared.states import (
    ACTIVE_STEP,
    TERMINAL_RUN,
    RunEvent,
    RunStatus,
    StepEvent,
    StepStatus,
    run_transition,
    step_transition,
)

TEST_FAILURE_STATUSES = ("failed", "error")


@dataclass(frozen=True)
class StoredEvent:
    runseq: int
    event_id: UUID
    type: str
    body: dict[str, Any]


class Change:
    def __init__(
        self,
        run: RunState,
        steps: list[StepState],
        *,
        now: datetime,
        lease_seconds: float,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self.run = run
        self.steps = steps
        self.now = now
        self.lease = timedelta(seconds=lease_seconds)
        self.policy = policy
        self.by_id = {s.id: s for s in steps}
        self.by_name = {s.name: s for s in steps}
        self.events: list[StoredEvent] = []
        self.messages: list[outbox.Outgoing] = []
        self.run_dirty = False
        # Each step's finish order in this run, so the run's error names the first failure.
        self._finish_order: dict[str, float] = {
            s.name: s.finished_at.timestamp() for s in steps if s.finished_at is not None
        }

    # -- bookkeeping -------------------------------------------------------------------------

    @property
    def dirty_steps(self) -> list[StepState]:
        return [s for s in self.steps if s.dirty]

    def _move_step(self, step: StepState, event: StepEvent, **changes: Any) -> None:
        step.status = step_transition(step.status, event)
        for name, value in changes.items():
            setattr(step, name, value)
        step.dirty = True
        if step.finished_at is not None:
            self._finish_order.setdefault(step.name, step.finished_at.timestamp())

    def _move_run(self, event: RunEvent, **changes: Any) -> None:
        self.run.status = run_transition(self.run.status, event)
        for name, value in changes.items():
            setattr(self.run, name, value)
        self.run_dirty = True

    def recount(self) -> None:
        self.run.step_counts = step_counts_of([s.status for s in self.steps])
        totals = empty_test_counts()
        for step in self.steps:
            for key, value in step.test_counts.items():
                totals[key] += value
        if totals != self.run.test_counts:
            self.run.test_counts = totals
        self.run_dirty = True

    def _emit(self, entity: Entity, event: str, data: dict[str, Any]) -> None:
        self.run.last_runseq += 1
        self.run_dirty = True
        body = make_event(
            run_id=self.run.id,
            runseq=self.run.last_runseq,
            entity=entity,
            event=event,
            data=data,
            source=SOURCE_ORCHESTRATOR,
            time=self.now,
        )
        self.events.append(StoredEvent(self.run.last_runseq, UUID(body["id"]), body["type"], body))
        self.messages.append(outbox.public(routing_key(self.run.tenant_id, entity, event), body))

    def emit_step(self, step: StepState, event: str) -> None:
        self._emit("step", event, step_resource(step))

    def emit_run(self, event: str) -> None:
        self.recount()
        self._emit("run", event, run_resource(self.run))

    def emit_result(self, result: dict[str, Any]) -> None:
        self._emit("test_result", "reported", result)

    def _dispatch(self, step: StepState, *, at: datetime | None = None) -> None:
        inputs = {
            name: dict(self.by_name[name].outputs or {}) for name in step.depends_on if name in self.by_name
        }
        message = StepDispatch(
            run_id=self.run.id,
            step_id=step.id,
            tenant_id=self.run.tenant_id,
            attempt=step.attempt,
            name=step.name,
            kind=step.kind,
            params=step.params,
            parameters=self.run.parameters,
            inputs=inputs,
            timeout_seconds=step.timeout_seconds,
            pool=step.pool,
        )
        message_id = f"dispatch:{step.id}:{step.attempt}:{step.dispatch_count}"
        self.messages.append(outbox.internal(amqp.STEPS, step.pool, message, message_id, at=at))

    def redispatch(self, step: StepState) -> None:
        self._dispatch(step)

    def tell_stop(self, run_id: UUID, step_id: UUID, attempt: int, worker_id: str, reason: str) -> None:
        message = StopStep(run_id=run_id, step_id=step_id, attempt=attempt, reason=reason)
        self.messages.append(outbox.control(worker_id, message, f"stop:{uuid4()}"))

    # -- step moves --------------------------------------------------------------------------

    def enqueue(self, step: StepState) -> None:
        self._move_step(step, StepEvent.ENQUEUE, attempt=1, queued_at=self.now, dispatch_count=0)
        self._dispatch(step)
        self.emit_step(step, "queued")

    def start(self, step: StepState, worker_id: str) -> None:
        self._move_step(
            step,
            StepEvent.START,
            worker_id=worker_id,
            started_at=self.now,
            lease_expires_at=self.now + self.lease,
        )
        self.emit_step(step, "started")
        if self.run.status is RunStatus.QUEUED:
            self._move_run(RunEvent.START, started_at=self.now)
            self.emit_run("started")

    def _finish_fields(self) -> dict[str, Any]:
        return {
            "finished_at": self.now,
            "lease_expires_at": None,
            "held_finish": None,
            "held_finish_at": None,
        }

    def succeed(self, step: StepState, outputs: dict[str, Any] | None) -> None:
        failing = sum(step.test_counts.get(k, 0) for k in TEST_FAILURE_STATUSES)
        if failing and not step.allow_test_failures:
            # A failed test is a verdict, not an accident: never retried.
            message = f"{failing} test result(s) failed or errored"
            self._move_step(
                step,
                StepEvent.FAIL,
                error={"code": "tests_failed", "message": message},
                **self._finish_fields(),
            )
            self.emit_step(step, "failed")
            return
        self._move_step(
            step, StepEvent.SUCCEED, outputs=dict(outputs or {}), error=None, **self._finish_fields()
        )
        self.emit_step(step, "succeeded")

    def fail_attempt(self, step: StepState, code: str, message: str, *, retryable: bool) -> None:
        """The current attempt failed: retry with backoff while attempts are left, else fail."""
        if step.stop_requested_at is not None or self.run.status is RunStatus.CANCELLING:
            self.cancel(step, "stopped by request")
            return
        failing = sum(step.test_counts.get(k, 0) for k in TEST_FAILURE_STATUSES)
        if failing and not step.allow_test_failures:
            # The attempt reported failed tests before it failed: a verdict, so no retry (which
            # would also drop the results that tell why).
            code, retryable = "tests_failed", False
            message = f"{failing} test result(s) failed or errored; {message}"
        decision = next_attempt(
            attempt=step.attempt,
            max_attempts=step.max_attempts,
            code=code,
            retryable=retryable,
            policy=self.policy,
        )
        error = {"code": code, "message": message}
        if decision.retry:
            at = self.now + timedelta(seconds=decision.delay_seconds)
            self._move_step(
                step,
                StepEvent.RETRY,
                attempt=step.attempt + 1,
                worker_id=None,
                error=error,
                test_counts=empty_test_counts(),
                results_stored=0,
                queued_at=self.now,
                started_at=None,
                not_before=at,
                dispatch_count=0,
                finished_at=None,
                lease_expires_at=None,
                held_finish=None,
                held_finish_at=None,
            )
            self._dispatch(step, at=at)
            self.emit_step(step, "retrying")
            return
        self._move_step(step, StepEvent.FAIL, error=error, **self._finish_fields())
        self.emit_step(step, "failed")

    def cancel(self, step: StepState, message: str) -> None:
        self._move_step(
            step, StepEvent.CANCEL, error={"code": "cancelled", "message": message}, **self._finish_fields()
        )
        self.emit_step(step, "cancelled")

    def request_stop(self, step: StepState, reason: str) -> None:
        """A running step is told to stop; it ends `cancelled` when its worker answers (or at the deadline)."""
        if step.stop_requested_at is None:
            step.stop_requested_at = self.now
            step.dirty = True
        if step.worker_id is not None:
            self.tell_stop(self.run.id, step.id, step.attempt, step.worker_id, reason)

    def skip(self, step: StepState, blocker: str) -> None:
        status = self.by_name[blocker].status
        self._move_step(
            step,
            StepEvent.SKIP,
            finished_at=self.now,
            error={"code": "dependency_failed", "message": f"dependency {blocker!r} {status}"},
        )
        self.emit_step(step, "skipped")

    # -- the run -----------------------------------------------------------------------------

    def _stop_active(self, reason: str, *, skip_below: frozenset[str] | set[str] = frozenset()) -> None:
        for step in self.steps:
            if (
                step.status is StepStatus.PENDING and step.name not in skip_below
            ) or step.status is StepStatus.QUEUED:
                self.cancel(step, reason)
            elif step.status is StepStatus.RUNNING and step.stop_requested_at is None:
                self.request_stop(step, "cancelled")

    def advance(self) -> None:
        """Carry the run as far as it goes now: enqueue, skip, stop, and end it when every step has."""
        if self.run.status in TERMINAL_RUN:
            return
        failed = {s.name for s in self.steps if s.status is StepStatus.FAILED}
        if self.run.status is RunStatus.CANCELLING:
            self._stop_active("run cancelled")
        elif self.run.fail_fast and failed:
            # Dependents of the failure are skipped below; everything else still active is stopped.
            self._skip_and_enqueue(stopping=True)
            self._stop_active("stopped by fail_fast", skip_below=planner.downstream(self.steps, failed))
        self._skip_and_enqueue(
            stopping=self.run.status is RunStatus.CANCELLING or (self.run.fail_fast and bool(failed))
        )
        self._finish_run()

    def _skip_and_enqueue(self, *, stopping: bool) -> None:
        plan = planner.plan_pending(self.steps, stopping=stopping)
        for name, blocker in plan.skip:
            self.skip(self.by_name[name], blocker)
        for name in plan.enqueue:
            self.enqueue(self.by_name[name])

    def _finish_run(self) -> None:
        target = planner.outcome(self.run.status, self.steps)
        if target is None:
            if self.dirty_steps:
                self.recount()
            return
        if target is RunStatus.CANCELLED:
            self._move_run(
                RunEvent.FINISH_CANCEL,
                finished_at=self.now,
                error={"code": "cancelled", "message": "the run was cancelled"},
            )
            self.emit_run("cancelled")
        elif target is RunStatus.SUCCEEDED:
            self._move_run(RunEvent.SUCCEED, finished_at=self.now, error=None)
            self.emit_run("succeeded")
        else:
            name = planner.first_failure(self.steps, self._finish_order)
            if name is None:
                error = {"code": "step_failed", "message": "a step did not succeed"}
            else:
                step_error = self.by_name[name].error or {}
                error = {
                    "code": "step_failed",
                    "message": f"step {name!r} failed: {step_error.get('message', 'no reason given')}",
                }
            self._move_run(RunEvent.FAIL, finished_at=self.now, error=error)
            self.emit_run("failed")

    def active(self) -> list[StepState]:
        return [s for s in self.steps if s.status in ACTIVE_STEP]
