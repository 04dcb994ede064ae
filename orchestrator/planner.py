"""Pure decisions over a run's steps: what becomes ready, what is skipped, what must stop, and how
the run ends. No I/O here, so every rule is tested in tests/unit/test_planner.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.states import TERMINAL_STEP, RunStatus, StepStatus

_NOT_SUCCEEDED = frozenset({StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.SKIPPED})


class StepView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> StepStatus: ...
    @property
    def depends_on(self) -> list[str]: ...


@dataclass(frozen=True)
class Plan:
    enqueue: tuple[str, ...] = ()
    skip: tuple[tuple[str, str], ...] = ()  # (step, the dependency that did not succeed)


def plan_pending(steps: Sequence[StepView], *, stopping: bool) -> Plan:
    """Pending steps whose dependencies all succeeded are enqueued (unless the run is stopping);
    those with a dependency that did not succeed are skipped. Skips cascade within one call."""
    status: dict[str, StepStatus] = {s.name: s.status for s in steps}
    enqueue: list[str] = []
    skip: list[tuple[str, str]] = []
    changed = True
    while changed:
        changed = False
        for step in steps:
            if status[step.name] is not StepStatus.PENDING:
                continue
            blocker = next((d for d in step.depends_on if status[d] in _NOT_SUCCEEDED), None)
            if blocker is not None:
                status[step.name] = StepStatus.SKIPPED
                skip.append((step.name, blocker))
                changed = True
            elif not stopping and all(status[d] is StepStatus.SUCCEEDED for d in step.depends_on):
                status[step.name] = StepStatus.QUEUED
                enqueue.append(step.name)
    return Plan(tuple(enqueue), tuple(skip))


def downstream(steps: Sequence[StepView], roots: set[str]) -> set[str]:
    """Every step that depends, directly or not, on one of `roots`."""
    dependents: dict[str, list[str]] = {s.name: [] for s in steps}
    for step in steps:
        for dep in step.depends_on:
            dependents[dep].append(step.name)
    found: set[str] = set()
    todo = list(roots)
    while todo:
        for child in dependents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def all_terminal(steps: Sequence[StepView]) -> bool:
    return all(s.status in TERMINAL_STEP for s in steps)


def outcome(run_status: RunStatus, steps: Sequence[StepView]) -> RunStatus | None:
    """The terminal status the run takes now, or None while a step is still active."""
    if not all_terminal(steps):
        return None
    if run_status is RunStatus.CANCELLING:
        return RunStatus.CANCELLED
    if all(s.status is StepStatus.SUCCEEDED for s in steps):
        return RunStatus.SUCCEEDED
    return RunStatus.FAILED


def first_failure(steps: Sequence[StepView], finished_order: Mapping[str, float]) -> str | None:
    """The failed step that ended the run: the earliest to finish, then the first defined."""
    failed = [s for s in steps if s.status is StepStatus.FAILED]
    if not failed:
        return None
    return min(failed, key=lambda s: (finished_order.get(s.name, float("inf")), steps.index(s))).name
