"""Trigger, get and cancel on the real database; bad input of every kind is a 4xx, never a 500."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson
import pytest

from gateway.repository import GatewayRepository
from shared import amqp
from shared.messages import RunCommand, decode
from tests.integration.gateway_helpers import (
    SQL,
    TENANT,
    Gateway,
    broker_down_settings,
    running_gateway,
    synthetic_step,
    trigger_body,
)


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


async def problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == "/problems/" + code.replace("_", "-")
    assert body["title"]
    assert body["request_id"] == resp.headers["X-Request-Id"]
    return body


async def test_trigger_then_get_finds_it(gw: Gateway) -> None:
    body = trigger_body("train", "evaluate", labels={"team": "vision"}, parameters={"dataset": "iris"})
    body["steps"][1]["depends_on"] = ["train"]
    body["steps"][1]["max_attempts"] = 2
    resp = await gw.post("/model-runs", json=body)
    assert resp.status == 201, await resp.text()
    run = await resp.json()
    assert resp.headers["Location"] == f"/model-runs/{run['id']}"
    assert resp.headers["Cache-Control"] == "no-store"
    assert run["status"] == "queued"
    assert run["model"]["name"] == "iris-classifier"
    assert run["labels"] == {"team": "vision"} and run["parameters"] == {"dataset": "iris"}
    assert run["step_counts"] == {
        "total": 2, "pending": 2, "queued": 0, "running": 0,
        "succeeded": 0, "failed": 0, "cancelled": 0, "skipped": 0,
    }  # fmt: skip
    assert run["test_counts"] == {"total": 0, "passed": 0, "failed": 0, "skipped": 0, "error": 0}
    assert run["created_at"].endswith("Z")
    assert run["started_at"] is None and run["finished_at"] is None and run["error"] is None
    got = await gw.get(f"/model-runs/{run['id']}")
    assert got.status == 200
    assert await got.json() == run
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 1


async def test_trigger_writes_steps_event_and_outbox_in_one_go(gw: Gateway) -> None:
    body = trigger_body("train", "evaluate")
    body["steps"][0]["params"] = {"duration_seconds": 0.5, "outputs": {"k": 1}}
    body["steps"][1].update(depends_on=["train"], pool="gpu", timeout_seconds=60, allow_test_failures=True)
    run = await gw.trigger(body)
    run_id = UUID(run["id"])
    steps = await gw.pool.fetch(SQL.steps_of, run_id)
    assert [(s["position"], s["name"], s["status"], s["attempt"]) for s in steps] == [
        (0, "train", "pending", 0),
        (1, "evaluate", "pending", 0),
    ]
    assert steps[0]["params"] == {"duration_seconds": 0.5, "outputs": {"k": 1}}
    assert list(steps[1]["depends_on"]) == ["train"]
    assert (steps[1]["pool"], steps[1]["timeout_seconds"], steps[1]["max_attempts"]) == ("gpu", 60, 1)
    assert steps[1]["allow_test_failures"] is True
    assert steps[0]["test_counts"]["total"] == 0

    events = await gw.pool.fetch(SQL.run_events, run_id)
    assert [(e["runseq"], e["type"]) for e in events] == [(1, "modelruns.run.queued")]
    event = events[0]["body"]
    assert event["source"] == "/modelruns/gateway"
    assert event["subject"] == f"model-runs/{run_id}"
    assert event["runseq"] == 1 and event["specversion"] == "1.0"
    assert event["data"] == run

    rows = await gw.pool.fetch(SQL.outbox_rows)
    assert [(r["exchange"], r["routing_key"], r["mandatory"]) for r in rows] == [
        (amqp.RESULTS, "acme.run.queued", False),
        (amqp.COMMANDS, "run.trigger", True),
    ]
    assert rows[0]["content_type"] == "application/cloudevents+json"
    assert rows[0]["message_id"] == event["id"]
    assert orjson.loads(rows[0]["body"]) == orjson.loads(orjson.dumps(event))
    command = decode(RunCommand, bytes(rows[1]["body"]))
    assert command.command == "trigger" and command.run_id == run_id


async def test_get_unknown_or_malformed_ids_are_404(gw: Gateway) -> None:
    for path in (
        f"/model-runs/{uuid4()}",
        "/model-runs/not-a-uuid",
        "/model-runs/1",
        "/model-runs/%00",
        f"/model-runs/{uuid4().hex}",
        "/model-runs/" + "9" * 500,
        "/model-runs/%F0%9F%98%80",
    ):
        await problem(await gw.get(path), 404, "not_found")


async def test_validation_errors_point_at_the_field(gw: Gateway) -> None:
    body = trigger_body("train", "evaluate")
    body["steps"][1]["depends_on"] = ["trian"]
    found = await problem(await gw.post("/model-runs", json=body), 400, "validation_error")
    assert {"pointer": "/steps/1/depends_on/0", "detail": "unknown step 'trian'"} in found["errors"]

    for bad, pointer in (
        ({"steps": [synthetic_step("a")]}, "/model"),
        ({**trigger_body(), "surprise": 1}, "/surprise"),
        ({**trigger_body(), "model": {"name": ""}}, "/model/name"),
        ({**trigger_body(), "model": {"name": "x" * 201}}, "/model/name"),
        ({"model": {"name": "m"}, "steps": []}, "/steps"),
        ({"model": {"name": "m"}, "steps": [{"name": "a", "kind": "nope"}]}, "/steps/0/kind"),
        ({"model": {"name": "m"}, "steps": [{"name": "a", "kind": "synthetic", "params": {"bogus": 1}}]}, "/steps/0/params/bogus"),
        ({"model": {"name": "m"}, "steps": [synthetic_step("a", timeout_seconds="60")]}, "/steps/0/timeout_seconds"),
        ({"model": {"name": "m"}, "steps": [synthetic_step("a", max_attempts=11)]}, "/steps/0/max_attempts"),
        ({"model": {"name": "m"}, "steps": [synthetic_step("a", depends_on=["a"])]}, "/steps/0/depends_on/0"),
        ({**trigger_body(), "labels": {"k": 1}}, "/labels/k"),
    ):  # fmt: skip
        found = await problem(await gw.post("/model-runs", json=bad), 400, "validation_error")
        pointers = [e["pointer"] for e in found["errors"]]
        assert any(p.startswith(pointer) for p in pointers), (bad, found)
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 0


async def test_malformed_bodies_are_400(gw: Gateway) -> None:
    headers = {"Content-Type": "application/json"}
    for raw in (b"", b"{", b"nul", b"[1,2", b'{"a":1}x', b"\xff\xfe", b'{"a":"\\ud800"}', b"NaN", b"1e999"):
        await problem(await gw.post("/model-runs", data=raw, headers=headers), 400, "invalid_json")
    for not_object in (b"[]", b"1", b'"text"', b"null"):
        found = await problem(
            await gw.post("/model-runs", data=not_object, headers=headers), 400, "validation_error"
        )
        assert found["errors"][0]["pointer"] == ""
    deep = (
        b'{"model":{"name":"m"},"steps":[{"name":"a","kind":"synthetic"}],"parameters":'
        + b"[" * 500
        + b"]" * 500
        + b"}"
    )
    await problem(await gw.post("/model-runs", data=deep, headers=headers), 400, "validation_error")


async def test_nul_characters_are_refused(gw: Gateway) -> None:
    for body in (
        {**trigger_body(), "model": {"name": "iris\u0000"}},
        {**trigger_body(), "labels": {"te\u0000am": "x"}},
        {**trigger_body(), "parameters": {"a": ["ok", "b\u0000d"]}},
    ):
        found = await problem(await gw.post("/model-runs", json=body), 400, "validation_error")
        assert "NUL" in found["errors"][0]["detail"]
    # A raw NUL byte inside a JSON string is not JSON at all.
    raw = b'{"model":{"name":"a\x00b"},"steps":[{"name":"a","kind":"synthetic"}]}'
    await problem(
        await gw.post("/model-runs", data=raw, headers={"Content-Type": "application/json"}),
        400,
        "invalid_json",
    )
    await problem(await gw.get("/model-runs", params={"status": "queued\x00"}), 400, "validation_error")
    await problem(await gw.get("/model-runs", params={"max_results": "1\x00"}), 400, "validation_error")
    await problem(await gw.get("/model-runs", params={"page_token": "a\x00b"}), 400, "invalid_page_token")
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 0


async def test_any_unicode_is_stored_as_given(gw: Gateway) -> None:
    labels = {"emoji": "🧪🚀", "rtl": "שלום", "zw": "a\u200bb", "cjk": "模型"}
    body = {**trigger_body(), "labels": labels, "parameters": {"ключ": "значение", "astral": "\U0001f600"}}
    run = await gw.trigger(body)
    got = await (await gw.get(f"/model-runs/{run['id']}")).json()
    assert got["labels"] == labels and got["parameters"]["astral"] == "\U0001f600"


async def test_bodies_over_one_mib_are_413(gw: Gateway) -> None:
    big = orjson.dumps({**trigger_body(), "parameters": {"blob": "x" * (1024 * 1024)}})
    await problem(
        await gw.post("/model-runs", data=io.BytesIO(big), headers={"Content-Type": "application/json"}),
        413,
        "payload_too_large",
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 65536  # JSON whitespace, 1.25 MiB in all, no Content-Length

    await problem(
        await gw.post("/model-runs", data=chunks(), headers={"Content-Type": "application/json"}),
        413,
        "payload_too_large",
    )
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 0


async def test_a_large_body_under_the_limit_is_accepted(gw: Gateway) -> None:
    results = [
        {"name": f"accuracy check {i:05d}", "status": "passed", "metrics": {"accuracy": 0.5}}
        for i in range(10000)
    ]
    body = trigger_body()
    body["steps"][0]["params"] = {"results": results}
    assert 512 * 1024 < len(orjson.dumps(body)) < 1024 * 1024
    await gw.trigger(body)


async def test_non_json_content_types_are_415(gw: Gateway) -> None:
    data = orjson.dumps(trigger_body())
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ):
        resp = await gw.post("/model-runs", data=data, headers={"Content-Type": content_type})
        await problem(resp, 415, "unsupported_media_type")
    ok = await gw.post("/model-runs", data=data, headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status == 201


async def test_cancel_a_queued_run(gw: Gateway) -> None:
    run = await gw.trigger()
    run_id = UUID(run["id"])
    await gw.pool.execute(SQL.clear_outbox)
    resp = await gw.post(f"/model-runs/{run_id}/cancel")
    assert resp.status == 200, await resp.text()
    cancelled = await resp.json()
    assert cancelled["status"] == "cancelling"
    assert cancelled["cancel_requested_at"] is not None
    events = await gw.pool.fetch(SQL.run_events, run_id)
    assert [(e["runseq"], e["type"]) for e in events] == [
        (1, "modelruns.run.queued"),
        (2, "modelruns.run.cancelling"),
    ]
    assert events[1]["body"]["data"] == cancelled
    rows = await gw.pool.fetch(SQL.outbox_rows)
    assert [(r["exchange"], r["routing_key"]) for r in rows] == [
        (amqp.RESULTS, "acme.run.cancelling"),
        (amqp.COMMANDS, "run.cancel"),
    ]
    assert decode(RunCommand, bytes(rows[1]["body"])) == RunCommand(command="cancel", run_id=run_id)

    # Idempotent: a cancelling run answers as it is, and nothing more is recorded.
    again = await gw.post(f"/model-runs/{run_id}/cancel")
    assert again.status == 200
    assert await again.json() == cancelled
    assert len(await gw.pool.fetch(SQL.run_events, run_id)) == 2
    assert len(await gw.pool.fetch(SQL.outbox_rows)) == 2


async def test_cancel_a_running_run_and_a_finished_one(gw: Gateway) -> None:
    running = await gw.trigger()
    await gw.pool.execute(SQL.set_run_status, UUID(running["id"]), "running")
    resp = await gw.post(f"/model-runs/{running['id']}/cancel")
    assert (await resp.json())["status"] == "cancelling"

    finished = await gw.trigger()
    await gw.pool.execute(SQL.set_run_status, UUID(finished["id"]), "succeeded")
    resp = await gw.post(f"/model-runs/{finished['id']}/cancel")
    assert resp.status == 200
    answer = await resp.json()
    assert answer["status"] == "succeeded" and answer["cancel_requested_at"] is None
    assert len(await gw.pool.fetch(SQL.run_events, UUID(finished["id"]))) == 1


async def test_cancel_unknown_or_malformed_is_404(gw: Gateway) -> None:
    await problem(await gw.post(f"/model-runs/{uuid4()}/cancel"), 404, "not_found")
    await problem(await gw.post("/model-runs/nope/cancel"), 404, "not_found")


async def test_request_ids(gw: Gateway) -> None:
    resp = await gw.get("/model-runs", headers={"X-Request-Id": "trace-abc.123"})
    assert resp.headers["X-Request-Id"] == "trace-abc.123"
    odd = "<trace>!#$%&'()*,;?[]^`{|}~" + "x" * 228
    assert len(odd) == 255
    echoed = await gw.get("/model-runs", headers={"X-Request-Id": odd})
    assert echoed.headers["X-Request-Id"] == odd
    for refused in ("bad id with spaces", "y" * 256, "caf\u00e9"):
        generated = await gw.get("/model-runs", headers={"X-Request-Id": refused})
        assert generated.headers["X-Request-Id"] != refused
        assert len(generated.headers["X-Request-Id"]) >= 16
    missing = await gw.client.get("/healthz")
    assert missing.headers["X-Request-Id"]
    failed = await gw.get(f"/model-runs/{uuid4()}", headers={"X-Request-Id": "r-404"})
    assert (await failed.json(content_type=None))["request_id"] == "r-404"


async def test_unknown_routes_and_methods(gw: Gateway) -> None:
    await problem(await gw.client.get("/nope"), 404, "not_found")
    await problem(await gw.get(f"/model-runs/{uuid4()}/nope/deeper"), 404, "not_found")
    await problem(await gw.get("/model-runs/"), 404, "not_found")
    resp = await gw.client.delete(f"/model-runs/{uuid4()}", headers={"Authorization": f"Bearer {gw.key}"})
    await problem(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"]
    await problem(
        await gw.client.put("/model-runs", headers={"Authorization": f"Bearer {gw.key}"}),
        405,
        "method_not_allowed",
    )


async def test_internal_errors_hide_their_cause(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("secret detail of the failure")

    monkeypatch.setattr(GatewayRepository, "get_run", broken)
    resp = await gw.get(f"/model-runs/{uuid4()}")
    found = await problem(resp, 500, "internal")
    text = orjson.dumps(found).decode()
    assert "secret detail" not in text and "Traceback" not in text


async def test_an_integer_beyond_64_bits_is_refused_not_rounded(gw: Gateway) -> None:
    body = b'{"model": {"name": "m"}, "steps": [{"name": "a", "kind": "synthetic"}], "parameters": {"n": 123456789012345678901234567890}}'
    resp = await gw.client.post(
        "/model-runs",
        data=body,
        headers={"Authorization": f"Bearer {gw.key}", "Content-Type": "application/json"},
    )
    body_of = await problem(resp, 400, "validation_error")
    assert "64 bits" in body_of["detail"]
