"""Torture run: many runs through the real services while workers and orchestrators are killed
with SIGKILL every few seconds and the broker is restarted once; then every invariant is counted.

    python -m bench.faults [--runs 1000] [--seed 1] [--rate 8]

It starts its own RabbitMQ node and Postgres cluster (as the fault suite does), never the machine's,
and removes them at the end. Printed: runs lost (acknowledged, then unknown), stuck (not terminal
when the load has drained), duplicated (a second accepted worker for an attempt, a test result
stored or published twice, a runseq under two event ids), illegal (a transition the state machines
forbid), gaps (an event missing from the log or from the subscriber), and recovery times:

- worker killed: from the kill until each step it was running runs again elsewhere (or ended);
- orchestrator killed: from the kill until the next run ends;
- broker restarted: from the broker's return until the next run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import orjson

from shared.db import migrate
from tests.e2e.conftest import Api, create_key
from tests.faults import invariants
from tests.faults.cluster import Cluster, Service, base_env
from tests.faults.instances import PrivatePostgres, PrivateRabbitMQ, private_root

ORCHESTRATORS = ("o1", "o2", "o3")
WORKERS = ("w1", "w2", "w3", "w4")
BROKER_OUTAGE_SECONDS = 5.0
DRAIN_TIMEOUT = 300.0


def run_body(rng: random.Random, index: int) -> dict[str, Any]:
    tests = [{"name": f"check-{n}", "status": "passed"} for n in range(3)]
    return {
        "model": {"name": "torture", "version": str(index)},
        "steps": [
            {
                "name": "prepare",
                "kind": "synthetic",
                "params": {"duration_seconds": round(rng.uniform(0.05, 0.3), 2)},
                "max_attempts": 3,
            },
            {
                "name": "train",
                "kind": "synthetic",
                "depends_on": ["prepare"],
                "params": {"duration_seconds": round(rng.uniform(0.2, 1.0), 2), "results": tests},
                "max_attempts": 3,
            },
            {
                "name": "evaluate",
                "kind": "synthetic",
                "depends_on": ["train"],
                "params": {"fail_attempts": 1 if index % 10 == 0 else 0},
                "max_attempts": 3,
            },
        ],
    }


@dataclass
class Fault:
    at: float
    kind: str  # worker | orchestrator | broker
    victim: str
    # Worker kills: (step id, attempt) it was running, until each runs again or ends.
    affected: dict[UUID, int] = field(default_factory=dict)
    recovered: list[float] = field(default_factory=list)
    progress_at: float | None = None


@dataclass
class Torture:
    cluster: Cluster
    rabbitmq: PrivateRabbitMQ
    api: Api
    subscriber: invariants.Subscriber
    rng: random.Random
    runs: int
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0
    faults: list[Fault] = field(default_factory=list)
    done_triggering: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    restarting: set[str] = field(default_factory=set)
    terminal: int = 0
    finished_at: list[float] = field(default_factory=list)

    async def trigger(self, rate: float, clients: int = 4) -> None:
        """Triggers at `rate` runs a second, so that the faults land throughout the load."""
        indexes = iter(range(self.runs))
        begin = time.monotonic()

        async def client() -> None:
            for index in indexes:
                await asyncio.sleep(max(0.0, begin + index / rate - time.monotonic()))
                while True:
                    try:
                        status, run = await self.api.call("POST", "/model-runs", run_body(self.rng, index))
                    except (aiohttp.ClientError, TimeoutError):
                        status, run = 0, None
                    if status == 201:
                        self.acknowledged.append(run["id"])
                        break
                    self.refused += 1
                    await asyncio.sleep(0.2)

        await asyncio.gather(*(client() for _ in range(clients)))
        self.done_triggering.set()

    async def chaos(self, conn: asyncpg.Connection) -> None:
        broker_after = self.runs * 0.4
        broker_done = False
        restarts: list[asyncio.Task[None]] = []
        while not self.done_triggering.is_set():
            await asyncio.sleep(self.rng.uniform(2.0, 5.0))
            if self.done_triggering.is_set():
                break
            if not broker_done and len(self.acknowledged) >= broker_after:
                broker_done = True
                await self.broker_restart()
                continue
            # Two worker kills for one orchestrator kill, among those running now.
            kind = self.rng.choice(("worker", "worker", "orchestrator"))
            names = [
                n
                for n in (WORKERS if kind == "worker" else ORCHESTRATORS)
                if self.cluster[n].alive() and n not in self.restarting
            ]
            if not names:
                continue
            victim = self.cluster[self.rng.choice(names)]
            fault = Fault(time.monotonic(), kind, victim.name)
            if kind == "worker":
                rows = await conn.fetch(
                    "SELECT id, attempt FROM steps WHERE status = 'running' AND worker_id = $1", victim.name
                )
                fault.affected = {row["id"]: row["attempt"] for row in rows}
            victim.kill()
            self.restarting.add(victim.name)
            self.faults.append(fault)
            restarts.append(asyncio.create_task(self.restart(victim, self.rng.uniform(0.5, 3.0))))
        await asyncio.gather(*restarts)

    async def restart(self, service: Service, after: float) -> None:
        await asyncio.sleep(after)
        await asyncio.to_thread(service.start)
        await asyncio.to_thread(service.wait_ready, 120)
        self.restarting.discard(service.name)

    async def broker_restart(self) -> None:
        await asyncio.to_thread(self.rabbitmq.stop_app)
        await asyncio.sleep(BROKER_OUTAGE_SECONDS)
        await asyncio.to_thread(self.rabbitmq.start_app)
        self.faults.append(Fault(time.monotonic(), "broker", "rabbitmq"))

    async def monitor(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.monotonic()
            terminal = await conn.fetchval(
                "SELECT count(*) FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')"
            )
            if terminal > self.terminal:
                self.terminal = terminal
                self.finished_at.append(now)
                if self.done_triggering.is_set() and terminal >= len(self.acknowledged):
                    self.drained.set()
                for fault in self.faults:
                    if fault.kind != "worker" and fault.progress_at is None and now > fault.at:
                        fault.progress_at = now
            pending = [f for f in self.faults if f.affected]
            if pending:
                ids = [step for f in pending for step in f.affected]
                rows = {
                    row["id"]: row
                    for row in await conn.fetch(
                        "SELECT id, attempt, status FROM steps WHERE id = ANY($1::uuid[])", ids
                    )
                }
                for fault in pending:
                    for step, attempt in list(fault.affected.items()):
                        row = rows[step]
                        moved = row["attempt"] > attempt and str(row["status"]) != "queued"
                        if moved or str(row["status"]) in ("succeeded", "failed", "cancelled"):
                            fault.recovered.append(now - fault.at)
                            del fault.affected[step]
            await asyncio.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:<34} n=0"
    return (
        f"  {name:<34} n={len(values):<4} p50={percentile(values, 50):6.2f}s "
        f"p99={percentile(values, 99):6.2f}s max={max(values):6.2f}s"
    )


async def torture(runs: int, seed: int, rate: float) -> int:
    rabbitmq = PrivateRabbitMQ(private_root("rabbitmq"))
    postgres = PrivatePostgres(private_root("postgres"))
    cluster: Cluster | None = None
    try:
        await asyncio.to_thread(rabbitmq.create)
        await asyncio.to_thread(postgres.create)
        db_url = postgres.admin_url.rsplit("/", 1)[0] + "/modelruns_torture"
        await migrate.upgrade(db_url)
        amqp_url = await asyncio.to_thread(rabbitmq.add_vhost)
        await invariants.bind_subscriber(amqp_url)
        cluster = Cluster(db_url, amqp_url, private_root("logs"), base_env(db_url, amqp_url))
        cluster.add_gateway()
        for name in ORCHESTRATORS:
            cluster.add_orchestrator(name)
        for name in WORKERS:
            cluster.add_worker(name, concurrency=8)
        await asyncio.to_thread(cluster.start)
        key = await asyncio.to_thread(create_key, cluster.env, "acme", "runs:read", "runs:write")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            api = Api(session, cluster.url, key)
            state = Torture(
                cluster, rabbitmq, api, invariants.Subscriber(amqp_url), random.Random(seed), runs
            )
            conn = await asyncpg.connect(db_url)
            stop = asyncio.Event()
            started = time.monotonic()
            watching = asyncio.create_task(state.monitor(conn, stop))
            chaos_conn = await asyncpg.connect(db_url)
            try:
                await asyncio.gather(state.trigger(rate), state.chaos(chaos_conn))
                triggered = time.monotonic() - started
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.drained.wait(), DRAIN_TIMEOUT)
                drained = time.monotonic() - started
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                await watching
                await conn.close()
                await chaos_conn.close()
            found = await invariants.audit(api, db_url, state.subscriber, state.acknowledged, timeout=30)
            await invariants.outbox_drains(db_url, timeout=30)
        statuses: dict[str, int] = {}
        for run in found.runs.values():
            statuses[run["status"]] = statuses.get(run["status"], 0) + 1
        kills = [f for f in state.faults if f.kind != "broker"]
        unrecovered = sum(len(f.affected) for f in state.faults)
        print(
            f"torture run: {runs} runs at {rate:g}/s, seed {seed}, {len(ORCHESTRATORS)} orchestrators, {len(WORKERS)} workers"
        )
        print(
            f"  acknowledged {len(state.acknowledged)} (refused attempts {state.refused}), "
            f"triggered in {triggered:.1f}s, all terminal after {drained:.1f}s: {statuses}"
        )
        print(
            f"  faults: {sum(f.kind == 'worker' for f in kills)} worker kills, "
            f"{sum(f.kind == 'orchestrator' for f in kills)} orchestrator kills, "
            f"{sum(f.kind == 'broker' for f in state.faults)} broker restart "
            f"({BROKER_OUTAGE_SECONDS:.0f}s down)"
        )
        print(
            f"  lost={len(found.lost)} stuck={len(found.stuck)} duplicated={len(found.duplicated)} "
            f"illegal={len(found.illegal)} gaps={len(found.gaps)} unrecovered steps={unrecovered}"
        )
        print(
            f"  events on the subscriber: {len(state.subscriber.events)} ({state.subscriber.deliveries} deliveries)"
        )
        print("recovery (fault -> progress):")
        print(summary("worker kill -> its steps run again", [t for f in state.faults for t in f.recovered]))
        print(
            summary(
                "orchestrator kill -> next run ends",
                [f.progress_at - f.at for f in state.faults if f.kind == "orchestrator" and f.progress_at],
            )
        )
        print(
            summary(
                "broker back -> next run ends",
                [f.progress_at - f.at for f in state.faults if f.kind == "broker" and f.progress_at],
            )
        )
        for kind, problems in found.problems().items():
            print(f"{kind}: {problems[:10]}")
        print(
            orjson.dumps(
                {
                    "runs": runs,
                    "acknowledged": len(state.acknowledged),
                    "lost": len(found.lost),
                    "stuck": len(found.stuck),
                    "duplicated": len(found.duplicated),
                    "illegal": len(found.illegal),
                    "gaps": len(found.gaps),
                    "statuses": statuses,
                    "seconds": round(drained, 1),
                }
            ).decode()
        )
        return 1 if found.problems() or unrecovered else 0
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
            print(f"service logs: {cluster.log_dir}", file=sys.stderr)
        await asyncio.to_thread(rabbitmq.remove)
        await asyncio.to_thread(postgres.remove)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=8.0, help="runs triggered per second")
    args = parser.parse_args(argv)
    return asyncio.run(torture(args.runs, args.seed, args.rate))


if __name__ == "__main__":
    sys.exit(main())
