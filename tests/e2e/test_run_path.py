"""The run path end to end, through the HTTP API of a real `modelruns up`."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import aio_pika
import orjson

from tests.e2e.conftest import Api, Stack


def synthetic(name: str, *deps: str, **params: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "kind": "synthetic", "params": params}
    if deps:
        step["depends_on"] = list(deps)
    return step


def body(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": {"name": "iris-classifier", "version": "1.4.0"}, "steps": list(steps), **extra}


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_dag_with_parallel_branches_succeeds_in_dependency_order(api: Api) -> None:
    run = await api.trigger(
        body(
            synthetic("prepare", duration_seconds=0.2, outputs={"rows": 150}),
            synthetic("train", "prepare", duration_seconds=0.3),
            synthetic(
                "lint", "prepare", duration_seconds=0.3, results=[{"name": "style", "status": "passed"}]
            ),
            synthetic(
                "evaluate",
                "train",
                "lint",
                results=[{"name": "acc", "status": "passed", "metrics": {"accuracy": 0.95}}],
            ),
        )
    )
    assert run["status"] == "queued"
    done = await api.wait(run["id"])
    assert done["status"] == "succeeded", done
    assert done["step_counts"]["succeeded"] == 4
    assert done["test_counts"] == {"total": 2, "passed": 2, "failed": 0, "skipped": 0, "error": 0}
    steps = await api.steps(run["id"])
    assert list(steps) == ["prepare", "train", "lint", "evaluate"]
    for name, step in steps.items():
        for dep in step["depends_on"]:
            assert at(steps[dep]["finished_at"]) <= at(step["started_at"]), (name, dep)
    # The two branches overlap: each started before the other finished.
    assert at(steps["train"]["started_at"]) < at(steps["lint"]["finished_at"])
    assert at(steps["lint"]["started_at"]) < at(steps["train"]["finished_at"])
    assert steps["prepare"]["outputs"] == {"rows": 150}
    assert at(done["started_at"]) == at(steps["prepare"]["started_at"])


async def test_a_failed_step_skips_its_dependents_while_another_branch_finishes(api: Api) -> None:
    run = await api.trigger(
        body(
            synthetic("train", outcome="failed"),
            synthetic("evaluate", "train"),
            synthetic("docs", duration_seconds=0.5),
        )
    )
    done = await api.wait(run["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "step_failed" and "train" in done["error"]["message"]
    steps = await api.steps(run["id"])
    assert steps["train"]["status"] == "failed"
    assert steps["evaluate"]["status"] == "skipped"
    assert steps["evaluate"]["error"]["code"] == "dependency_failed"
    assert steps["docs"]["status"] == "succeeded"


async def test_fail_attempts_are_retried_up_to_max_attempts(api: Api) -> None:
    run = await api.trigger(
        body(
            {
                **synthetic("flaky", fail_attempts=1, results=[{"name": "t", "status": "passed"}]),
                "max_attempts": 2,
            },
            {**synthetic("broken", fail_attempts=3), "max_attempts": 2},
        )
    )
    done = await api.wait(run["id"])
    steps = await api.steps(run["id"])
    assert steps["flaky"]["status"] == "succeeded" and steps["flaky"]["attempt"] == 2, str(steps["flaky"])
    assert steps["broken"]["status"] == "failed" and steps["broken"]["attempt"] == 2, str(steps["broken"])
    assert done["status"] == "failed"


async def test_a_failed_test_fails_its_step_unless_allowed(api: Api) -> None:
    results = [
        {"name": "accuracy >= 0.9", "status": "failed", "message": "0.81 < 0.9"},
        {"name": "ok", "status": "passed"},
    ]
    run = await api.trigger(
        body(
            {**synthetic("strict", results=results), "max_attempts": 3},
            {**synthetic("lenient", results=results), "allow_test_failures": True},
        )
    )
    done = await api.wait(run["id"])
    steps = await api.steps(run["id"])
    assert steps["strict"]["status"] == "failed" and steps["strict"]["attempt"] == 1, str(steps["strict"])
    assert steps["lenient"]["status"] == "succeeded", str(steps["lenient"])
    assert done["status"] == "failed"
    assert done["test_counts"]["failed"] == 2
    status, page = await api.call(
        "GET", f"/model-runs/{run['id']}/steps/{steps['strict']['id']}/test-results?status=failed"
    )
    assert status == 200
    assert [r["name"] for r in page["test_results"]] == ["accuracy >= 0.9"]


async def test_cancel_of_a_running_long_step_ends_cancelled_within_3_seconds(api: Api) -> None:
    run = await api.trigger(body(synthetic("long", duration_seconds=60), synthetic("after", "long")))
    deadline = time.monotonic() + 15
    while (await api.steps(run["id"]))["long"]["status"] != "running":
        assert time.monotonic() < deadline, "the step never started"
        await asyncio.sleep(0.05)
    started = time.monotonic()
    status, answer = await api.call("POST", f"/model-runs/{run['id']}/cancel")
    assert status == 200
    assert answer["status"] in ("cancelling", "cancelled") and answer["cancel_requested_at"]
    done = await api.wait(run["id"], timeout=3)
    assert done["status"] == "cancelled"
    assert time.monotonic() - started < 3
    steps = await api.steps(run["id"])
    assert steps["long"]["status"] == "cancelled" and steps["after"]["status"] == "cancelled"
    status, again = await api.call("POST", f"/model-runs/{run['id']}/cancel")
    assert status == 200 and again["status"] == "cancelled"


async def test_tenants_never_see_each_other(api: Api, other_api: Api) -> None:
    run = await api.trigger(body(synthetic("a")))
    steps = await api.steps(run["id"])
    step_id = steps["a"]["id"]
    for method, path in [
        ("GET", f"/model-runs/{run['id']}"),
        ("GET", f"/model-runs/{run['id']}/steps"),
        ("GET", f"/model-runs/{run['id']}/steps/{step_id}/test-results"),
        ("POST", f"/model-runs/{run['id']}/cancel"),
    ]:
        status, problem = await other_api.call(method, path)
        assert status == 404 and problem["code"] == "not_found", (method, path)
    status, listing = await other_api.call("GET", "/model-runs?max_results=1000")
    assert status == 200
    assert run["id"] not in {r["id"] for r in listing["model_runs"]}


async def test_pages_stay_stable_while_runs_are_created(api: Api) -> None:
    label = uuid.uuid4().hex
    for _ in range(5):
        await api.trigger(body(synthetic("a"), labels={"batch": label}))
    status, first = await api.call("GET", "/model-runs?max_results=2")
    assert status == 200 and first["next_page_token"]
    for _ in range(3):
        await api.trigger(body(synthetic("a"), labels={"batch": label}))
    status, second = await api.call("GET", f"/model-runs?max_results=2&page_token={first['next_page_token']}")
    assert status == 200
    seen = [r["id"] for r in first["model_runs"]]
    assert not set(seen) & {r["id"] for r in second["model_runs"]}
    created = [at(r["created_at"]) for r in first["model_runs"] + second["model_runs"]]
    assert created == sorted(created, reverse=True)


async def test_an_idempotent_trigger_makes_one_run(api: Api) -> None:
    key = f"idem-{uuid.uuid4()}"
    request = body(synthetic("a"))
    first, second = await asyncio.gather(
        api.call("POST", "/model-runs", request, **{"Idempotency-Key": key}),
        api.call("POST", "/model-runs", request, **{"Idempotency-Key": key}),
    )
    assert first[0] == 201 and second[0] == 201
    assert first[1]["id"] == second[1]["id"]
    status, problem = await api.call("POST", "/model-runs", body(synthetic("b")), **{"Idempotency-Key": key})
    assert status == 400 and problem["code"] == "idempotency_key_reused"


async def test_the_results_exchange_carries_every_event_in_sequence(api: Api, stack: Stack) -> None:
    connection = await aio_pika.connect(stack.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind("modelruns.results", "acme.#")
        run = await api.trigger(
            body(
                synthetic("train", results=[{"name": "t1", "status": "passed"}]),
                synthetic("evaluate", "train"),
            )
        )
        events: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                event = orjson.loads(message.body)
                if event["subject"] != f"model-runs/{run['id']}":
                    continue
                assert message.content_type == "application/cloudevents+json"
                assert message.message_id == event["id"]
                events[event["id"]] = event
                if event["type"] in ("modelruns.run.succeeded", "modelruns.run.failed"):
                    break
                assert time.monotonic() < deadline
    finally:
        await connection.close()
    ordered = sorted(events.values(), key=lambda e: e["runseq"])
    assert [e["runseq"] for e in ordered] == list(range(1, len(ordered) + 1))
    types = [e["type"] for e in ordered]
    assert types[0] == "modelruns.run.queued" and types[-1] == "modelruns.run.succeeded"
    assert "modelruns.test_result.reported" in types
    assert all(e["specversion"] == "1.0" and e["datacontenttype"] == "application/json" for e in ordered)
    assert ordered[0]["source"] == "/modelruns/gateway" and ordered[-1]["source"] == "/modelruns/orchestrator"
