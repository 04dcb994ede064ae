"""The machine's own limits, measured in the same run as everything else: what Postgres, RabbitMQ
and aiohttp can do here with nothing of modelruns in the way."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aio_pika
import asyncpg

from bench import results
from bench.context import load, say, versions
from bench.stack import WORK, free_port, modelruns, modelruns_env, services
from bench.stats import parse_wrk

HERE = Path(__file__).resolve().parent
# W3 compares against the hello-world figure of the same run.
HELLO: dict[str, float] = {}
PGBENCH_SECONDS = 10
PGBENCH_CLIENTS = 8
WRK_SECONDS = 5

# One step transition, a statement for each of its writes: the lock and read of the run and its
# steps (orchestrator/queries.sql: lock_runs, runs_steps), the step and run updates, the event and
# the outbox row (which write_changes makes one statement for a whole batch), then the outbox
# publisher's claim and delete of that message. The run and step are picked at random.
STEP_TRANSITION = """\
\\set n random(1, :runs)
SELECT run_id, step_id FROM bench_ids WHERE n = :n \\gset
BEGIN;
SELECT id, tenant_id, status, model, labels, parameters, fail_fast, step_counts, test_counts, last_runseq, error, created_at, started_at, finished_at, cancel_requested_at FROM runs WHERE id = :run_id FOR UPDATE;
SELECT * FROM steps WHERE run_id = :run_id ORDER BY position;
UPDATE steps SET status = 'running', worker_id = 'bench', started_at = now(), lease_expires_at = now() + interval '30 s' WHERE id = :step_id AND status = ANY('{queued,running}'::step_status[]) RETURNING id;
UPDATE runs SET status = 'running', step_counts = step_counts, last_runseq = last_runseq + 1, updated_at = now() WHERE id = :run_id AND status = ANY('{queued,running}'::run_status[]) RETURNING last_runseq \\gset
INSERT INTO run_events (run_id, runseq, event_id, type, body) VALUES (:run_id, :last_runseq, gen_random_uuid(), 'modelruns.step.started', '{"specversion": "1.0", "type": "modelruns.step.started", "data": {"status": "running"}}');
INSERT INTO outbox (exchange, routing_key, body, content_type, message_id, mandatory) VALUES ('modelruns.results', 'bench.step.started', '\\x7b7d', 'application/cloudevents+json', gen_random_uuid()::text, false);
COMMIT;
BEGIN;
DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE available_at <= now() ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED);
COMMIT;
"""


async def seed_runs(db_url: str, runs: int) -> None:
    """`runs` runs of one step each, and a table numbering them for pgbench to pick from."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("INSERT INTO tenants (id) VALUES ('bench') ON CONFLICT DO NOTHING")
        ids = [(uuid.uuid4(), uuid.uuid4()) for _ in range(runs)]
        counts = json.dumps({"total": 1, "pending": 0, "queued": 0, "running": 1})
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
                "created_at",
            ],
            records=[
                (r, "bench", "queued", '{"name": "bench"}', "{}", "{}", False, counts, "{}", time_now())
                for r, _ in ids
            ],
        )
        await conn.copy_records_to_table(
            "steps",
            columns=[
                "id",
                "run_id",
                "position",
                "name",
                "kind",
                "params",
                "depends_on",
                "pool",
                "status",
                "max_attempts",
                "timeout_seconds",
                "allow_test_failures",
                "test_counts",
                "created_at",
            ],
            records=[
                (s, r, 0, "s0", "synthetic", "{}", [], "default", "queued", 1, 3600, False, "{}", time_now())
                for r, s in ids
            ],
        )
        await conn.execute(
            "CREATE TABLE bench_ids (n integer PRIMARY KEY, run_id uuid NOT NULL, step_id uuid NOT NULL)"
        )
        await conn.copy_records_to_table("bench_ids", records=[(i + 1, r, s) for i, (r, s) in enumerate(ids)])
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def time_now() -> object:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def pgbench(db_url: str, runs: int) -> float:
    script = WORK / "step_transition.sql"
    WORK.mkdir(exist_ok=True)
    script.write_text(STEP_TRANSITION)
    done = subprocess.run(
        [
            "pgbench",
            "-n",
            "-M",
            "prepared",
            "-c",
            str(PGBENCH_CLIENTS),
            "-j",
            "2",
            "-T",
            str(PGBENCH_SECONDS),
            "-D",
            f"runs={runs}",
            "-f",
            str(script),
            db_url,
        ],
        capture_output=True,
        text=True,
        timeout=PGBENCH_SECONDS * 6,
        check=False,
    )
    found = re.search(r"tps = (\d+(?:\.\d+)?)", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
    return float(found.group(1))


async def asyncpg_loop(db_url: str, rows: int) -> dict[str, float]:
    conn = await asyncpg.connect(db_url)
    figures: dict[str, float] = {}
    try:
        await conn.execute("CREATE TABLE bench_rows (id bigint PRIMARY KEY, body jsonb NOT NULL)")
        single = max(100, rows // 10)
        insert = await conn.prepare("INSERT INTO bench_rows (id, body) VALUES ($1, $2)")
        started = time.perf_counter()
        for i in range(single):
            async with conn.transaction():
                await insert.fetch(i, '{"status": "running"}')
        figures["single-row transactions/s"] = single / (time.perf_counter() - started)
        started = time.perf_counter()
        await conn.executemany(
            "INSERT INTO bench_rows (id, body) VALUES ($1, $2)",
            [(single + i, '{"status": "running"}') for i in range(rows)],
        )
        figures["executemany rows/s"] = rows / (time.perf_counter() - started)
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "bench_rows", records=[(single + rows + i, '{"status": "running"}') for i in range(rows)]
        )
        figures["COPY rows/s"] = rows / (time.perf_counter() - started)
    finally:
        await conn.close()
    return figures


async def amqp_loop(amqp_url: str, messages: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue("bench", durable=True, arguments={"x-queue-type": "quorum"})
        body = b'{"v": 1, "type": "started", "run_id": "00000000-0000-0000-0000-000000000000"}'

        def message() -> aio_pika.Message:
            return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

        one_by_one = max(100, messages // 10)
        started = time.perf_counter()
        for _ in range(one_by_one):
            await channel.default_exchange.publish(message(), "bench")
        figures["publish, confirm awaited each/s"] = one_by_one / (time.perf_counter() - started)
        started = time.perf_counter()
        window = 500
        for at in range(0, messages, window):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(message(), "bench")
                    for _ in range(min(window, messages - at))
                )
            )
        figures["publish, 500 confirms in flight/s"] = messages / (time.perf_counter() - started)
        total = one_by_one + messages
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=200)
        got = 0
        finished = asyncio.get_running_loop().create_future()

        async def on_message(incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            await incoming.ack()
            got += 1
            if got == total and not finished.done():
                finished.set_result(None)

        started = time.perf_counter()
        queue_on_consumer = await consumer.get_queue("bench")
        await queue_on_consumer.consume(on_message)
        await asyncio.wait_for(finished, timeout=300)
        figures["consume + ack, prefetch 200/s"] = total / (time.perf_counter() - started)
    finally:
        await connection.close()
    return figures


def wrk(
    url: str, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> tuple[float, dict[float, float], int]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(done.stdout)


CONNECTIONS = (1, 2, 4, 8, 16, 32)


def best_within(
    url: str, seconds: float, p99_bound: float, headers: dict[str, str] | None = None
) -> tuple[float, float, int, float]:
    """The most requests/s any connection count reaches with p99 within `p99_bound` (and with no
    bad answers): (req/s, its p99, its connections, the most req/s seen at any p99)."""
    best = (0.0, float("nan"), 0)
    peak = 0.0
    for connections in CONNECTIONS:
        rps, latency, bad = wrk(url, connections, seconds, headers)
        if bad:
            raise RuntimeError(f"{bad} bad answers from {url}")
        peak = max(peak, rps)
        p99 = latency.get(99.0, float("inf"))
        if p99 <= p99_bound and rps > best[0]:
            best = (rps, p99, connections)
        if p99 > 4 * p99_bound:
            break
    return (*best, peak)


def ceiling(seconds: float, *args: str, path: str = "/") -> tuple[float, float, int, float]:
    """`best_within` against bench/hello.py started with `args` (see there)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{path}"
    server = subprocess.Popen([sys.executable, str(HERE / "hello.py"), str(port), *args])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                subprocess.run(
                    ["wrk", "-t1", "-c1", "-d1s", url], capture_output=True, check=True, timeout=30
                )
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return best_within(url, seconds, 0.010)
    finally:
        server.terminate()
        server.wait(timeout=10)


def hello_world(seconds: float) -> tuple[float, float, int, float]:
    return ceiling(seconds)


def bare_get_run(
    seconds: float, database_url: str, run_id: str, tenant: str
) -> tuple[float, float, int, float]:
    """GET run without the gateway's layers: the same statement, pool and rendering."""
    return ceiling(seconds, database_url, run_id, tenant, path="/run")


async def all_limits(size: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with services("limits") as svc:
        env = modelruns_env(svc)
        modelruns(env, "db", "upgrade")
        await seed_runs(svc.db_url, max(1000, size // 4))
        figures["pgbench step transitions/s"] = pgbench(svc.db_url, max(1000, size // 4))
        say(
            f"limits: pgbench, one step transition as the orchestrator writes it: {figures['pgbench step transitions/s']:.0f}/s ({PGBENCH_CLIENTS} clients)"
        )
        figures.update(await asyncpg_loop(svc.db_url, size))
        figures.update(await amqp_loop(svc.amqp_url, size))
    rps, p99, connections, peak = hello_world(WRK_SECONDS)
    figures["hello-world req/s at p99 ≤ 10 ms"] = rps
    figures["hello-world peak req/s"] = peak
    for name, value in figures.items():
        say(f"limits: {name}: {value:,.0f}")
    results.record(
        "Limits",
        {
            **{name: f"{value:,.0f}" for name, value in figures.items()},
            "settings": f"pgbench -c {PGBENCH_CLIENTS} -T {PGBENCH_SECONDS}; {size:,} rows/messages; wrk -t1, best of -c {CONNECTIONS} (hello-world best at -c {connections}, p99 {p99 * 1000:.1f} ms)",
            "load": load(),
            "versions": versions(),
        },
    )
    HELLO["rps"] = rps
    return figures
