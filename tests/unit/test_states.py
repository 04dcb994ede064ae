"""The run and step state machines, pair by pair, against the lists of API.md ("States")."""

from __future__ import annotations

import contextlib
import itertools
from typing import TypeVar

import pytest

from shared.errors import IllegalTransition
from shared.states import (
    ACTIVE_RUN,
    ACTIVE_STEP,
    TERMINAL_RUN,
    TERMINAL_STEP,
    RunEvent,
    RunStatus,
    StepEvent,
    StepStatus,
    TestStatus,
    run_edges,
    run_sources,
    run_transition,
    step_edges,
    step_sources,
    step_transition,
)

T = TypeVar("T")
R, RE = RunStatus, RunEvent
S, SE = StepStatus, StepEvent

# API.md: "queued → running → succeeded | failed; queued | running → cancelling → cancelled
# (queued → cancelled directly when nothing runs)".
API_RUN_EDGES = {
    (R.QUEUED, R.RUNNING),
    (R.RUNNING, R.SUCCEEDED),
    (R.RUNNING, R.FAILED),
    (R.QUEUED, R.CANCELLING),
    (R.RUNNING, R.CANCELLING),
    (R.CANCELLING, R.CANCELLED),
    (R.QUEUED, R.CANCELLED),
}
# API.md: "pending → queued → running → succeeded | failed; a failed attempt with attempts left goes
# back to queued; pending | queued | running → cancelled; pending → skipped".
API_STEP_EDGES = {
    (S.PENDING, S.QUEUED),
    (S.QUEUED, S.RUNNING),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.QUEUED),
    (S.PENDING, S.CANCELLED),
    (S.QUEUED, S.CANCELLED),
    (S.RUNNING, S.CANCELLED),
    (S.PENDING, S.SKIPPED),
}

# Edges the machine has beyond API.md's lists, each for a rule of DESIGN.md: a dispatch that can
# never be delivered fails (or retries) its attempt while the step is still queued ("nothing stays
# queued forever"), and a run whose only queued steps end that way fails without having started.
# Kept apart so that any further edge must be added here on purpose.
UNDELIVERABLE_RUN_EDGES = {(R.QUEUED, R.FAILED)}
UNDELIVERABLE_STEP_EDGES = {(S.QUEUED, S.FAILED), (S.QUEUED, S.QUEUED)}

RUN_TABLE: dict[tuple[RunStatus, RunEvent], RunStatus] = {
    (R.QUEUED, RE.START): R.RUNNING,
    (R.QUEUED, RE.CANCEL): R.CANCELLING,
    (R.RUNNING, RE.CANCEL): R.CANCELLING,
    (R.QUEUED, RE.FINISH_CANCEL): R.CANCELLED,
    (R.CANCELLING, RE.FINISH_CANCEL): R.CANCELLED,
    (R.RUNNING, RE.SUCCEED): R.SUCCEEDED,
    (R.RUNNING, RE.FAIL): R.FAILED,
    (R.QUEUED, RE.FAIL): R.FAILED,
}

STEP_TABLE: dict[tuple[StepStatus, StepEvent], StepStatus] = {
    (S.PENDING, SE.ENQUEUE): S.QUEUED,
    (S.QUEUED, SE.START): S.RUNNING,
    (S.RUNNING, SE.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, SE.FAIL): S.FAILED,
    (S.RUNNING, SE.RETRY): S.QUEUED,
    (S.QUEUED, SE.FAIL): S.FAILED,
    (S.QUEUED, SE.RETRY): S.QUEUED,
    (S.PENDING, SE.CANCEL): S.CANCELLED,
    (S.QUEUED, SE.CANCEL): S.CANCELLED,
    (S.RUNNING, SE.CANCEL): S.CANCELLED,
    (S.PENDING, SE.SKIP): S.SKIPPED,
}

RUN_PAIRS = list(itertools.product(RunStatus, RunEvent))
STEP_PAIRS = list(itertools.product(StepStatus, StepEvent))


def test_status_names_are_the_contracts() -> None:
    assert [s.value for s in RunStatus] == [
        "queued",
        "running",
        "cancelling",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert [s.value for s in StepStatus] == [
        "pending",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "skipped",
    ]
    assert [s.value for s in TestStatus] == ["passed", "failed", "skipped", "error"]


def test_terminal_sets() -> None:
    assert {R.SUCCEEDED, R.FAILED, R.CANCELLED} == TERMINAL_RUN
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.SKIPPED} == TERMINAL_STEP
    assert set(RunStatus) - TERMINAL_RUN == ACTIVE_RUN
    assert set(StepStatus) - TERMINAL_STEP == ACTIVE_STEP


@pytest.mark.parametrize(("status", "event"), RUN_PAIRS, ids=[f"{s}-{e}" for s, e in RUN_PAIRS])
def test_run_pair(status: RunStatus, event: RunEvent) -> None:
    expected = RUN_TABLE.get((status, event))
    if expected is None:
        with pytest.raises(IllegalTransition, match=f"{event}.*{status}"):
            run_transition(status, event)
    else:
        assert run_transition(status, event) is expected


