"""GET /model-runs/{runId}/events: stored events in runseq order, then live ones, as SSE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson
import pytest
from aiohttp import ClientResponse

from gateway.views import events as events_view
from tests.integration.gateway_helpers import SQL, Gateway, broker_down_settings, running_gateway

READ_TIMEOUT = 5.0


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


class Stream:
    """Reads SSE frames: each a dict of field -> value, comments under ':'."""

    def __init__(self, resp: ClientResponse) -> None:
        self.resp = resp

    async def frame(self) -> dict[str, str] | None:
        fields: dict[str, str] = {}
        while True:
            line = await asyncio.wait_for(self.resp.content.readline(), READ_TIMEOUT)
            if not line:
                return fields or None
            text = line.decode().rstrip("\n")
            if text == "":
                if fields:
                    return fields
                continue
            name, _, value = text.partition(":")
            fields[name] = value.removeprefix(" ")

    async def event(self) -> dict[str, str]:
        while True:
            frame = await self.frame()
            assert frame is not None, "the stream ended"
            if "" not in frame:  # not a comment
                return frame

    async def ended(self) -> bool:
        return await self.frame() is None


async def open_stream(gw: Gateway, run_id: str, **headers: str) -> Stream:
    resp = await gw.get(f"/model-runs/{run_id}/events", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Request-Id"] and resp.headers["RateLimit"]
    return Stream(resp)


async def append(gw: Gateway, run_id: str, type_: str, status: str) -> int:
    runseq: int = await gw.pool.fetchval(SQL.append_run_event, UUID(run_id), type_, status)
    return runseq


def data(frame: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(frame["data"])
    return body


async def test_stored_then_live_then_ends_on_the_terminal_event(gw: Gateway) -> None:
    run = await gw.trigger()
    await append(gw, run["id"], "modelruns.run.started", "running")
    stream = await open_stream(gw, run["id"])
    first = await stream.event()
    assert set(first) == {"id", "data"}  # no `event:` field
    assert first["id"] == "1"
    queued = data(first)
    assert queued["type"] == "modelruns.run.queued" and queued["runseq"] == 1
    assert queued["data"]["id"] == run["id"] and queued["specversion"] == "1.0"
    second = await stream.event()
    assert second["id"] == "2" and data(second)["type"] == "modelruns.run.started"
    # Live: appended after the stream caught up.
    await append(gw, run["id"], "modelruns.step.started", "running")
    live = await stream.event()
    assert live["id"] == "3" and data(live)["type"] == "modelruns.step.started"
    await append(gw, run["id"], "modelruns.run.succeeded", "succeeded")
    last = await stream.event()
    assert data(last)["type"] == "modelruns.run.succeeded"
    assert await stream.ended()


async def test_last_event_id_resumes_after_it(gw: Gateway) -> None:
    run = await gw.trigger()
    for type_ in ("modelruns.run.started", "modelruns.step.queued", "modelruns.step.started"):
        await append(gw, run["id"], type_, "running")
    stream = await open_stream(gw, run["id"], **{"Last-Event-ID": "2"})
    assert (await stream.event())["id"] == "3"
    assert (await stream.event())["id"] == "4"
    # One beyond the last event resumes live from there.
    ahead = await open_stream(gw, run["id"], **{"Last-Event-ID": "5"})
    await append(gw, run["id"], "modelruns.step.succeeded", "running")  # 5, behind the cursor
    await append(gw, run["id"], "modelruns.run.succeeded", "succeeded")  # 6
    event = await ahead.event()
    assert event["id"] == "6" and data(event)["type"] == "modelruns.run.succeeded"
    assert await ahead.ended()


async def test_a_finished_run_streams_its_history_and_ends(gw: Gateway) -> None:
    run = await gw.trigger()
    await gw.post(f"/model-runs/{run['id']}/cancel")
    await append(gw, run["id"], "modelruns.run.cancelled", "cancelled")
    stream = await open_stream(gw, run["id"])
    types = [data(await stream.event())["type"] for _ in range(3)]
    assert types == ["modelruns.run.queued", "modelruns.run.cancelling", "modelruns.run.cancelled"]
    assert await stream.ended()
    # Resuming at its end: nothing more will come, so the stream ends at once.
    done = await open_stream(gw, run["id"], **{"Last-Event-ID": "3"})
    assert await done.ended()


async def test_non_integer_last_event_id_is_400(gw: Gateway) -> None:
    run = await gw.trigger()
    for value in ("abc", "1.5", "1e3", "0x10", "--1", "1 2"):
        resp = await gw.get(f"/model-runs/{run['id']}/events", headers={"Last-Event-ID": value})
        assert resp.status == 400, value
        assert (await resp.json(content_type=None))["code"] == "validation_error"
    # A run that is not the caller's is 404 first, whatever the header holds.
    missing = await gw.get(f"/model-runs/{uuid4()}/events", headers={"Last-Event-ID": "abc"})
    assert missing.status == 404


async def test_huge_or_negative_last_event_id_is_clamped(gw: Gateway) -> None:
    run = await gw.trigger()
    stream = await open_stream(gw, run["id"], **{"Last-Event-ID": "-5"})
    assert (await stream.event())["id"] == "1"
    await stream.resp.release()
    await gw.pool.execute(SQL.set_run_status, UUID(run["id"]), "succeeded")
    ended = await open_stream(gw, run["id"], **{"Last-Event-ID": "9" * 30})
    assert await ended.ended()


async def test_keep_alive_comments_while_nothing_happens(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_view, "KEEPALIVE_SECONDS", 0.3)
    run = await gw.trigger()
    stream = await open_stream(gw, run["id"])
    assert (await stream.event())["id"] == "1"
    comment = await stream.frame()
    assert comment is not None and set(comment) == {""}
    await append(gw, run["id"], "modelruns.run.started", "running")
    assert (await stream.event())["id"] == "2"


async def test_events_of_unknown_runs_are_404(gw: Gateway) -> None:
    assert (await gw.get(f"/model-runs/{uuid4()}/events")).status == 404
    assert (await gw.get("/model-runs/nope/events")).status == 404


async def test_open_streams_end_when_the_gateway_stops(db_url: str, pool: asyncpg.Pool) -> None:
    async with running_gateway(broker_down_settings(db_url), pool) as gw:
        run = await gw.trigger()
        stream = await open_stream(gw, run["id"])
        assert (await stream.event())["id"] == "1"
        closing = asyncio.create_task(gw.client.close())
        await asyncio.wait_for(closing, 5.0)


def test_keep_alive_comments_come_every_15_seconds() -> None:
    # API.md's interval; the tests above shorten it to see comments quickly.
    assert events_view.KEEPALIVE_SECONDS == 15.0
    assert events_view.KEEPALIVE_FRAME.startswith(b":")
