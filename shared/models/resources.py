"""Rows as the API shows them: the one place a run, step or test result becomes a resource.

The gateway answers with these and the orchestrator puts the same in each event's `data`.
"""

from __future__ import annotations

from typing import Any, Protocol


class Row(Protocol):
    """A database record or a snapshot: anything read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


def run_resource(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "status": str(row["status"]),
        "model": row["model"],
        "labels": row["labels"],
        "parameters": row["parameters"],
        "fail_fast": row["fail_fast"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "cancel_requested_at": row["cancel_requested_at"],
        "step_counts": row["step_counts"],
        "test_counts": row["test_counts"],
        "error": row["error"],
    }


def step_resource(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "run_id": str(row["run_id"]),
        "name": row["name"],
        "kind": row["kind"],
        "status": str(row["status"]),
        "depends_on": list(row["depends_on"]),
        "pool": row["pool"],
        "attempt": row["attempt"],
        "max_attempts": row["max_attempts"],
        "timeout_seconds": row["timeout_seconds"],
        "worker_id": row["worker_id"],
        "created_at": row["created_at"],
        "queued_at": row["queued_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "outputs": row["outputs"],
        "error": row["error"],
        "test_counts": row["test_counts"],
    }


def result_resource(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "run_id": str(row["run_id"]),
        "step_id": str(row["step_id"]),
        "attempt": row["attempt"],
        "name": row["name"],
        "status": str(row["status"]),
        "duration_ms": row["duration_ms"],
        "message": row["message"],
        "metrics": row["metrics"],
        "created_at": row["created_at"],
    }
