"""Contract rules that need the whole stack: fail_fast, stopping real work, what a cancel keeps,
the exchange's delivery guarantees, and answers shaped exactly as the published models."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import orjson

from shared.models.api import Run, RunList, StepList, TestResultList
from tests.conftest import rabbitmqctl
from tests.e2e.conftest import Api, Stack
from tests.e2e.test_run_path import at, body, synthetic


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        await asyncio.sleep(0.05)


async def step_status(api: Api, run_id: str, name: str) -> str:
    return str((await api.steps(run_id))[name]["status"])


async def test_fail_fast_stops_the_other_branches(api: Api) -> None:
    run = await api.trigger(
        body(
            synthetic("train", duration_seconds=0.3, outcome="failed"),
            synthetic("evaluate", "train"),
            synthetic("profile", duration_seconds=60),
            fail_fast=True,
        )
    )
    done = await api.wait(run["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "step_failed" and "train" in done["error"]["message"]
    steps = await api.steps(run["id"])
    assert steps["train"]["status"] == "failed"
    assert steps["evaluate"]["status"] == "skipped"
    # The independent long branch was stopped, not waited for.
    assert steps["profile"]["status"] == "cancelled"
    assert (at(done["finished_at"]) - at(steps["train"]["finished_at"])).total_seconds() < 5


async def test_a_cancelled_command_step_stops_within_2_seconds(api: Api) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    run = await api.trigger(body({"name": "sleep", "kind": "command", "params": {"argv": sleeper}}))
    await until("the command started", lambda: _is(api, run["id"], "sleep", "running"))
    status, answer = await api.call("POST", f"/model-runs/{run['id']}/cancel")
    assert status == 200 and answer["status"] in ("cancelling", "cancelled")
    done = await api.wait(run["id"], timeout=10)
    assert done["status"] == "cancelled"
    step = (await api.steps(run["id"]))["sleep"]
    assert step["status"] == "cancelled" and step["error"]["code"] == "cancelled"
    stopped_in = (at(step["finished_at"]) - at(done["cancel_requested_at"])).total_seconds()
    assert stopped_in <= 2.0, f"the command step took {stopped_in:.2f}s to stop"


async def _is(api: Api, run_id: str, name: str, status: str) -> bool:
    return await step_status(api, run_id, name) == status


async def test_results_reported_before_a_cancel_are_kept(api: Api) -> None:
    results = [{"name": f"check-{i}", "status": "passed"} for i in range(20)]
    run = await api.trigger(body(synthetic("suite", duration_seconds=20, results=results)))

    async def some_reported() -> bool:
        return int((await api.steps(run["id"]))["suite"]["test_counts"]["total"]) >= 2

    await until("results were reported", some_reported)
    status, _ = await api.call("POST", f"/model-runs/{run['id']}/cancel")
    assert status == 200
    done = await api.wait(run["id"], timeout=10)
    assert done["status"] == "cancelled"
    step = (await api.steps(run["id"]))["suite"]
    kept = step["test_counts"]["total"]
    assert 2 <= kept < 20
    status, page = await api.call("GET", f"/model-runs/{run['id']}/steps/{step['id']}/test-results")
    assert status == 200
    assert [r["name"] for r in page["test_results"]] == [f"check-{i}" for i in range(kept)]
    assert done["test_counts"]["total"] == kept


async def test_answers_are_exactly_the_published_models(api: Api) -> None:
    run = await api.trigger(
        body(
            synthetic("train", outputs={"rows": 150}),
            synthetic(
                "evaluate",
                "train",
                results=[
                    {"name": "acc", "status": "passed", "duration_ms": 1.5, "metrics": {"accuracy": 0.97}},
                    {"name": "bias", "status": "failed", "message": "too high"},
                ],
            ),
            labels={"team": "vision"},
            parameters={"dataset": "iris"},
        )
    )
    Run.model_validate(run)
    Run.model_validate(await api.wait(run["id"]))
    status, listing = await api.call("GET", "/model-runs?max_results=5")
    assert status == 200
    RunList.model_validate(listing)
    status, steps = await api.call("GET", f"/model-runs/{run['id']}/steps")
    assert status == 200
    StepList.model_validate(steps)
    evaluate = next(s for s in steps["steps"] if s["name"] == "evaluate")
    status, results = await api.call("GET", f"/model-runs/{run['id']}/steps/{evaluate['id']}/test-results")
    assert status == 200
    assert len(TestResultList.model_validate(results).test_results) == 2


def _exchange(vhost: str, name: str) -> tuple[str, str]:
    for line in rabbitmqctl("list_exchanges", "-p", vhost, "name", "type", "durable").splitlines():
        fields = line.split("\t")
        if fields[0] == name:
            return fields[1], fields[2]
    raise AssertionError(f"no exchange {name} in {vhost}")


async def test_the_results_exchange_is_durable_and_routes_by_tenant_entity_and_event(
    api: Api, stack: Stack
) -> None:
    vhost = unquote(urlsplit(stack.amqp_url).path.lstrip("/"))
    assert _exchange(vhost, "modelruns.results") == ("topic", "true")
    connection = await aio_pika.connect(stack.amqp_url)
    try:
        channel = await connection.channel()
        queues = {}
        for pattern in ("*.run.*", "*.test_result.reported"):
            queues[pattern] = await channel.declare_queue("", exclusive=True)
            await queues[pattern].bind("modelruns.results", pattern)
        run = await api.trigger(body(synthetic("suite", results=[{"name": "t", "status": "passed"}])))
        assert (await api.wait(run["id"]))["status"] == "succeeded"
        subject = f"model-runs/{run['id']}"
        seen: dict[str, list[tuple[str, Any]]] = {}
        for pattern, queue in queues.items():
            seen[pattern] = []
            deadline = time.monotonic() + 10
            while not seen[pattern] or (
                pattern == "*.run.*" and seen[pattern][-1][0] != "modelruns.run.succeeded"
            ):
                assert time.monotonic() < deadline, (pattern, seen[pattern])
                message = await queue.get(timeout=10, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                event = orjson.loads(message.body)
                # Persistent: a broker restart does not lose what a durable queue holds.
                assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                assert message.routing_key == "acme." + event["type"].removeprefix("modelruns.")
                if event["subject"] == subject:
                    seen[pattern].append((event["type"], event["runseq"]))
    finally:
        await connection.close()
    run_types = [t for t, _ in seen["*.run.*"]]
    assert run_types == ["modelruns.run.queued", "modelruns.run.started", "modelruns.run.succeeded"]
    assert [t for t, _ in seen["*.test_result.reported"]] == ["modelruns.test_result.reported"]
