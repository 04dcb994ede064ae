"""The Python client against a real gateway on real Postgres: typed answers and errors, pages,
retries on 429 and 503, a trigger whose answer is lost, and the event stream's resume."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import aiohttp
import asyncpg
import pytest

from gateway.views import events as events_view
from modelruns_client import (
    BadRequest,
    Client,
    ClientError,
    Forbidden,
    IdempotencyKeyReused,
    NotFound,
    RateLimited,
    Retry,
    Run,
    RunEvent,
    ServiceUnavailable,
    Step,
    SyncClient,
    TestResult,
    TransportError,
    TriggerRequest,
    Unauthorized,
)
from shared.db import queries
from tests.integration.gateway_helpers import (
    SQL,
    TENANT,
    Gateway,
    broker_down_settings,
    running_gateway,
    trigger_body,
)
from tests.integration.tcp_proxy import TcpProxy, in_front_of

EVENTS = queries.load("tests.integration", "client_fixtures.sql")
# Quick retries: the tests bound what happens, not how long the backoff is.
QUICK = Retry(attempts=5, backoff=0.05, max_backoff=0.2)


class Retries:
    """What a client's on_retry was told, and a way to wait for it."""

    def __init__(self) -> None:
        self.errors: list[ClientError] = []
        self.seen = asyncio.Event()

    def __call__(self, error: ClientError, delay: float) -> None:
        self.errors.append(error)
        self.seen.set()


def url_of(gw: Gateway) -> str:
    return str(gw.client.make_url(""))


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[Client]:
    async with Client(url_of(gw), gw.key, retry=QUICK) as client:
        yield client


async def append(gw: Gateway, run_id: str, type_: str, status: str = "running") -> int:
    runseq: int = await gw.pool.fetchval(EVENTS.append_cloud_event, UUID(run_id), type_, status)
    return runseq


async def test_answers_are_the_apis_models(gw: Gateway, client: Client) -> None:
    request = TriggerRequest.model_validate(trigger_body("train", "evaluate", labels={"team": "vision"}))
    run = await client.trigger(request)
    assert isinstance(run, Run) and run.status == "queued" and run.labels == {"team": "vision"}
    assert (await client.get(run.id)) == run
    steps = await client.steps(run.id)
    assert [s.name for s in steps] == ["train", "evaluate"] and all(isinstance(s, Step) for s in steps)
    cancelled = await client.cancel(run.id)
    assert cancelled.id == run.id and cancelled.cancel_requested_at is not None
    # A plain JSON body goes as it is.
    assert (await client.trigger(trigger_body("x"))).model.name == "iris-classifier"
    # On the caller's own session, which the client leaves open.
    async with aiohttp.ClientSession() as session:
        async with Client(url_of(gw), gw.key, session=session) as borrowed:
            assert (await borrowed.get(run.id)).id == run.id
        assert not session.closed


async def test_lists_walk_every_page(gw: Gateway, client: Client) -> None:
    made = [(await client.trigger(trigger_body())).id for _ in range(5)]
    assert [r.id async for r in client.list(page_size=2)] == made[::-1]
    assert [r.id async for r in client.list(page_size=2, limit=3)] == made[::-1][:3]
    await client.cancel(made[0])
    assert [r.id async for r in client.list(status="cancelling")] == [made[0]]
    run = made[1]
    ((step_id, _),) = await gw.pool.fetch(SQL.step_ids, UUID(run))
    for seq in range(5):
        status = "failed" if seq % 2 else "passed"
        await gw.pool.execute(
            SQL.insert_result, UUID(run), step_id, 1, seq, f"t{seq}", status, 1.0, None, None
        )
    results = [r async for r in client.test_results(run, str(step_id), page_size=2)]
    assert [r.name for r in results] == ["t0", "t1", "t2", "t3", "t4"]
    assert all(isinstance(r, TestResult) for r in results)
    failed = [r.name async for r in client.test_results(run, str(step_id), status="failed")]
    assert failed == ["t1", "t3"]


