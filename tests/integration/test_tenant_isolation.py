"""BOLA: every route of the app's router, walked with another tenant's key. A run-scoped path
answers exactly as for a run that does not exist; the rest either lists only the caller's own runs
or is a public service endpoint. A new route that fits none of these fails here until it is
classified, so it cannot skip the check.

(Page tokens and idempotency keys across tenants: test_gateway_lists and test_gateway_idempotency.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiohttp import ClientResponse

from tests.integration.gateway_helpers import SQL, Gateway, broker_down_settings, running_gateway

# Routes outside /model-runs that need no key, by design (API.md).
PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/ui", "/ui/", "/ui/{filename}"}
# /model-runs routes that name no run: the caller's own tenant is the only scope they have.
TENANT_WIDE = {("GET", "/model-runs"), ("POST", "/model-runs")}


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


def routes(gw: Gateway) -> list[tuple[str, str]]:
    found = []
    for route in gw.app.router.routes():
        resource = route.resource
        assert resource is not None
        found.append((route.method, resource.canonical))
    return sorted(set(found))


def fill(template: str, run_id: str, step_id: str) -> str:
    return template.replace("{runId}", run_id).replace("{stepId}", step_id)


async def answer(gw: Gateway, method: str, path: str, key: str) -> tuple[int, dict[str, Any] | None]:
    resp: ClientResponse = await gw.client.request(
        method, path, headers={"Authorization": f"Bearer {key}"}, json={} if method == "POST" else None
    )
    if method == "HEAD":
        return resp.status, None
    body: dict[str, Any] = await resp.json(content_type=None)
    body.pop("request_id")
    return resp.status, body


async def test_every_route_refuses_another_tenants_runs(gw: Gateway) -> None:
    run = await gw.trigger()
    run_id = run["id"]
    step_id = str((await gw.pool.fetch(SQL.step_ids, UUID(run_id)))[0]["id"])
    missing_run, missing_step = str(uuid4()), str(uuid4())
    walked = []
    for method, template in routes(gw):
        if not template.startswith("/model-runs"):
            assert template in PUBLIC, (
                f"{method} {template}: a route outside the API must be public on purpose"
            )
            continue
        if "{runId}" not in template:
            assert (method, template) in TENANT_WIDE, f"{method} {template}: classify this route here"
            continue
        theirs = await answer(gw, method, fill(template, run_id, step_id), gw.other)
        nothing = await answer(gw, method, fill(template, missing_run, missing_step), gw.other)
        assert theirs[0] == 404, (method, template, theirs)
        assert theirs == nothing, (method, template)
        # Neither does a real step id help under a run that is not the caller's.
        assert await answer(gw, method, fill(template, missing_run, step_id), gw.other) == nothing
        walked.append((method, template))
    assert len(walked) >= 5, walked
    # The owner still sees it all, and the other tenant changed nothing.
    got = await gw.get(f"/model-runs/{run_id}")
    assert got.status == 200 and (await got.json())["status"] == "queued"


async def test_tenant_wide_routes_show_only_the_callers_runs(gw: Gateway) -> None:
    mine = await gw.trigger()
    theirs = await gw.trigger(key=gw.other)
    listed = await (await gw.get("/model-runs", key=gw.other)).json()
    assert [r["id"] for r in listed["model_runs"]] == [theirs["id"]]
    for status in ("queued", "cancelled"):
        page = await (await gw.get("/model-runs", key=gw.other, params={"status": status})).json()
        assert mine["id"] not in [r["id"] for r in page["model_runs"]]


async def test_answers_leak_no_versions_and_are_not_cached(gw: Gateway) -> None:
    run = await gw.trigger()
    for method, path, key in (
        ("GET", "/model-runs", gw.key),
        ("GET", f"/model-runs/{run['id']}", gw.key),
        ("GET", "/model-runs", "wrong"),
        ("GET", "/nowhere", gw.key),
        ("DELETE", "/model-runs", gw.key),
        ("GET", "/healthz", gw.key),
        ("GET", "/openapi.json", gw.key),
    ):
        resp = await gw.client.request(method, path, headers={"Authorization": f"Bearer {key}"})
        server = resp.headers.get("Server", "")
        assert "aiohttp" not in server and "Python" not in server and not any(c.isdigit() for c in server)
        assert resp.headers["Cache-Control"] == "no-store", (method, path)
        text = await resp.text()
        assert "Traceback" not in text and "aiohttp" not in text, (method, path, text)
