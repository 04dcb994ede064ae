"""Building a StepContext for executor tests: no broker, no worker, just the context."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

from shared.messages import ReportedResult
from worker.context import Policy, Scratch, StepContext


def make_ctx(
    scratch: Path,
    *,
    attempt: int = 1,
    params: dict[str, Any] | None = None,
    policy: Policy | None = None,
    parameters: dict[str, Any] | None = None,
    inputs: dict[str, dict[str, Any]] | None = None,
) -> StepContext:
    return StepContext(
        run_id=uuid4(),
        step_id=uuid4(),
        attempt=attempt,
        name="step",
        tenant_id="acme",
        parameters=parameters or {},
        inputs=inputs or {},
        params=params or {},
        scratch=Scratch.existing(scratch),
        policy=policy or Policy(),
    )


def reported(ctx: StepContext) -> list[ReportedResult]:
    return ctx.results.pending()