async def test_errors_are_typed_and_carry_the_problem(gw: Gateway, client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        await client.get(str(uuid4()))
    assert missing.value.status == 404 and missing.value.code == "not_found"
    assert missing.value.request_id and missing.value.problem.type
    bad = trigger_body("train")
    bad["steps"][0]["depends_on"] = ["trian"]
    with pytest.raises(BadRequest) as invalid:
        await client.trigger(bad)
    assert invalid.value.code == "validation_error"
    assert invalid.value.problem.errors and invalid.value.problem.errors[0].pointer.startswith("/steps/0")
    await client.trigger(trigger_body("a"), idempotency_key="k-1")
    with pytest.raises(IdempotencyKeyReused):
        await client.trigger(trigger_body("b"), idempotency_key="k-1")
    async with Client(url_of(gw), gw.reader) as reader:
        with pytest.raises(Forbidden):
            await reader.trigger(trigger_body())
    async with Client(url_of(gw), "mr_nope") as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.get(str(uuid4()))
    assert "401 unauthorized" in str(refused.value)
    async with Client("http://127.0.0.1:1", gw.key, retry=Retry(attempts=2, backoff=0.01)) as nowhere:
        with pytest.raises(TransportError, match=re.escape("cannot reach the API at http://127.0.0.1:1")):
            await nowhere.get("x")


async def test_429_is_retried_after_retry_after(db_url: str, pool: asyncpg.Pool) -> None:
    settings = broker_down_settings(db_url, rate_limit_per_second=1.0, rate_limit_burst=1)
    async with running_gateway(settings, pool) as gw:
        retries = Retries()
        async with Client(url_of(gw), gw.key, retry=QUICK, on_retry=retries) as client:
            run = await client.trigger(trigger_body())
            started = time.monotonic()
            assert (await client.get(run.id)).id == run.id
            assert time.monotonic() - started >= 0.9  # the gateway's Retry-After: 1
        assert [type(e) for e in retries.errors] == [RateLimited]
        assert isinstance(retries.errors[0], RateLimited) and retries.errors[0].retry_after == 1.0
        async with Client(url_of(gw), gw.key, retry=Retry(attempts=1)) as impatient:
            with pytest.raises(RateLimited) as limited:
                await impatient.get(run.id)
        assert limited.value.code == "rate_limited" and limited.value.retry_after == 1.0


async def test_503_is_retried_until_the_gateway_recovers(db_url: str, pool: asyncpg.Pool) -> None:
    proxy, proxied = await in_front_of(db_url, 5432)
    port = proxy.port
    async with running_gateway(broker_down_settings(proxied, api_key_cache_seconds=0), pool) as gw:
        retries = Retries()
        patient = Retry(attempts=150, backoff=0.05, max_backoff=0.2)
        async with Client(url_of(gw), gw.key, retry=patient, on_retry=retries) as client:
            run = await client.trigger(trigger_body())
            await proxy.stop()
            async with Client(url_of(gw), gw.key, retry=Retry(attempts=2, backoff=0.01)) as brief:
                with pytest.raises(ServiceUnavailable) as unavailable:
                    await brief.get(run.id)
            assert unavailable.value.code == "unavailable" and unavailable.value.retry_after == 1.0

            async def restore() -> None:
                await retries.seen.wait()
                proxy.port = port
                await proxy.start()

            restoring = asyncio.create_task(restore())
            try:
                assert (await client.get(run.id)).id == run.id
            finally:
                await restoring
                await proxy.stop()
        assert retries.errors and all(isinstance(e, ServiceUnavailable) for e in retries.errors)


async def test_a_trigger_whose_answer_is_lost_makes_one_run(gw: Gateway) -> None:
    gateway_port = gw.client.port
    assert gateway_port is not None
    proxy = TcpProxy("127.0.0.1", gateway_port)
    port = await proxy.start()
    try:
        retries = Retries()
        async with Client(f"http://127.0.0.1:{port}", gw.key, retry=QUICK, on_retry=retries) as client:
            proxy.cut_replies = 1
            run = await client.trigger(trigger_body("train"))
        assert [type(e) for e in retries.errors] == [TransportError]
        assert await gw.pool.fetchval(SQL.count_runs, TENANT) == 1
        assert (await gw.get(f"/model-runs/{run.id}")).status == 200
    finally:
        await proxy.stop()


async def test_events_resume_after_a_cut_without_a_gap_or_a_repeat(gw: Gateway) -> None:
    gateway_port = gw.client.port
    assert gateway_port is not None
    proxy = TcpProxy("127.0.0.1", gateway_port)
    port = await proxy.start()
    retries = Retries()
    try:
        async with Client(f"http://127.0.0.1:{port}", gw.key, retry=QUICK, on_retry=retries) as client:
            run = await client.trigger(trigger_body())
            await append(gw, run.id, "modelruns.run.started")
            seen: list[RunEvent] = []
            async with contextlib.aclosing(client.events(run.id)) as events:
                async for event in events:
                    seen.append(event)
                    if event.runseq == 2:
                        # Cut the stream and bring the service back: the client reopens it.
                        await proxy.stop()
                        proxy.port = port
                        await proxy.start()
                        await append(gw, run.id, "modelruns.step.started")
                        await append(gw, run.id, "modelruns.run.succeeded", "succeeded")
        assert [e.runseq for e in seen] == [1, 2, 3, 4]
        assert [e.type for e in seen][-1] == "modelruns.run.succeeded" and seen[-1].terminal
        assert seen[0].entity == "run" and seen[0].action == "queued" and seen[0].run_id == run.id
        assert isinstance(seen[0].resource(), Run)
        assert retries.errors, "the stream was reopened"
    finally:
        await proxy.stop()


async def test_a_silent_stream_is_reopened(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_view, "KEEPALIVE_SECONDS", 3600.0)
    retries = Retries()
    async with Client(url_of(gw), gw.key, retry=QUICK, stream_idle_timeout=0.3, on_retry=retries) as client:
        run = await client.trigger(trigger_body())
        types: list[str] = []

        async def finish() -> None:
            await retries.seen.wait()
            await append(gw, run.id, "modelruns.run.cancelled", "cancelled")

        finishing = asyncio.create_task(finish())
        async for event in client.events(run.id):
            types.append(event.type)
        await finishing
    assert types == ["modelruns.run.queued", "modelruns.run.cancelled"]
    assert isinstance(retries.errors[0], TransportError)


async def test_events_after_the_end_and_wait(gw: Gateway, client: Client) -> None:
    run = await client.trigger(trigger_body())
    last = await append(gw, run.id, "modelruns.run.failed", "failed")
    # Resumed after the terminal event: nothing more comes, and the iterator ends.
    assert [e async for e in client.events(run.id, last_event_id=last)] == []
    assert [e.runseq async for e in client.events(run.id, last_event_id=1)] == [2]
    other = await client.trigger(trigger_body())
    waiting = asyncio.create_task(client.wait(other.id, timeout=30))
    await append(gw, other.id, "modelruns.run.started")
    await append(gw, other.id, "modelruns.run.succeeded", "succeeded")
    assert (await waiting).status == "succeeded"
    with pytest.raises(TimeoutError):
        await client.wait((await client.trigger(trigger_body())).id, timeout=0.3)
    with pytest.raises(NotFound):
        await client.wait(str(uuid4()))


def use_synchronously(url: str, key: str) -> None:
    with SyncClient(url, key, retry=QUICK) as client:
        run = client.trigger(trigger_body("train"))
        assert [r.id for r in client.list(page_size=1)] == [run.id]
        assert client.get(run.id) == run
        stream = client.events(run.id)
        assert next(stream).type == "modelruns.run.queued"
        stream.close()  # leaving early closes the stream
        with pytest.raises(NotFound):
            client.get(str(uuid4()))


async def test_the_sync_client(gw: Gateway) -> None:
    # The gateway serves on this loop: the blocking client runs in a thread.
    await asyncio.wait_for(asyncio.to_thread(use_synchronously, url_of(gw), gw.key), 30)
