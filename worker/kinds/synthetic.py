"""`synthetic`: a step that does nothing but take time, report the results it is given and end
as told. It drives demos, benchmarks and the tests of everything around the worker."""

from __future__ import annotations

import time
from typing import Any

from shared.errors import StepFailed
from shared.kinds import SyntheticParams
from worker.context import StepContext

# Below this the results are reported in one go rather than paced.
MIN_PAUSE = 0.005


async def run(ctx: StepContext, params: SyntheticParams) -> dict[str, Any]:
    if ctx.attempt <= params.fail_attempts:
        # API.md: an attempt failed by fail_attempts fails before reporting its results.
        raise StepFailed(
            f"synthetic failure of attempt {ctx.attempt} (fail_attempts={params.fail_attempts})",
            retryable=True,
        )
    total = len(params.results)
    duration = params.duration_seconds
    started = time.monotonic()
    reported = 0
    while True:
        elapsed = time.monotonic() - started
        # Result i is due at duration * (i + 1) / (total + 1): spread evenly, none at the very end.
        due = total if elapsed >= duration else int(elapsed * (total + 1) / duration)
        for result in params.results[reported : min(due, total)]:
            ctx.report(result.name, result.status, result.duration_ms, result.message, result.metrics)
        reported = max(reported, min(due, total))
        if elapsed >= duration:
            break
        next_due = duration * (reported + 1) / (total + 1) if reported < total else duration
        pause = max(MIN_PAUSE, min(next_due, duration) - elapsed)
        if await ctx.wait_cancelled(pause):
            raise StepFailed("synthetic step cancelled", code="cancelled", retryable=False)
    if params.outcome == "failed":
        raise StepFailed("synthetic step told to fail (outcome: failed)", retryable=True)
    return dict(params.outputs)
