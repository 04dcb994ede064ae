"""Callables for the `python` kind's tests (allowed as "tests.unit.worker_steps")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shared.errors import StepFailed
from worker.context import StepContext


def add(ctx: StepContext, a: int, b: int) -> dict[str, Any]:
    ctx.report("sum is positive", "passed" if a + b > 0 else "failed", metrics={"sum": a + b})
    return {"sum": a + b, "attempt": ctx.attempt, "dataset": ctx.parameters.get("dataset")}


async def async_double(ctx: StepContext, x: float) -> dict[str, Any]:
    await asyncio.sleep(0)
    ctx.report("doubled", "passed", duration_ms=1.5)
    return {"x2": x * 2, "inputs": ctx.inputs}


def nothing(ctx: StepContext) -> None:
    return None


def a_list(ctx: StepContext) -> list[int]:
    return [1, 2, 3]


def boom(ctx: StepContext) -> None:
    raise RuntimeError("the model diverged")


def final(ctx: StepContext) -> None:
    raise StepFailed("the data set is missing", code="missing_data", retryable=False)


def exits(ctx: StepContext) -> None:
    raise SystemExit(3)


def polite_sleeper(ctx: StepContext, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ctx.is_cancelled():
            return {"stopped": True}
        time.sleep(0.01)
    return {"stopped": False}


def many_from_threads(ctx: StepContext, n: int) -> dict[str, Any]:
    import threading

    def report(k: int) -> None:
        for i in range(n):
            ctx.report(f"t{k}-{i}", "passed")

    threads = [threading.Thread(target=report, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {}


NOT_CALLABLE = 42


def long_message(ctx: StepContext, n: int) -> dict[str, Any]:
    ctx.report("verbose", "failed", message="why " * n)
    return {}
