"""Processes that die or freeze: kill -9 of workers and orchestrators, a frozen worker, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from tests.e2e.test_run_path import body, synthetic
from tests.faults.conftest import Case
from tests.faults.invariants import outbox_drains
from tests.waiting import eventually


async def running_on(case: Case, run_id: str, step: str, *, attempt: int = 1, timeout: float = 20.0) -> str:
    """Waits until `step` runs its `attempt`; returns the worker that was accepted for it."""

    async def probe() -> str | None:
        found = (await case.api.steps(run_id))[step]
        if found["status"] == "running" and found["attempt"] == attempt:
            return str(found["worker_id"])
        return None

    worker = await eventually(probe, timeout=timeout, interval=0.05, what=f"{step} running attempt {attempt}")
    assert worker is not None
    return worker


def events_of(case: Case, run_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in case.subscriber.of_run(run_id) if e["type"] == f"modelruns.{kind}"]


async def test_a_killed_worker_is_lost_once_its_lease_expires_and_its_step_retried(case: Case) -> None:
    retried = await case.trigger(body({**synthetic("long", duration_seconds=3), "max_attempts": 2}))
    worker = await running_on(case, retried["id"], "long")
    # A second run on the same worker, with no attempt left: it fails worker_lost.
    once = await case.trigger(body(synthetic("long", duration_seconds=3)))
    other = await running_on(case, once["id"], "long")
    if other != worker:
        case.cluster[other].kill()
    case.cluster[worker].kill()
    killed_at = time.monotonic()

    runs = await case.verify(timeout=40)
    assert runs[retried["id"]]["status"] == "succeeded"
    steps = await case.api.steps(retried["id"])
    assert steps["long"]["attempt"] == 2 and steps["long"]["worker_id"] not in (worker, other)
    retrying = events_of(case, retried["id"], "step.retrying")
    assert [e["data"]["error"]["code"] for e in retrying] == ["worker_lost"]
    assert runs[once["id"]]["status"] == "failed"
    assert (await case.api.steps(once["id"]))["long"]["error"]["code"] == "worker_lost"
    # Noticed within the lease and a few reconcile passes, not at some later sweep.
    assert time.monotonic() - killed_at < 30
    # The stop sent to the dead worker has nobody to reach: it must not stay in the outbox.
    await outbox_drains(case.cluster.db_url, timeout=10)


async def test_a_killed_orchestrator_loses_nothing_while_the_others_carry_on(case: Case) -> None:
    async def load(count: int) -> None:
        for i in range(count):
            await case.trigger(
                body(
                    synthetic("prepare", duration_seconds=0.1),
                    synthetic(
                        "train", "prepare", duration_seconds=0.3, results=[{"name": "t", "status": "passed"}]
                    ),
                    synthetic("evaluate", "prepare", outcome="failed" if i % 7 == 0 else "succeeded"),
                )
            )

    first = asyncio.create_task(load(15))
    victim = case.cluster["o1"]
    await eventually(
        lambda: asyncio.sleep(0, result=len(case.runs) >= 5), timeout=20, what="the first runs triggered"
    )
    victim.kill()
    await first
    await load(5)
    await asyncio.to_thread(victim.start)
    await asyncio.to_thread(victim.wait_ready)
    await load(5)
    await case.verify(timeout=60)
    await outbox_drains(case.cluster.db_url)


async def test_a_frozen_worker_is_fenced_and_its_late_events_ignored(case: Case) -> None:
    run = await case.trigger(
        body(
            {
                **synthetic(
                    "slow",
                    duration_seconds=3,
                    results=[{"name": f"r{i}", "status": "passed"} for i in range(6)],
                ),
                "max_attempts": 2,
            }
        )
    )
    worker = await running_on(case, run["id"], "slow")
    frozen = case.cluster[worker]
    stops_before = len(frozen.actions("worker.stop_requested"))
    frozen.signal(signal.SIGSTOP)
    try:
        other = await running_on(case, run["id"], "slow", attempt=2, timeout=30)
        assert other != worker
        conn = await case.db()
        try:
            before = await conn.fetchval(
                "SELECT count(*) FROM test_results WHERE run_id = $1 AND attempt = 1", run["id"]
            )
        finally:
            await conn.close()
    finally:
        frozen.signal(signal.SIGCONT)
    # Thawed, the worker goes on with attempt 1 and reports it; the orchestrator tells it to stop.
    await eventually(
        lambda: asyncio.sleep(0, result=len(frozen.actions("worker.stop_requested")) > stops_before),
        timeout=20,
        what="the thawed worker told to stop",
    )
    runs = await case.verify(timeout=30)
    assert runs[run["id"]]["status"] == "succeeded"
    conn = await case.db()
    try:
        after = await conn.fetchval(
            "SELECT count(*) FROM test_results WHERE run_id = $1 AND attempt = 1", run["id"]
        )
    finally:
        await conn.close()
    assert after == before, "results of the fenced attempt were stored after it was given up"
    assert runs[run["id"]]["test_counts"]["total"] == 6
    stops = frozen.actions("worker.stop_requested")[stops_before:]
    assert stops and {s["reason"] for s in stops} <= {"worker_lost", "fenced"}


async def test_sigterm_lets_a_short_step_finish_and_hands_a_long_one_back(case: Case) -> None:
    cluster = case.cluster
    # Only w1 takes work while the two steps are handed out.
    for name in ("w2", "w3"):
        await asyncio.to_thread(cluster[name].terminate)
    short = await case.trigger(body(synthetic("short", duration_seconds=1)))
    long = await case.trigger(body({**synthetic("long", duration_seconds=6), "max_attempts": 2}))
    assert await running_on(case, short["id"], "short") == "w1"
    assert await running_on(case, long["id"], "long") == "w1"
    await asyncio.to_thread(cluster.start, "w2")
    cluster["w1"].signal(signal.SIGTERM)
    # It takes no more work: a run triggered now goes to w2.
    later = await case.trigger(body(synthetic("later", duration_seconds=0.2)))
    runs = await case.verify(timeout=40)
    code = await asyncio.to_thread(cluster["w1"].process.wait, 30)  # type: ignore[union-attr]
    assert code == 0
    assert runs[short["id"]]["status"] == "succeeded"
    assert (await case.api.steps(short["id"]))["short"]["attempt"] == 1
    steps = await case.api.steps(long["id"])
    assert runs[long["id"]]["status"] == "succeeded"
    assert steps["long"]["attempt"] == 2 and steps["long"]["worker_id"] == "w2"
    assert [e["data"]["error"]["code"] for e in events_of(case, long["id"], "step.retrying")] == [
        "worker_shutdown"
    ]
    assert (await case.api.steps(later["id"]))["later"]["worker_id"] == "w2"
