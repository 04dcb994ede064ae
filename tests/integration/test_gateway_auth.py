"""Keys, scopes, rate limits, their order (401, 429, 403, then 400/404), and tenant isolation."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiohttp import ClientResponse

from shared import apikeys
from tests.integration.gateway_helpers import (
    SQL,
    Gateway,
    bearer,
    broker_down_settings,
    running_gateway,
    trigger_body,
)
from tests.waiting import eventually

RATELIMIT = re.compile(r'^"(default|trigger)";r=(\d+);t=(\d+)$')
POLICY = re.compile(r'^"(default|trigger)";q=(\d+);w=(\d+)$')


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


@pytest.fixture
async def tight(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    """Three calls per key, then nothing for a long while."""
    settings = broker_down_settings(
        db_url,
        rate_limit_per_second=0.001,
        rate_limit_burst=3,
        trigger_rate_limit_per_second=0.001,
        trigger_rate_limit_burst=2,
    )
    async with running_gateway(settings, pool) as gateway:
        yield gateway


async def code_of(resp: ClientResponse) -> str:
    body: dict[str, Any] = await resp.json(content_type=None)
    return str(body["code"])


async def assert_unauthorized(resp: ClientResponse) -> None:
    assert resp.status == 401, await resp.text()
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "RateLimit" not in resp.headers and "RateLimit-Policy" not in resp.headers
    assert await code_of(resp) == "unauthorized"


async def test_missing_malformed_unknown_keys_are_401(gw: Gateway) -> None:
    await assert_unauthorized(await gw.client.get("/model-runs"))
    for header in (
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        f"Token {gw.key}",
        "Bearer not-a-key",
        f"Bearer {gw.key}x",
        f"Bearer {gw.key[:-1]}",
        f"Bearer {gw.key} extra",
        "Bearer mr_aaaaaaaaaaaa_" + "A" * 32,  # well formed, unknown prefix
        f"Bearer {gw.key[:16]}{'B' * 32}",  # known prefix, wrong secret
    ):
        await assert_unauthorized(await gw.client.get("/model-runs", headers={"Authorization": header}))
    await assert_unauthorized(await gw.client.post("/model-runs", json=trigger_body()))
    await assert_unauthorized(await gw.client.get(f"/model-runs/{uuid4()}/events"))
    # The scheme is case-insensitive.
    ok = await gw.client.get("/model-runs", headers={"Authorization": f"bearer {gw.key}"})
    assert ok.status == 200


async def test_unauthenticated_service_endpoints(gw: Gateway) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        resp = await gw.client.get(path)
        assert resp.status == 200, path
        assert "RateLimit" not in resp.headers


async def test_revoked_key_is_refused_within_two_seconds(gw: Gateway) -> None:
    assert (await gw.get("/model-runs")).status == 200
    revoked = await apikeys.revoke_key(gw.pool, gw.key)
    assert revoked is not None and revoked.revoked_at is not None
    started = time.monotonic()

    async def refused() -> bool:
        return (await gw.get("/model-runs")).status == 401

    await eventually(refused, timeout=2.0, what="the revoke to reach the gateway")
    assert time.monotonic() - started < 2.0
    await assert_unauthorized(await gw.get("/model-runs"))


async def test_scopes(gw: Gateway) -> None:
    run = await gw.trigger(key=gw.writer)
    assert (await gw.get(f"/model-runs/{run['id']}", key=gw.reader)).status == 200
    for path in (
        "/model-runs",
        f"/model-runs/{run['id']}",
        f"/model-runs/{run['id']}/steps",
        f"/model-runs/{run['id']}/events",
    ):
        resp = await gw.get(path, key=gw.writer)
        assert resp.status == 403, path
        assert await code_of(resp) == "forbidden"
        assert resp.headers["RateLimit"]
    resp = await gw.post("/model-runs", key=gw.reader, json=trigger_body())
    assert resp.status == 403 and await code_of(resp) == "forbidden"
    resp = await gw.post(f"/model-runs/{run['id']}/cancel", key=gw.reader)
    assert resp.status == 403


async def test_scope_is_checked_before_the_request(gw: Gateway) -> None:
    # A reader sending an invalid trigger, or cancelling a run that does not exist: 403 first.
    resp = await gw.post(
        "/model-runs", key=gw.reader, data=b"{", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 403
    resp = await gw.post(f"/model-runs/{uuid4()}/cancel", key=gw.reader)
    assert resp.status == 403
    resp = await gw.get("/model-runs", key=gw.writer, params={"max_results": "0"})
    assert resp.status == 403
    resp = await gw.get("/model-runs/not-a-uuid", key=gw.writer)
    assert resp.status == 403


async def test_ratelimit_headers_on_every_authenticated_answer(gw: Gateway) -> None:
    answers = [
        await gw.get("/model-runs"),  # 200
        await gw.get(f"/model-runs/{uuid4()}"),  # 404
        await gw.get("/model-runs", params={"status": "nope"}),  # 400
        await gw.get("/model-runs", key=gw.writer),  # 403
    ]
    for resp in answers:
        policy, limit = resp.headers["RateLimit-Policy"], resp.headers["RateLimit"]
        assert policy == '"default";q=200;w=2', policy
        match = RATELIMIT.fullmatch(limit)
        assert match and match[1] == "default" and match[3] == "0", limit
        assert 190 <= int(match[2]) <= 199


async def test_trigger_reports_the_bucket_with_fewer_tokens(gw: Gateway) -> None:
    resp = await gw.post("/model-runs", json=trigger_body())
    assert resp.status == 201
    assert resp.headers["RateLimit-Policy"] == '"trigger";q=40;w=2'
    assert resp.headers["RateLimit"] == '"trigger";r=39;t=0'


async def test_rate_limit_is_429_with_retry_after(tight: Gateway) -> None:
    remaining = []
    for _ in range(3):
        resp = await tight.get("/model-runs")
        assert resp.status == 200
        remaining.append(resp.headers["RateLimit"])
    assert remaining == ['"default";r=2;t=0', '"default";r=1;t=0', '"default";r=0;t=1000']
    resp = await tight.get("/model-runs")
    assert resp.status == 429
    assert await code_of(resp) == "rate_limited"
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    retry_after = resp.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    assert POLICY.fullmatch(resp.headers["RateLimit-Policy"])
    match = RATELIMIT.fullmatch(resp.headers["RateLimit"])
    assert match and match[2] == "0" and int(match[3]) >= 1
    # Buckets are per key: another key of the same tenant still passes.
    assert (await tight.get("/model-runs", key=tight.reader)).status == 200


async def test_trigger_bucket(tight: Gateway) -> None:
    await tight.trigger()
    await tight.trigger()
    resp = await tight.post("/model-runs", json=trigger_body())
    assert resp.status == 429
    assert resp.headers["RateLimit-Policy"] == '"trigger";q=2;w=2000'
    # The refused trigger took nothing from the general bucket: one read is left.
    assert (await tight.get("/model-runs")).status == 200
    assert (await tight.get("/model-runs")).status == 429


async def test_401_comes_before_429(tight: Gateway) -> None:
    for _ in range(4):
        await tight.get("/model-runs")
    assert (await tight.get("/model-runs")).status == 429
    await assert_unauthorized(
        await tight.client.get("/model-runs", headers=bearer("mr_bbbbbbbbbbbb_" + "C" * 32))
    )


async def test_429_comes_before_403_and_400(tight: Gateway) -> None:
    for _ in range(3):
        assert (await tight.get("/model-runs", key=tight.writer)).status == 403
    assert (await tight.get("/model-runs", key=tight.writer)).status == 429
    assert (await tight.get("/model-runs/bad", key=tight.writer)).status == 429
    for _ in range(3):
        await tight.get("/model-runs", key=tight.reader, params={"max_results": "x"})
    resp = await tight.get("/model-runs", key=tight.reader, params={"max_results": "x"})
    assert resp.status == 429


async def test_other_tenants_runs_do_not_exist(gw: Gateway) -> None:
    run = await gw.trigger()
    run_id = run["id"]
    steps = await gw.pool.fetch(SQL.step_ids, UUID(run_id))
    step_id = steps[0]["id"]
    for path in (
        f"/model-runs/{run_id}",
        f"/model-runs/{run_id}/steps",
        f"/model-runs/{run_id}/steps/{step_id}/test-results",
        f"/model-runs/{run_id}/events",
    ):
        resp = await gw.get(path, key=gw.other)
        assert resp.status == 404, path
        assert await code_of(resp) == "not_found"
        assert (await gw.get(path)).status == 200, path
    resp = await gw.post(f"/model-runs/{run_id}/cancel", key=gw.other)
    assert resp.status == 404
    assert (await (await gw.get(f"/model-runs/{run_id}")).json())["status"] == "queued"
    listed = await (await gw.get("/model-runs", key=gw.other)).json()
    assert listed == {"model_runs": [], "next_page_token": None}


async def test_last_used_is_written_in_batches(db_url: str, pool: asyncpg.Pool) -> None:
    async with running_gateway(broker_down_settings(db_url), pool) as gw:
        prefix = apikeys.parse_key(gw.key)
        assert prefix is not None
        for _ in range(5):
            assert (await gw.get("/model-runs")).status == 200
        # Not per request: nothing is written yet.
        assert await pool.fetchval(SQL.key_last_used, prefix) is None
    # The batch is flushed, at the latest when the gateway stops.
    assert await pool.fetchval(SQL.key_last_used, prefix) is not None
    unused = apikeys.parse_key(gw.other)
    assert await pool.fetchval(SQL.key_last_used, unused) is None


async def test_api_keys_module(pool: asyncpg.Pool) -> None:
    key = await apikeys.create_key(pool, "new-tenant", ["runs:read"])
    assert apikeys.KEY_PATTERN.fullmatch(key)
    prefix = apikeys.parse_key(key)
    assert prefix is not None
    listed = await apikeys.list_keys(pool, "new-tenant")
    assert [(k.prefix, k.scopes, k.revoked_at) for k in listed] == [(prefix, ("runs:read",), None)]
    stored = await pool.fetchrow(SQL.stored_key_hash, prefix)
    assert stored is not None and bytes(stored["key_hash"]) == apikeys.key_hash(key)
    assert key.encode() not in bytes(stored["key_hash"])
    for bad_tenant in ("", "Upper", "-lead", "a" * 64, "under_score", "nul\x00"):
        with pytest.raises(apikeys.InvalidKeyRequest):
            await apikeys.create_key(pool, bad_tenant, ["runs:read"])
    with pytest.raises(apikeys.InvalidKeyRequest):
        await apikeys.create_key(pool, "acme", [])
    with pytest.raises(apikeys.InvalidKeyRequest):
        await apikeys.create_key(pool, "acme", ["runs:admin"])
    assert (await apikeys.revoke_key(pool, prefix)) is not None
    assert (await apikeys.revoke_key(pool, "mr_" + prefix)) is not None  # again: still revoked
    assert await apikeys.revoke_key(pool, "zzzzzzzzzzzz") is None
    with pytest.raises(apikeys.InvalidKeyRequest):
        await apikeys.revoke_key(pool, "not a key")
    assert (await apikeys.list_keys(pool))[0].revoked_at is not None
