"""The pure step-graph decisions."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from orchestrator import planner
from shared.states import RunStatus, StepStatus

S = StepStatus


@dataclass
class V:
    name: str
    status: StepStatus
    depends_on: list[str] = field(default_factory=list)


def test_roots_are_enqueued_first() -> None:
    steps = [V("a", S.PENDING), V("b", S.PENDING, ["a"]), V("c", S.PENDING)]
    assert planner.plan_pending(steps, stopping=False) == planner.Plan(("a", "c"), ())


def test_a_step_waits_for_every_dependency() -> None:
    steps = [V("a", S.SUCCEEDED), V("b", S.RUNNING), V("c", S.PENDING, ["a", "b"])]
    assert planner.plan_pending(steps, stopping=False).enqueue == ()
    steps[1].status = S.SUCCEEDED
    assert planner.plan_pending(steps, stopping=False).enqueue == ("c",)


@pytest.mark.parametrize("blocker", [S.FAILED, S.CANCELLED, S.SKIPPED])
def test_skips_cascade(blocker: StepStatus) -> None:
    steps = [V("a", blocker), V("b", S.PENDING, ["a"]), V("c", S.PENDING, ["b"]), V("d", S.PENDING)]
    plan = planner.plan_pending(steps, stopping=False)
    assert plan.skip == (("b", "a"), ("c", "b"))
    assert plan.enqueue == ("d",)


def test_stopping_enqueues_nothing_but_still_skips() -> None:
    steps = [V("a", S.FAILED), V("b", S.PENDING, ["a"]), V("c", S.PENDING)]
    plan = planner.plan_pending(steps, stopping=True)
    assert plan.enqueue == ()
    assert plan.skip == (("b", "a"),)


def test_downstream_is_transitive() -> None:
    steps = [V("a", S.PENDING), V("b", S.PENDING, ["a"]), V("c", S.PENDING, ["b"]), V("d", S.PENDING)]
    assert planner.downstream(steps, {"a"}) == {"b", "c"}
    assert planner.downstream(steps, {"d"}) == set()


@pytest.mark.parametrize(
    ("run", "statuses", "expected"),
    [
        (RunStatus.RUNNING, [S.SUCCEEDED, S.RUNNING], None),
        (RunStatus.RUNNING, [S.SUCCEEDED, S.SUCCEEDED], RunStatus.SUCCEEDED),
        (RunStatus.RUNNING, [S.SUCCEEDED, S.FAILED], RunStatus.FAILED),
        (RunStatus.RUNNING, [S.FAILED, S.SKIPPED], RunStatus.FAILED),
        (RunStatus.RUNNING, [S.FAILED, S.CANCELLED], RunStatus.FAILED),
        (RunStatus.CANCELLING, [S.SUCCEEDED, S.CANCELLED], RunStatus.CANCELLED),
        (RunStatus.CANCELLING, [S.SUCCEEDED, S.SUCCEEDED], RunStatus.CANCELLED),
        (RunStatus.CANCELLING, [S.RUNNING, S.CANCELLED], None),
        (RunStatus.QUEUED, [S.FAILED], RunStatus.FAILED),
    ],
)
def test_outcome(run: RunStatus, statuses: list[StepStatus], expected: RunStatus | None) -> None:
    steps = [V(f"s{i}", s) for i, s in enumerate(statuses)]
    assert planner.outcome(run, steps) is expected


def test_first_failure_is_the_earliest_to_finish() -> None:
    steps = [V("a", S.FAILED), V("b", S.FAILED), V("c", S.SUCCEEDED)]
    assert planner.first_failure(steps, {"a": 20.0, "b": 10.0}) == "b"
    assert planner.first_failure(steps, {}) == "a"
    assert planner.first_failure([V("c", S.SUCCEEDED)], {}) is None
