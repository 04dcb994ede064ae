"""Idempotency-Key: the same key and body within 24 h give the original run, also under a race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest

from tests.integration.gateway_helpers import (
    OTHER_TENANT,
    SQL,
    TENANT,
    Gateway,
    broker_down_settings,
    running_gateway,
    trigger_body,
)


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_same_key_same_body_returns_the_original_run(gw: Gateway) -> None:
    first = await gw.trigger(trigger_body("a", "b"), headers=key("order-42"))
    # The same JSON value: other key order and whitespace.
    raw = orjson.dumps(trigger_body("a", "b"), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    resp = await gw.post(
        "/model-runs", data=raw, headers={**key("order-42"), "Content-Type": "application/json"}
    )
    assert resp.status == 201
    again = await resp.json()
    assert again["id"] == first["id"]
    assert resp.headers["Location"] == f"/model-runs/{first['id']}"
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 1


async def test_replay_answers_the_run_as_it_is_now(gw: Gateway) -> None:
    first = await gw.trigger(headers=key("k1"))
    await gw.post(f"/model-runs/{first['id']}/cancel")
    again = await gw.trigger(headers=key("k1"))
    assert again["id"] == first["id"] and again["status"] == "cancelling"


async def test_same_key_other_body_is_400(gw: Gateway) -> None:
    await gw.trigger(trigger_body("a"), headers=key("k2"))
    resp = await gw.post("/model-runs", json=trigger_body("b"), headers=key("k2"))
    assert resp.status == 400
    body = await resp.json(content_type=None)
    assert body["code"] == "idempotency_key_reused" and body["type"] == "/problems/idempotency-key-reused"
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 1


async def test_concurrent_requests_with_one_key_make_one_run(gw: Gateway) -> None:
    body = trigger_body("a", "b", "c")
    responses = await asyncio.gather(
        *(gw.post("/model-runs", json=body, headers=key("race")) for _ in range(12))
    )
    assert [r.status for r in responses] == [201] * 12
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 1
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 1
    # Only the winner's rows exist: one run.queued event and one trigger command.
    assert len(await gw.pool.fetch(SQL.outbox_rows)) == 2


async def test_concurrent_requests_with_one_key_and_other_bodies(gw: Gateway) -> None:
    responses = await asyncio.gather(
        *(gw.post("/model-runs", json=trigger_body(f"s{i}"), headers=key("race-2")) for i in range(6))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201] + [400] * 5
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 1


async def test_keys_are_per_tenant(gw: Gateway) -> None:
    mine = await gw.trigger(headers=key("shared-key"))
    theirs = await gw.trigger(headers=key("shared-key"), key=gw.other)
    assert mine["id"] != theirs["id"]
    assert await gw.pool.fetchval(SQL.count_runs, OTHER_TENANT) == 1


async def test_a_key_older_than_a_day_is_free_again(gw: Gateway) -> None:
    first = await gw.trigger(trigger_body("a"), headers=key("daily"))
    await gw.pool.execute(SQL.age_idempotency_keys)
    second = await gw.trigger(trigger_body("b"), headers=key("daily"))
    assert second["id"] != first["id"]
    third = await gw.trigger(trigger_body("b"), headers=key("daily"))
    assert third["id"] == second["id"]


async def test_without_a_key_every_trigger_is_a_new_run(gw: Gateway) -> None:
    a = await gw.trigger()
    b = await gw.trigger()
    assert a["id"] != b["id"]


async def test_invalid_keys_are_400(gw: Gateway) -> None:
    for bad in ("", " ", "x" * 256, "with space", "tab\tkey", "\u00e9"):
        resp = await gw.client.post(
            "/model-runs",
            data=orjson.dumps(trigger_body()),
            headers={
                "Authorization": f"Bearer {gw.key}",
                "Content-Type": "application/json",
                "Idempotency-Key": bad,
            },
        )
        assert resp.status == 400, (bad, await resp.text())
        assert (await resp.json(content_type=None))["code"] == "invalid_idempotency_key"
    assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 0


async def test_the_longest_visible_key_is_fine(gw: Gateway) -> None:
    await gw.trigger(headers=key("~" * 255))
    await gw.trigger(headers=key("!#$%&'()*+,-./:;<=>?@[]^_`{|}~"))
