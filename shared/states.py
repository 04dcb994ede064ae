"""The run and step state machines: the only list of legal transitions.

Every write goes through `run_transition` / `step_transition` here and through a guarded SQL UPDATE
(`... WHERE status = ANY($allowed)`); the SQL only guards, this module decides.
"""

from __future__ import annotations

from enum import StrEnum

from shared.errors import IllegalTransition


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class TestStatus(StrEnum):
    __test__ = False  # not a pytest class

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


class RunEvent(StrEnum):
    START = "start"  # the first step was accepted as started
    CANCEL = "cancel"  # a cancel was requested
    SUCCEED = "succeed"  # every step succeeded
    FAIL = "fail"  # every step is terminal and one failed
    FINISH_CANCEL = "finish_cancel"  # every step is terminal after a cancel


class StepEvent(StrEnum):
    ENQUEUE = "enqueue"  # dependencies met, dispatched
    START = "start"  # a worker was accepted for the attempt
    SUCCEED = "succeed"
    FAIL = "fail"  # the attempt failed and no attempt is left (or it is not retryable)
    RETRY = "retry"  # the attempt failed and another is scheduled
    CANCEL = "cancel"
    SKIP = "skip"  # a dependency did not succeed


TERMINAL_RUN: frozenset[RunStatus] = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE_RUN: frozenset[RunStatus] = frozenset(set(RunStatus) - TERMINAL_RUN)
TERMINAL_STEP: frozenset[StepStatus] = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.SKIPPED}
)
ACTIVE_STEP: frozenset[StepStatus] = frozenset(set(StepStatus) - TERMINAL_STEP)

_RUN: dict[tuple[RunStatus, RunEvent], RunStatus] = {
    (RunStatus.QUEUED, RunEvent.START): RunStatus.RUNNING,
    (RunStatus.QUEUED, RunEvent.CANCEL): RunStatus.CANCELLING,
    (RunStatus.RUNNING, RunEvent.CANCEL): RunStatus.CANCELLING,
    (RunStatus.QUEUED, RunEvent.FINISH_CANCEL): RunStatus.CANCELLED,
    (RunStatus.CANCELLING, RunEvent.FINISH_CANCEL): RunStatus.CANCELLED,
    (RunStatus.RUNNING, RunEvent.SUCCEED): RunStatus.SUCCEEDED,
    (RunStatus.RUNNING, RunEvent.FAIL): RunStatus.FAILED,
    # A run whose steps all end without one starting (every root skipped is impossible, but a
    # fail_fast run can lose its only queued step to a dispatch that was never deliverable).
    (RunStatus.QUEUED, RunEvent.FAIL): RunStatus.FAILED,
}

_STEP: dict[tuple[StepStatus, StepEvent], StepStatus] = {
    (StepStatus.PENDING, StepEvent.ENQUEUE): StepStatus.QUEUED,
    (StepStatus.QUEUED, StepEvent.START): StepStatus.RUNNING,
    (StepStatus.RUNNING, StepEvent.SUCCEED): StepStatus.SUCCEEDED,
    (StepStatus.RUNNING, StepEvent.FAIL): StepStatus.FAILED,
    (StepStatus.RUNNING, StepEvent.RETRY): StepStatus.QUEUED,
    # A dispatch that could never be delivered fails (or retries) its attempt before it started.
    (StepStatus.QUEUED, StepEvent.FAIL): StepStatus.FAILED,
    (StepStatus.QUEUED, StepEvent.RETRY): StepStatus.QUEUED,
    (StepStatus.PENDING, StepEvent.CANCEL): StepStatus.CANCELLED,
    (StepStatus.QUEUED, StepEvent.CANCEL): StepStatus.CANCELLED,
    (StepStatus.RUNNING, StepEvent.CANCEL): StepStatus.CANCELLED,
    (StepStatus.PENDING, StepEvent.SKIP): StepStatus.SKIPPED,
}


def run_transition(status: RunStatus, event: RunEvent) -> RunStatus:
    try:
        return _RUN[(status, event)]
    except KeyError:
        raise IllegalTransition(f"run: {event} is not allowed from {status}") from None


def step_transition(status: StepStatus, event: StepEvent) -> StepStatus:
    try:
        return _STEP[(status, event)]
    except KeyError:
        raise IllegalTransition(f"step: {event} is not allowed from {status}") from None


def run_sources(event: RunEvent) -> tuple[RunStatus, ...]:
    """The statuses a run may leave by `event`: the guard of the SQL UPDATE."""
    return tuple(source for (source, ev) in _RUN if ev is event)


def step_sources(event: StepEvent) -> tuple[StepStatus, ...]:
    return tuple(source for (source, ev) in _STEP if ev is event)


def run_edges() -> frozenset[tuple[RunStatus, RunStatus]]:
    """Every (from, to) pair a run may take: what an event log is checked against."""
    return frozenset((source, target) for (source, _), target in _RUN.items())


def step_edges() -> frozenset[tuple[StepStatus, StepStatus]]:
    return frozenset((source, target) for (source, _), target in _STEP.items())
