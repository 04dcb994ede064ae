"""The synthetic kind, run directly with a StepContext."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from shared.errors import StepFailed
from shared.kinds import SyntheticParams
from shared.states import TestStatus
from tests.unit.worker_support import make_ctx, reported
from worker.kinds import synthetic


def params(**fields: object) -> SyntheticParams:
    return SyntheticParams.model_validate(fields)


async def test_reports_results_and_returns_outputs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    outputs = await synthetic.run(
        ctx,
        params(
            results=[
                {"name": "a", "status": "passed", "duration_ms": 3, "metrics": {"acc": 0.9}},
                {"name": "b", "status": "failed", "message": "too low"},
            ],
            outputs={"model": "s3://m"},
        ),
    )
    assert outputs == {"model": "s3://m"}
    results = reported(ctx)
    assert [(r.seq, r.name, r.status) for r in results] == [
        (0, "a", TestStatus.PASSED),
        (1, "b", TestStatus.FAILED),
    ]
    assert results[0].metrics == {"acc": 0.9}
    assert results[0].duration_ms == 3
    assert results[1].message == "too low"


async def test_results_are_spread_over_the_duration(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    seen: list[tuple[float, int]] = []
    started = time.monotonic()

    async def watch() -> None:
        while True:
            seen.append((time.monotonic() - started, ctx.results.count))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    await synthetic.run(
        ctx, params(duration_seconds=0.6, results=[{"name": f"r{i}", "status": "passed"} for i in range(3)])
    )
    elapsed = time.monotonic() - started
    watcher.cancel()
    assert 0.55 <= elapsed < 1.5
    assert ctx.results.count == 3
    # Not all at the start, not all at the end: result i is due at 0.6 * (i + 1) / 4.
    early = [count for t, count in seen if t < 0.1]
    middle = [count for t, count in seen if 0.35 < t < 0.4]
    assert early and max(early) == 0
    assert middle and 1 <= min(middle) <= max(middle) <= 2


async def test_zero_duration_reports_everything_at_once(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    await synthetic.run(ctx, params(results=[{"name": f"r{i}", "status": "skipped"} for i in range(5000)]))
    assert [r.seq for r in reported(ctx)] == list(range(5000))


@pytest.mark.parametrize(("attempt", "fails"), [(1, True), (2, True), (3, False)])
async def test_fail_attempts_fail_before_reporting(tmp_path: Path, attempt: int, fails: bool) -> None:
    ctx = make_ctx(tmp_path, attempt=attempt)
    p = params(fail_attempts=2, results=[{"name": "a", "status": "passed"}])
    if fails:
        with pytest.raises(StepFailed) as caught:
            await synthetic.run(ctx, p)
        assert caught.value.retryable
        assert caught.value.code == "step_failed"
        assert reported(ctx) == []
    else:
        assert await synthetic.run(ctx, p) == {}
        assert len(reported(ctx)) == 1


async def test_outcome_failed_fails_retryably_after_reporting(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    with pytest.raises(StepFailed) as caught:
        await synthetic.run(ctx, params(outcome="failed", results=[{"name": "a", "status": "passed"}]))
    assert caught.value.retryable
    assert len(reported(ctx)) == 1


async def test_stops_at_once_when_cancelled(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    task = asyncio.create_task(
        synthetic.run(ctx, params(duration_seconds=60, results=[{"name": "late", "status": "passed"}]))
    )
    await asyncio.sleep(0.05)
    started = time.monotonic()
    ctx.cancel()
    with pytest.raises(StepFailed) as caught:
        await asyncio.wait_for(task, 1.0)
    assert time.monotonic() - started < 0.5
    assert caught.value.code == "cancelled"
    assert ctx.is_cancelled()
    assert reported(ctx) == []
