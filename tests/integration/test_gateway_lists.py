"""Lists: keyset pages newest first, filters, bound page tokens, steps and test results."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from tests.integration.gateway_helpers import (
    SQL,
    Gateway,
    broker_down_settings,
    running_gateway,
    trigger_body,
)


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


async def page(gw: Gateway, path: str, **query: str) -> dict[str, Any]:
    resp = await gw.get(path, params=query)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def error_code(gw: Gateway, path: str, **query: str) -> tuple[int, str]:
    resp = await gw.get(path, params=query)
    body = await resp.json(content_type=None)
    return resp.status, body["code"]


async def test_runs_newest_first_in_stable_pages(gw: Gateway) -> None:
    created = [(await gw.trigger())["id"] for _ in range(25)]
    newest_first = created[::-1]
    first = await page(gw, "/model-runs", max_results="10")
    assert [r["id"] for r in first["model_runs"]] == newest_first[:10]
    # Runs created meanwhile neither shift nor repeat later pages.
    for _ in range(3):
        await gw.trigger()
    second = await page(gw, "/model-runs", max_results="10", page_token=first["next_page_token"])
    third = await page(gw, "/model-runs", max_results="10", page_token=second["next_page_token"])
    assert [r["id"] for r in second["model_runs"]] == newest_first[10:20]
    assert [r["id"] for r in third["model_runs"]] == newest_first[20:]
    assert third["next_page_token"] is None
    # The page size may change between pages.
    again = await page(gw, "/model-runs", max_results="3", page_token=first["next_page_token"])
    assert [r["id"] for r in again["model_runs"]] == newest_first[10:13]


async def test_default_and_maximum_page_sizes(gw: Gateway) -> None:
    for _ in range(3):
        await gw.trigger()
    everything = await page(gw, "/model-runs")
    assert len(everything["model_runs"]) == 3 and everything["next_page_token"] is None
    exact = await page(gw, "/model-runs", max_results="3")
    assert exact["next_page_token"] is None
    assert len((await page(gw, "/model-runs", max_results="1000"))["model_runs"]) == 3
    empty = await page(gw, "/model-runs", page_token="")
    assert len(empty["model_runs"]) == 3


async def test_status_filter(gw: Gateway) -> None:
    runs = [(await gw.trigger())["id"] for _ in range(5)]
    for run_id in runs[:3]:
        await gw.post(f"/model-runs/{run_id}/cancel")
    cancelling = await page(gw, "/model-runs", status="cancelling", max_results="2")
    assert [r["id"] for r in cancelling["model_runs"]] == [runs[2], runs[1]]
    rest = await page(gw, "/model-runs", status="cancelling", page_token=cancelling["next_page_token"])
    assert [r["id"] for r in rest["model_runs"]] == [runs[0]]
    queued = await page(gw, "/model-runs", status="queued")
    assert [r["id"] for r in queued["model_runs"]] == [runs[4], runs[3]]
    assert (await page(gw, "/model-runs", status="succeeded"))["model_runs"] == []


async def test_bad_max_results_is_400(gw: Gateway) -> None:
    for value in ("0", "1001", "-1", "abc", "1.5", "", " 5", "+5", "10e2", "99999999999", "\uff15"):
        assert await error_code(gw, "/model-runs", max_results=value) == (400, "validation_error"), value


async def test_bad_status_is_400(gw: Gateway) -> None:
    for value in ("", "QUEUED", "done", "queued,running", "passed"):
        assert await error_code(gw, "/model-runs", status=value) == (400, "validation_error"), value


async def test_repeated_parameters_are_400(gw: Gateway) -> None:
    resp = await gw.client.get(
        "/model-runs?max_results=1&max_results=2", headers={"Authorization": f"Bearer {gw.key}"}
    )
    assert resp.status == 400


async def test_page_tokens_are_bound_and_tamper_evident(gw: Gateway) -> None:
    for _ in range(3):
        await gw.trigger()
    await gw.trigger(key=gw.other)
    await gw.trigger(key=gw.other)
    token = (await page(gw, "/model-runs", max_results="1"))["next_page_token"]
    assert token
    queued_token = (await page(gw, "/model-runs", max_results="1", status="queued"))["next_page_token"]
    # Another tenant, another filter, tampering, garbage.
    other = await gw.get("/model-runs", key=gw.other, params={"page_token": token})
    assert other.status == 400 and (await other.json(content_type=None))["code"] == "invalid_page_token"
    assert await error_code(gw, "/model-runs", page_token=token, status="queued") == (
        400,
        "invalid_page_token",
    )
    assert await error_code(gw, "/model-runs", page_token=queued_token) == (400, "invalid_page_token")
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert await error_code(gw, "/model-runs", page_token=tampered) == (400, "invalid_page_token")
    for garbage in ("x", "x.y", "😀", "a" * 3000, "..", "%00"):
        assert await error_code(gw, "/model-runs", page_token=garbage) == (400, "invalid_page_token"), garbage
    # Still fine with the filter it was issued for.
    assert (
        await gw.get("/model-runs", params={"page_token": queued_token, "status": "queued"})
    ).status == 200


async def test_steps_in_definition_order(gw: Gateway) -> None:
    body = trigger_body("c-last", "a-first", "b-middle")
    body["steps"][2]["depends_on"] = ["a-first"]
    run = await gw.trigger(body)
    steps = (await page(gw, f"/model-runs/{run['id']}/steps"))["steps"]
    assert [s["name"] for s in steps] == ["c-last", "a-first", "b-middle"]
    s = steps[2]
    assert s["run_id"] == run["id"] and s["status"] == "pending" and s["attempt"] == 0
    assert s["depends_on"] == ["a-first"] and s["pool"] == "default" and s["kind"] == "synthetic"
    assert s["max_attempts"] == 1 and s["timeout_seconds"] == 3600
    assert s["outputs"] is None and s["error"] is None and s["worker_id"] is None
    assert s["created_at"].endswith("Z") and s["queued_at"] is None
    assert s["test_counts"] == {"total": 0, "passed": 0, "failed": 0, "skipped": 0, "error": 0}
    assert set(s) == {
        "id", "run_id", "name", "kind", "status", "depends_on", "pool", "attempt", "max_attempts",
        "timeout_seconds", "worker_id", "created_at", "queued_at", "started_at", "finished_at",
        "outputs", "error", "test_counts",
    }  # fmt: skip
    assert (await gw.get(f"/model-runs/{uuid4()}/steps")).status == 404
    assert (await gw.get("/model-runs/x/steps")).status == 404


async def seeded_results(gw: Gateway) -> tuple[str, str, list[tuple[int, int, str]]]:
    run = await gw.trigger(trigger_body("train", "evaluate"))
    steps = await gw.pool.fetch(SQL.step_ids, UUID(run["id"]))
    step_id = steps[1]["id"]
    rows: list[tuple[int, int, str]] = []
    # Inserted out of order: the list follows (attempt, seq), not insertion.
    for attempt, seq, status in [
        (2, 1, "passed"),
        (1, 0, "passed"),
        (1, 2, "error"),
        (2, 0, "failed"),
        (1, 1, "failed"),
    ]:
        await gw.pool.execute(
            SQL.insert_result, UUID(run["id"]), step_id, attempt, seq, f"t{attempt}.{seq}", status,
            12.5, None if status == "passed" else "why", {"accuracy": 0.9},
        )  # fmt: skip
        rows.append((attempt, seq, status))
    return run["id"], str(step_id), sorted(rows)


async def test_test_results_in_report_order_with_pages(gw: Gateway) -> None:
    run_id, step_id, rows = await seeded_results(gw)
    path = f"/model-runs/{run_id}/steps/{step_id}/test-results"
    everything = await page(gw, path)
    got = [(r["attempt"], r["name"], r["status"]) for r in everything["test_results"]]
    assert got == [(a, f"t{a}.{s}", st) for a, s, st in rows]
    first = everything["test_results"][0]
    assert first["run_id"] == run_id and first["step_id"] == step_id
    assert first["duration_ms"] == 12.5 and first["metrics"] == {"accuracy": 0.9}
    assert set(first) == {
        "id",
        "run_id",
        "step_id",
        "attempt",
        "name",
        "status",
        "duration_ms",
        "message",
        "metrics",
        "created_at",
    }

    names: list[str] = []
    token = None
    while True:
        query = {"max_results": "2"} | ({"page_token": token} if token else {})
        body = await page(gw, path, **query)
        names += [r["name"] for r in body["test_results"]]
        token = body["next_page_token"]
        if token is None:
            break
    assert names == [r["name"] for r in everything["test_results"]]

    failed = await page(gw, path, status="failed", max_results="1")
    assert [r["name"] for r in failed["test_results"]] == ["t1.1"]
    more = await page(gw, path, status="failed", page_token=failed["next_page_token"])
    assert [r["name"] for r in more["test_results"]] == ["t2.0"]


async def test_test_results_errors(gw: Gateway) -> None:
    run_id, step_id, _ = await seeded_results(gw)
    other_run = await gw.trigger()
    path = f"/model-runs/{run_id}/steps/{step_id}/test-results"
    token = (await page(gw, path, max_results="1"))["next_page_token"]
    # A step that is not in that run, or not a step at all: 404.
    assert (await gw.get(f"/model-runs/{other_run['id']}/steps/{step_id}/test-results")).status == 404
    assert (await gw.get(f"/model-runs/{run_id}/steps/{uuid4()}/test-results")).status == 404
    assert (await gw.get(f"/model-runs/{run_id}/steps/nope/test-results")).status == 404
    assert await error_code(gw, path, status="cancelled") == (400, "validation_error")
    assert await error_code(gw, path, max_results="0") == (400, "validation_error")
    # The token is bound to the step, the filter and the list.
    other_step = (await gw.pool.fetch(SQL.step_ids, UUID(run_id)))[0]["id"]
    other_path = f"/model-runs/{run_id}/steps/{other_step}/test-results"
    assert await error_code(gw, other_path, page_token=token) == (400, "invalid_page_token")
    assert await error_code(gw, path, page_token=token, status="passed") == (400, "invalid_page_token")
    assert await error_code(gw, "/model-runs", page_token=token) == (400, "invalid_page_token")
    runs_token = (await page(gw, "/model-runs", max_results="1"))["next_page_token"]
    assert await error_code(gw, path, page_token=runs_token) == (400, "invalid_page_token")


async def test_list_queries_use_the_keyset_indexes(db_url: str) -> None:
    from gateway.repository import Q

    when = datetime(2026, 1, 1, tzinfo=UTC)
    # A plain connection: PreparedStatement.explain() decodes the plan's JSON itself.
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(SQL.disable_seqscan)
        plan = await (await conn.prepare(Q.list_runs_after)).explain("acme", 10, when, uuid4())
        assert "runs_tenant_created" in json.dumps(plan)
        plan = await (await conn.prepare(Q.list_runs_status_after)).explain(
            "acme", 10, "queued", when, uuid4()
        )
        assert "runs_tenant_status_created" in json.dumps(plan)
    finally:
        await conn.close()
