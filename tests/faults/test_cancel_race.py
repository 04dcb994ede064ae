"""Cancels racing with completion, from many clients at once: every run ends as its answers said."""

from __future__ import annotations

import asyncio
import random

import aiohttp

from tests.e2e.conftest import Api
from tests.e2e.test_run_path import body, synthetic
from tests.faults.conftest import Case

RUNS = 20
CLIENTS = 4


async def test_cancels_racing_completion_end_as_answered(case: Case) -> None:
    rng = random.Random(3)
    runs = [
        await case.trigger(
            body(
                synthetic("a", duration_seconds=round(rng.uniform(0, 0.4), 2)),
                synthetic("b", "a", duration_seconds=round(rng.uniform(0, 0.3), 2)),
            )
        )
        for _ in range(RUNS)
    ]
    answers: dict[str, list[str]] = {run["id"]: [] for run in runs}

    async def client(api: Api, run_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        status, answer = await api.call("POST", f"/model-runs/{run_id}/cancel")
        assert status == 200, answer
        answers[run_id].append(answer["status"])

    sessions = [aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) for _ in range(CLIENTS)]
    try:
        apis = [Api(session, case.api.base, case.api.key) for session in sessions]
        await asyncio.gather(*(client(api, run["id"], rng.uniform(0, 1.2)) for run in runs for api in apis))
    finally:
        for session in sessions:
            await session.close()

    final = await case.verify(timeout=40)
    outcomes = {"cancelled": 0, "finished": 0}
    for run_id, said in answers.items():
        end = final[run_id]
        assert set(said) <= {"cancelling", "cancelled", "succeeded", "failed"}, said
        if {"cancelling", "cancelled"} & set(said):
            assert end["status"] == "cancelled", (said, end)
            assert end["cancel_requested_at"] is not None
            outcomes["cancelled"] += 1
        else:
            assert set(said) == {end["status"]}, (said, end)
            outcomes["finished"] += 1
        # No step starts once the cancel is recorded.
        events = case.subscriber.of_run(run_id)
        cancelling = [e["runseq"] for e in events if e["type"] == "modelruns.run.cancelling"]
        if cancelling:
            late = [
                e["data"]["name"]
                for e in events
                if e["type"] == "modelruns.step.started" and e["runseq"] > cancelling[0]
            ]
            assert not late, f"run {run_id}: {late} started after the cancel"
    assert sum(outcomes.values()) == RUNS