@pytest.mark.parametrize(("status", "event"), STEP_PAIRS, ids=[f"{s}-{e}" for s, e in STEP_PAIRS])
def test_step_pair(status: StepStatus, event: StepEvent) -> None:
    expected = STEP_TABLE.get((status, event))
    if expected is None:
        with pytest.raises(IllegalTransition, match=f"{event}.*{status}"):
            step_transition(status, event)
    else:
        assert step_transition(status, event) is expected


def test_tables_cover_every_legal_pair() -> None:
    # The parametrised tests prove each table entry; this proves nothing legal is left out of them.
    legal_runs: set[tuple[RunStatus, RunEvent, RunStatus]] = set()
    for run_status, run_event in RUN_PAIRS:
        with contextlib.suppress(IllegalTransition):
            legal_runs.add((run_status, run_event, run_transition(run_status, run_event)))
    assert legal_runs == {(s, e, t) for (s, e), t in RUN_TABLE.items()}
    legal_steps: set[tuple[StepStatus, StepEvent, StepStatus]] = set()
    for step_status, step_event in STEP_PAIRS:
        with contextlib.suppress(IllegalTransition):
            legal_steps.add((step_status, step_event, step_transition(step_status, step_event)))
    assert legal_steps == {(s, e, t) for (s, e), t in STEP_TABLE.items()}


@pytest.mark.parametrize("status", sorted(TERMINAL_RUN))
def test_nothing_leaves_a_terminal_run(status: RunStatus) -> None:
    for event in RunEvent:
        with pytest.raises(IllegalTransition):
            run_transition(status, event)
    assert all(source is not status for source, _ in run_edges())


@pytest.mark.parametrize("status", sorted(TERMINAL_STEP))
def test_nothing_leaves_a_terminal_step(status: StepStatus) -> None:
    for event in StepEvent:
        with pytest.raises(IllegalTransition):
            step_transition(status, event)
    assert all(source is not status for source, _ in step_edges())


def _reachable(start: T, edges: frozenset[tuple[T, T]]) -> set[T]:
    seen, frontier = {start}, [start]
    while frontier:
        here = frontier.pop()
        for source, target in edges:
            if source == here and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def test_every_active_status_can_still_end() -> None:
    # No status is a trap: from every active one some path reaches a terminal status.
    for run_status in ACTIVE_RUN:
        assert _reachable(run_status, run_edges()) & TERMINAL_RUN, run_status
    for step_status in ACTIVE_STEP:
        assert _reachable(step_status, step_edges()) & TERMINAL_STEP, step_status


@pytest.mark.parametrize("event", list(RunEvent))
def test_run_sources(event: RunEvent) -> None:
    sources = run_sources(event)
    assert isinstance(sources, tuple)
    assert len(sources) == len(set(sources))
    assert set(sources) == {s for (s, e) in RUN_TABLE if e is event}
    for status in RunStatus:
        legal = status in sources
        try:
            run_transition(status, event)
        except IllegalTransition:
            assert not legal
        else:
            assert legal
    assert not set(sources) & TERMINAL_RUN


@pytest.mark.parametrize("event", list(StepEvent))
def test_step_sources(event: StepEvent) -> None:
    sources = step_sources(event)
    assert isinstance(sources, tuple)
    assert len(sources) == len(set(sources))
    assert set(sources) == {s for (s, e) in STEP_TABLE if e is event}
    for status in StepStatus:
        legal = status in sources
        try:
            step_transition(status, event)
        except IllegalTransition:
            assert not legal
        else:
            assert legal
    assert not set(sources) & TERMINAL_STEP


def test_every_event_is_usable() -> None:
    assert all(run_sources(event) for event in RunEvent)
    assert all(step_sources(event) for event in StepEvent)


def test_run_edges_are_apis_plus_the_undeliverable_case() -> None:
    assert run_edges() >= API_RUN_EDGES
    assert run_edges() == API_RUN_EDGES | UNDELIVERABLE_RUN_EDGES
    assert run_edges() == {(s, t) for (s, _), t in RUN_TABLE.items()}


def test_step_edges_are_apis_plus_the_undeliverable_case() -> None:
    assert step_edges() >= API_STEP_EDGES
    assert step_edges() == API_STEP_EDGES | UNDELIVERABLE_STEP_EDGES
    assert step_edges() == {(s, t) for (s, _), t in STEP_TABLE.items()}


def test_cancel_reaches_cancelled_from_every_active_status() -> None:
    # API.md: a queued or running run, once cancelled, surely ends `cancelled`.
    for status in ACTIVE_RUN:
        after = status if status is R.CANCELLING else run_transition(status, RE.CANCEL)
        assert run_transition(after, RE.FINISH_CANCEL) is R.CANCELLED
    for step_status in ACTIVE_STEP:
        assert step_transition(step_status, SE.CANCEL) is S.CANCELLED
