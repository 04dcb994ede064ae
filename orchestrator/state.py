"""A run and its steps as read under the run's row lock: the snapshot a transaction decides on."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.states import RunStatus, StepStatus


class _Row:
    """Resources read rows by key (shared.models.resources); a snapshot reads the same way."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass
class RunState(_Row):
    id: UUID
    tenant_id: str
    status: RunStatus
    model: dict[str, Any]
    labels: dict[str, str]
    parameters: dict[str, Any]
    fail_fast: bool
    step_counts: dict[str, int]
    test_counts: dict[str, int]
    last_runseq: int
    error: dict[str, str] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    loaded_status: RunStatus = field(init=False)

    def __post_init__(self) -> None:
        self.loaded_status = self.status

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> RunState:
        values = {f.name: record[f.name] for f in fields(cls) if f.init}
        values["status"] = RunStatus(values["status"])
        return cls(**values)


@dataclass
class StepState(_Row):
    id: UUID
    run_id: UUID
    position: int
    name: str
    kind: str
    params: dict[str, Any]
    depends_on: list[str]
    pool: str
    status: StepStatus
    attempt: int
    max_attempts: int
    timeout_seconds: int
    allow_test_failures: bool
    worker_id: str | None
    outputs: dict[str, Any] | None
    error: dict[str, str] | None
    test_counts: dict[str, int]
    results_stored: int
    held_finish: dict[str, Any] | None
    held_finish_at: datetime | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    stop_requested_at: datetime | None
    not_before: datetime | None
    dispatch_count: int
    loaded_status: StepStatus = field(init=False)
    dirty: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.loaded_status = self.status

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> StepState:
        values = {f.name: record[f.name] for f in fields(cls) if f.init}
        values["status"] = StepStatus(values["status"])
        values["depends_on"] = list(values["depends_on"])
        return cls(**values)
