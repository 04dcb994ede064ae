"""Reads: W3, one gateway process's GETs under load beside hello-world; W4, list pages deep
into a million runs, and the plans Postgres chose for them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from bench import results
from bench.context import load, progress, say, versions
from bench.limits import HELLO, bare_get_run, best_within, hello_world
from bench.stack import Stack, chain_body, stack, trigger_many, wait_terminal
from bench.stats import ms, percentile

P99_BOUND = 0.010


async def w3(seconds: float) -> None:
    async with stack("w3") as s, aiohttp.ClientSession() as session:
        sent = await trigger_many(session, s, chain_body(5, results=20), 50)
        await wait_terminal(s.pool, len(sent), timeout=120)
        run_id = next(iter(sent))
        step_id = await s.pool.fetchval(
            "SELECT id::text FROM steps WHERE run_id = $1 AND position = 0", uuid.UUID(run_id)
        )
        paths = {
            "GET run": f"/model-runs/{run_id}",
            "list (20 a page)": "/model-runs?max_results=20",
            "steps (5)": f"/model-runs/{run_id}/steps",
            "test results (20)": f"/model-runs/{run_id}/steps/{step_id}/test-results",
        }
        figures: dict[str, tuple[float, float, int, float]] = {}
        for name, path in paths.items():
            figures[name] = await asyncio.to_thread(
                best_within, s.url + path, seconds, P99_BOUND, s.headers()
            )
            rps, p99, connections, peak = figures[name]
            say(
                f"W3 {name}: {rps:,.0f} req/s at p99 {p99 * 1000:.1f} ms (-c {connections}); peak {peak:,.0f} req/s"
            )
        # The same read without the gateway's layers, on the same database while the stack is up.
        bare, bare_p99, bare_c, _ = await asyncio.to_thread(
            bare_get_run, seconds, s.svc.db_url, run_id, "bench"
        )
        say(
            f"W3 bare GET run (the gateway's query alone): {bare:,.0f} req/s at p99 {bare_p99 * 1000:.1f} ms (-c {bare_c})"
        )
    # The figure of this run's limits, or measured now when they did not run.
    hello = HELLO.get("rps") or (await asyncio.to_thread(hello_world, seconds))[0]
    share = figures["GET run"][0] / hello
    say(
        f"W3 GET run is {share:.0%} of hello-world ({hello:,.0f} req/s) and {figures['GET run'][0] / bare:.0%} of the bare GET run"
    )
    results.record(
        "W3 reads",
        {
            **{
                f"{name} req/s at p99 ≤ 10 ms"
                + (" (≥ 5,000)" if name == "GET run" else ""): f"{rps:,.0f} (-c {c})"
                for name, (rps, _, c, _) in figures.items()
            },
            "GET run / hello-world (≥ 40 %)": f"{share:.0%} of {hello:,.0f}",
            "bare GET run req/s at p99 ≤ 10 ms": f"{bare:,.0f} (-c {bare_c})",
            "GET run / bare": f"{figures['GET run'][0] / bare:.0%}",
            "settings": f"one gateway process, wrk -t1 for {seconds:.0f} s a point",
            "load": load(),
            "versions": versions(),
        },
    )


async def seed(pool: asyncpg.Pool, tenant: str, runs: int) -> None:
    """`runs` finished runs (90 % succeeded, 7 % failed, 3 % cancelled), one a second back in time, by COPY."""
    step_counts = json.dumps(
        {
            "total": 1,
            "pending": 0,
            "queued": 0,
            "running": 0,
            "succeeded": 1,
            "failed": 0,
            "cancelled": 0,
            "skipped": 0,
        }
    )
    test_counts = json.dumps({"total": 1, "passed": 1, "failed": 0, "skipped": 0, "error": 0})
    model = json.dumps({"name": "bench", "version": "1"})
    now = datetime.now(UTC) - timedelta(seconds=runs + 60)
    chunk = 50_000
    with progress(f"W4 seeding {runs:,} runs by COPY", runs) as show:
        async with pool.acquire() as conn:
            for at in range(0, runs, chunk):
                records = []
                for i in range(at, min(runs, at + chunk)):
                    status = "succeeded" if i % 100 < 90 else "failed" if i % 100 < 97 else "cancelled"
                    created = now + timedelta(seconds=i)
                    records.append(
                        (
                            uuid.uuid4(),
                            tenant,
                            status,
                            model,
                            "{}",
                            "{}",
                            False,
                            step_counts,
                            test_counts,
                            5,
                            created,
                            created,
                            created + timedelta(seconds=1),
                            created,
                        )
                    )
                await conn.copy_records_to_table(
                    "runs",
                    columns=[
                        "id",
                        "tenant_id",
                        "status",
                        "model",
                        "labels",
                        "parameters",
                        "fail_fast",
                        "step_counts",
                        "test_counts",
                        "last_runseq",
                        "created_at",
                        "started_at",
                        "finished_at",
                        "updated_at",
                    ],
                    records=records,
                )
                show(min(runs, at + chunk))
            await conn.execute("VACUUM ANALYZE runs")


async def page_times(
    session: aiohttp.ClientSession, s: Stack, depths: list[int], status: str | None, repeat: int
) -> tuple[dict[int, float], dict[int, Any]]:
    """The median time of a 100-run page at each depth, walking there with 1,000-run pages;
    and the keyset cursor (created_at, id) each measured page starts after."""
    query = f"&status={status}" if status else ""
    medians: dict[int, float] = {}
    cursors: dict[int, Any] = {}
    token: str | None = None
    depth = 0
    for target in sorted(depths):
        while depth < target:
            size = min(1000, target - depth)
            async with session.get(
                f"{s.url}/model-runs?max_results={size}{query}" + (f"&page_token={token}" if token else ""),
                headers=s.headers(),
            ) as response:
                body = await response.json()
                assert response.status == 200, body
            token = body["next_page_token"]
            cursors[target] = body["model_runs"][-1]
            depth += size
        url = f"{s.url}/model-runs?max_results=100{query}" + (f"&page_token={token}" if token else "")
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            async with session.get(url, headers=s.headers()) as response:
                await response.read()
                assert response.status == 200
            times.append(time.perf_counter() - started)
        medians[target] = percentile(times, 50)
    return medians, cursors


async def plan(pool: asyncpg.Pool, tenant: str, cursor: dict[str, Any] | None, status: str | None) -> str:
    """EXPLAIN ANALYZE of the gateway's own list statement for that page (gateway/queries.sql)."""
    from gateway.repository import Q

    if cursor is None:
        sql, args = (
            (Q.list_runs_status_first, [tenant, 101, status])
            if status
            else (Q.list_runs_first, [tenant, 101])
        )
    else:
        at = datetime.fromisoformat(cursor["created_at"].replace("Z", "+00:00"))
        key = uuid.UUID(cursor["id"])
        sql, args = (
            (Q.list_runs_status_after, [tenant, 101, status, at, key])
            if status
            else (Q.list_runs_after, [tenant, 101, at, key])
        )
    rows = await pool.fetch("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, *args)
    top = json.loads(rows[0][0])[0]["Plan"]
    node = top
    while node.get("Node Type") == "Limit" and node.get("Plans"):
        node = node["Plans"][0]
    return f"{node['Node Type']} on {node.get('Index Name', '?')}, {top.get('Actual Total Time', 0):.2f} ms, {top.get('Shared Hit Blocks', 0) + top.get('Shared Read Blocks', 0)} blocks"


async def w4(runs: int) -> None:
    depths = [0, min(10_000, runs // 10), min(100_000, runs // 2)]
    async with stack("w4") as s, aiohttp.ClientSession() as session:
        await seed(s.pool, "bench", runs)
        rows: dict[str, tuple[dict[int, float], list[str]]] = {}
        for status in (None, "succeeded"):
            medians, cursors = await page_times(session, s, depths, status, repeat=21)
            plans = [await plan(s.pool, "bench", cursors.get(d), status) for d in depths]
            rows[status or "none"] = (medians, plans)
            ratio = medians[depths[-1]] / medians[0]
            say(
                f"W4 status filter {status or 'none'}: page 1 {ms(medians[0])}, depth {depths[1]:,} {ms(medians[depths[1]])}, "
                f"depth {depths[2]:,} {ms(medians[depths[2]])} ({ratio:.2f}x page 1); plans: {' | '.join(plans)}"
            )
    for status, (medians, plans) in rows.items():
        results.record(
            "W4 depth",
            {
                "runs seeded": f"{runs:,}",
                "status filter": status,
                "page 1": ms(medians[depths[0]]),
                f"depth {depths[1]:,}": ms(medians[depths[1]]),
                f"depth {depths[2]:,}": ms(medians[depths[2]]),
                "deepest / page 1 (≤ 1.5x)": f"{medians[depths[2]] / medians[depths[0]]:.2f}x",
                "plans (page 1; deepest)": f"{plans[0]}; {plans[2]}",
                "settings": "100-run pages through the API, median of 21",
                "load": load(),
                "versions": versions(),
            },
        )
