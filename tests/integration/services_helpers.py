"""An orchestrator and a worker running in the test's own process, stopped however the test ends,
and a walk down the run path through them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from orchestrator.service import Orchestrator
from shared.settings import Settings
from tests.integration.gateway_helpers import Gateway
from tests.waiting import eventually
from worker.service import Worker


@contextlib.asynccontextmanager
async def orchestrator_and_worker(
    orchestrator_settings: Settings, worker_settings: Settings | None = None
) -> AsyncIterator[tuple[Orchestrator, Worker]]:
    orchestrator = Orchestrator(orchestrator_settings)
    await orchestrator.start()
    worker = Worker(worker_settings or orchestrator_settings)
    stop = asyncio.Event()
    worker_task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 20)
        yield orchestrator, worker
    finally:
        stop.set()
        await asyncio.wait_for(worker_task, 30)
        await orchestrator.stop()


async def _status_is(gateway: Gateway, run_id: str, status: str) -> bool:
    resp = await gateway.get(f"/model-runs/{run_id}")
    return bool((await resp.json())["status"] == status)


async def run_and_cancel(gateway: Gateway, pool: asyncpg.Pool) -> None:
    """A two-step run with a test result to success, a long run cancelled to its end, and every
    message the two made sent (the outbox empty)."""
    run = await gateway.trigger(
        {
            "model": {"name": "m"},
            "steps": [
                {
                    "name": "a",
                    "kind": "synthetic",
                    "params": {"results": [{"name": "t", "status": "passed"}]},
                },
                {"name": "b", "kind": "synthetic", "depends_on": ["a"]},
            ],
        }
    )
    await eventually(
        lambda: _status_is(gateway, run["id"], "succeeded"), timeout=30, what="the run to succeed"
    )
    long = await gateway.trigger(
        {
            "model": {"name": "m"},
            "steps": [{"name": "long", "kind": "synthetic", "params": {"duration_seconds": 60}}],
        }
    )
    await eventually(
        lambda: _status_is(gateway, long["id"], "running"), timeout=30, what="the long run to start"
    )
    assert (await gateway.post(f"/model-runs/{long['id']}/cancel")).status == 200
    await eventually(lambda: _status_is(gateway, long["id"], "cancelled"), timeout=30, what="the cancel")

    async def drained() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM outbox") == 0)

    await eventually(drained, timeout=15, what="the outbox to drain")
