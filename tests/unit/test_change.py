"""A run's decisions, played through the pure Change with no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from orchestrator.change import Change
from orchestrator.state import RunState, StepState
from shared import amqp
from shared.models.api import empty_test_counts, step_counts_of
from shared.states import RunStatus, StepStatus

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def make_run(
    *specs: tuple[str, list[str]], fail_fast: bool = False, **step_fields: Any
) -> tuple[RunState, list[StepState]]:
    run_id = uuid4()
    run = RunState(
        id=run_id,
        tenant_id="acme",
        status=RunStatus.QUEUED,
        model={"name": "m"},
        labels={},
        parameters={"p": 1},
        fail_fast=fail_fast,
        step_counts=step_counts_of([StepStatus.PENDING] * len(specs)),
        test_counts=empty_test_counts(),
        last_runseq=1,
        error=None,
        created_at=NOW,
        started_at=None,
        finished_at=None,
        cancel_requested_at=None,
    )
    steps = []
    for i, (name, deps) in enumerate(specs):
        fields: dict[str, Any] = {
            "max_attempts": 1,
            "allow_test_failures": False,
            "timeout_seconds": 60,
            **step_fields.get(name, {}),
        }
        steps.append(
            StepState(
                id=uuid4(),
                run_id=run_id,
                position=i,
                name=name,
                kind="synthetic",
                params={},
                depends_on=deps,
                pool="default",
                status=StepStatus.PENDING,
                attempt=0,
                worker_id=None,
                outputs=None,
                error=None,
                test_counts=empty_test_counts(),
                results_stored=0,
                held_finish=None,
                held_finish_at=None,
                created_at=NOW,
                queued_at=None,
                started_at=None,
                finished_at=None,
                lease_expires_at=None,
                stop_requested_at=None,
                not_before=None,
                dispatch_count=0,
                **fields,
            )
        )
    return run, steps


def step(run: tuple[RunState, list[StepState]], name: str) -> StepState:
    return next(s for s in run[1] if s.name == name)


def run_status(state: tuple[RunState, list[StepState]]) -> RunStatus:
    return state[0].status


def step_status(state: tuple[RunState, list[StepState]], name: str) -> StepStatus:
    return step(state, name).status


def change(state: tuple[RunState, list[StepState]], minutes: int = 0) -> Change:
    run, steps = state
    for s in steps:
        s.loaded_status = s.status
        s.dirty = False
    run.loaded_status = run.status
    return Change(run, steps, now=NOW + timedelta(minutes=minutes), lease_seconds=30)


def types(ch: Change) -> list[str]:
    return [e.type.removeprefix("modelruns.") for e in ch.events]


def test_trigger_enqueues_the_roots_with_numbered_events() -> None:
    state = make_run(("train", []), ("evaluate", ["train"]), ("lint", []))
    ch = change(state)
    ch.advance()
    assert types(ch) == ["step.queued", "step.queued"]
    assert [e.runseq for e in ch.events] == [2, 3]
    dispatches = [m for m in ch.messages if m.exchange == amqp.STEPS]
    assert [m.routing_key for m in dispatches] == ["default", "default"]
    assert all(m.mandatory for m in dispatches)
    assert not any(m.mandatory for m in ch.messages if m.exchange == amqp.RESULTS)
    assert state[0].step_counts["queued"] == 2 and state[0].step_counts["pending"] == 1
    assert step(state, "train").attempt == 1


def test_a_chain_runs_to_success() -> None:
    state = make_run(("train", []), ("evaluate", ["train"]))
    change(state).advance()
    ch = change(state, 1)
    ch.start(step(state, "train"), "w1")
    assert types(ch) == ["step.started", "run.started"]
    assert run_status(state) is RunStatus.RUNNING and state[0].started_at == NOW + timedelta(minutes=1)
    ch = change(state, 2)
    ch.succeed(step(state, "train"), {"model": "x"})
    ch.advance()
    assert types(ch) == ["step.succeeded", "step.queued"]
    dispatch = next(m for m in ch.messages if m.exchange == amqp.STEPS)
    assert b'"inputs":{"train":{"model":"x"}}' in dispatch.body
    ch = change(state, 3)
    ch.start(step(state, "evaluate"), "w2")
    ch.succeed(step(state, "evaluate"), None)
    ch.advance()
    assert types(ch) == ["step.started", "step.succeeded", "run.succeeded"]
    assert run_status(state) is RunStatus.SUCCEEDED and state[0].error is None
    assert step(state, "evaluate").outputs == {}
    assert state[0].last_runseq == 9


def test_a_retryable_failure_retries_with_backoff() -> None:
    state = make_run(("train", []), train={"max_attempts": 2})
    change(state).advance()
    ch = change(state)
    ch.start(step(state, "train"), "w1")
    ch.fail_attempt(step(state, "train"), "step_failed", "boom", retryable=True)
    ch.advance()
    train = step(state, "train")
    assert types(ch)[-1] == "step.retrying"
    assert step_status(state, "train") is StepStatus.QUEUED and train.attempt == 2 and train.worker_id is None
    dispatch = [m for m in ch.messages if m.exchange == amqp.STEPS][-1]
    assert dispatch.available_at == NOW + timedelta(seconds=1)
    ch = change(state)
    ch.start(train, "w2")
    ch.fail_attempt(train, "step_failed", "boom again", retryable=True)
    ch.advance()
    assert step_status(state, "train") is StepStatus.FAILED
    assert run_status(state) is RunStatus.FAILED
    assert state[0].error == {"code": "step_failed", "message": "step 'train' failed: boom again"}


def test_a_verdict_is_not_retried() -> None:
    state = make_run(("train", []), train={"max_attempts": 3})
    change(state).advance()
    ch = change(state)
    ch.start(step(state, "train"), "w1")
    ch.fail_attempt(step(state, "train"), "not_allowed", "no", retryable=False)
    assert step_status(state, "train") is StepStatus.FAILED


def test_failed_tests_fail_the_step_unless_allowed() -> None:
    for allowed, expected in ((False, StepStatus.FAILED), (True, StepStatus.SUCCEEDED)):
        state = make_run(("suite", []), suite={"allow_test_failures": allowed, "max_attempts": 3})
        change(state).advance()
        ch = change(state)
        suite = step(state, "suite")
        ch.start(suite, "w1")
        suite.test_counts = {**empty_test_counts(), "total": 2, "passed": 1, "failed": 1}
        ch.succeed(suite, {})
        ch.advance()
        assert suite.status is expected
        assert suite.attempt == 1


def test_an_attempt_that_failed_after_failing_tests_is_a_verdict() -> None:
    state = make_run(("suite", []), suite={"max_attempts": 3})
    change(state).advance()
    ch = change(state)
    suite = step(state, "suite")
    ch.start(suite, "w1")
    suite.test_counts = {**empty_test_counts(), "total": 2, "passed": 1, "error": 1}
    ch.fail_attempt(suite, "step_failed", "exited 1", retryable=True)
    ch.advance()
    assert suite.status is StepStatus.FAILED and suite.attempt == 1
    assert suite.error is not None and suite.error["code"] == "tests_failed"
    assert "exited 1" in suite.error["message"]
    assert suite.test_counts["error"] == 1


def test_an_attempt_failing_with_allowed_test_failures_is_retried() -> None:
    state = make_run(("suite", []), suite={"max_attempts": 2, "allow_test_failures": True})
    change(state).advance()
    ch = change(state)
    suite = step(state, "suite")
    ch.start(suite, "w1")
    suite.test_counts = {**empty_test_counts(), "total": 1, "failed": 1}
    ch.fail_attempt(suite, "step_failed", "crashed", retryable=True)
    ch.advance()
    assert suite.status is StepStatus.QUEUED and suite.attempt == 2


def test_a_failure_skips_dependents_while_an_independent_branch_finishes() -> None:
    state = make_run(("a", []), ("b", ["a"]), ("c", []))
    change(state).advance()
    ch = change(state)
    ch.start(step(state, "a"), "w1")
    ch.start(step(state, "c"), "w2")
    ch.fail_attempt(step(state, "a"), "step_failed", "bad", retryable=True)
    ch.advance()
    assert step_status(state, "b") is StepStatus.SKIPPED
    assert step(state, "b").error == {"code": "dependency_failed", "message": "dependency 'a' failed"}
    assert run_status(state) is RunStatus.RUNNING
    ch = change(state)
    ch.succeed(step(state, "c"), {})
    ch.advance()
    assert run_status(state) is RunStatus.FAILED


def test_fail_fast_stops_the_rest_and_the_run_fails_only_once_all_stopped() -> None:
    state = make_run(("a", []), ("b", ["a"]), ("c", []), ("d", ["c"]), fail_fast=True)
    change(state).advance()
    ch = change(state)
    ch.start(step(state, "a"), "w1")
    ch.start(step(state, "c"), "w2")
    ch.fail_attempt(step(state, "a"), "step_failed", "bad", retryable=True)
    ch.advance()
    assert step_status(state, "b") is StepStatus.SKIPPED
    assert step_status(state, "d") is StepStatus.CANCELLED
    assert step(state, "c").stop_requested_at is not None
    stops = [m for m in ch.messages if m.exchange == amqp.CONTROL]
    assert [m.routing_key for m in stops] == ["worker.w2"]
    # A stop whose worker is gone has no queue: it must not be retried for ever.
    assert not any(m.mandatory for m in stops)
    assert run_status(state) is RunStatus.RUNNING
    ch = change(state)
    ch.cancel(step(state, "c"), "stopped")
    ch.advance()
    assert run_status(state) is RunStatus.FAILED


def test_cancel_stops_everything_and_ends_cancelled() -> None:
    state = make_run(("a", []), ("b", ["a"]), ("c", []))
    change(state).advance()
    ch = change(state)
    ch.start(step(state, "a"), "w1")
    state[0].status = RunStatus.CANCELLING  # as the gateway writes it
    ch = change(state)
    ch.advance()
    assert step_status(state, "b") is StepStatus.CANCELLED
    assert step_status(state, "c") is StepStatus.CANCELLED
    assert step_status(state, "a") is StepStatus.RUNNING and step(state, "a").stop_requested_at is not None
    assert run_status(state) is RunStatus.CANCELLING
    ch = change(state)
    ch.fail_attempt(step(state, "a"), "step_failed", "interrupted", retryable=True)
    ch.advance()
    assert step_status(state, "a") is StepStatus.CANCELLED
    assert run_status(state) is RunStatus.CANCELLED
    assert types(ch)[-1] == "run.cancelled"
    assert state[0].error is not None and state[0].error["code"] == "cancelled"


def test_a_queued_run_cancelled_before_anything_ran() -> None:
    state = make_run(("a", []))
    change(state).advance()
    state[0].status = RunStatus.CANCELLING
    ch = change(state)
    ch.advance()
    assert types(ch) == ["step.cancelled", "run.cancelled"]
    assert state[0].step_counts["cancelled"] == 1


def test_test_counts_roll_up_to_the_run() -> None:
    state = make_run(("a", []), ("b", []))
    change(state).advance()
    ch = change(state)
    step(state, "a").test_counts = {**empty_test_counts(), "total": 3, "passed": 3}
    step(state, "b").test_counts = {**empty_test_counts(), "total": 1, "skipped": 1}
    step(state, "a").dirty = True
    ch.advance()
    assert state[0].test_counts == {"total": 4, "passed": 3, "failed": 0, "skipped": 1, "error": 0}
