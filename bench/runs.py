"""The run path under load: W1 burst, W2 open loop, W5 cancel, and memory over many runs."""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench import results
from bench.context import load, progress, say, versions
from bench.peers import MEASURED
from bench.profile import CpuSplit, profiling
from bench.stack import Stack, chain_body, stack, trigger, trigger_many, wait_terminal
from bench.stats import ms, percentile


@dataclass
class Burst:
    topology: str
    runs: int
    steps: int
    trigger_seconds: float
    drain_seconds: float
    p50: float
    p99: float
    failed: int
    # CPU seconds each process and service spent from the first trigger to the last run's end.
    cpu: dict[str, float]

    @property
    def steps_per_second(self) -> float:
        return self.runs * self.steps / self.drain_seconds

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.drain_seconds


async def burst(topology: str, runs: int, steps: int, profile: bool = False) -> Burst:
    async with stack(f"w1{topology}", topology=topology) as s, aiohttp.ClientSession() as session:
        body = chain_body(steps)
        spying = profiling(s.processes, f"w1-{topology}") if profile else nullcontext()
        split = CpuSplit(s.processes)
        with spying, progress(f"W1 {topology}: {runs} runs x {steps} steps", runs) as show:
            split.start()
            started = time.time()
            poll = asyncio.create_task(
                wait_terminal(s.pool, runs, timeout=60 + runs * steps / 20, progress=show)
            )
            sent = await trigger_many(session, s, body, runs)
            triggered = time.time() - started
            await poll
            cpu = split.stop()
        rows = await s.pool.fetch(
            "SELECT id::text, status::text, extract(epoch FROM finished_at) AS done FROM runs"
        )
        done = {r["id"]: float(r["done"]) for r in rows}
        latencies = [done[run_id] - at for run_id, at in sent.items()]
        drain = max(done.values()) - started
        failed = sum(1 for r in rows if r["status"] != "succeeded")
        return Burst(
            topology,
            runs,
            steps,
            triggered,
            drain,
            percentile(latencies, 50),
            percentile(latencies, 99),
            failed,
            cpu,
        )


def cpu_split(b: Burst) -> str:
    """Each process's CPU milliseconds a step, the busiest first, and the cores all of them kept
    busy on average over the drain."""
    total = b.runs * b.steps
    parts = sorted(b.cpu.items(), key=lambda kv: -kv[1])
    busy = sum(b.cpu.values()) / b.drain_seconds
    return (
        ", ".join(f"{role} {seconds * 1000 / total:.2f}" for role, seconds in parts)
        + f" ({busy:.2f} cores busy)"
    )


async def w1(runs: int, steps: int, topologies: list[str], profile: bool = False) -> list[Burst]:
    figures = []
    for topology in topologies:
        b = await burst(topology, runs, steps, profile)
        figures.append(b)
        best = max(MEASURED.items(), key=lambda kv: kv[1], default=None)
        versus = f"{b.steps_per_second / best[1]:.2f}x {best[0]}" if best else "n/a (no peer in this run)"
        say(
            f"W1 {topology}: {b.steps_per_second:.0f} steps/s, {b.runs_per_second:.0f} runs/s, drain "
            f"{b.drain_seconds:.1f} s (triggers took {b.trigger_seconds:.1f} s), trigger→done p50 {ms(b.p50)} "
            f"p99 {ms(b.p99)}, not succeeded {b.failed}"
        )
        say(f"W1 {topology} CPU a step: {cpu_split(b)}")
        results.record(
            "W1 burst",
            {
                "topology": "gateway + orchestrator + worker" if topology == "split" else "modelruns up",
                "runs x steps": f"{b.runs} x {b.steps}",
                "steps/s (≥ 1,000)": f"{b.steps_per_second:.0f}",
                "vs best peer (>= 3x)": versus,
                "runs/s": f"{b.runs_per_second:.0f}",
                "drain": f"{b.drain_seconds:.1f} s",
                "trigger→done p50 / p99": f"{ms(b.p50)} / {ms(b.p99)}",
                "not succeeded": b.failed,
                "CPU ms a step": cpu_split(b),
                "load": load() + (", profiled (py-spy)" if profile else ""),
                "versions": versions(),
            },
        )
    return figures


async def open_loop(
    s: Stack, session: aiohttp.ClientSession, rate: int, seconds: float, steps: int
) -> list[float]:
    """Triggers at a fixed rate whatever the answers do; latency from each intended send time to
    its run's first step running."""
    body = chain_body(steps)
    count = max(1, int(rate * seconds))
    start = time.time() + 0.2
    intended: dict[str, float] = {}

    async def one(i: int) -> None:
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - time.time()))
        run_id, _ = await trigger(session, s, body)
        intended[run_id] = at

    before = await s.pool.fetchval("SELECT count(*) FROM runs")
    with progress(f"W2 {rate} runs/s", count) as show:
        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        while not all(t.done() for t in tasks):
            show(sum(t.done() for t in tasks))
            await asyncio.sleep(0.2)
        await asyncio.gather(*tasks)
    await wait_terminal(s.pool, before + count, timeout=60 + count * steps / 20)
    rows = await s.pool.fetch(
        "SELECT run_id::text AS id, extract(epoch FROM started_at) AS started FROM steps "
        "WHERE position = 0 AND run_id = ANY($1::uuid[])",
        list(intended),
    )
    return [float(r["started"]) - intended[r["id"]] for r in rows]


async def w2(rates: list[int], seconds: float, steps: int) -> None:
    async with stack("w2") as s, aiohttp.ClientSession() as session:
        figures: list[tuple[int, float, float]] = []
        for rate in rates:
            latencies = await open_loop(s, session, rate, seconds, steps)
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            figures.append((rate, p50, p99))
            say(
                f"W2 {rate} runs/s for {seconds:.0f} s: trigger→first step running p50 {ms(p50)} p99 {ms(p99)}"
            )
    base = figures[0][2]
    # "Takes off": the first rate whose p99 is more than three times the lowest rate's.
    knee = next((rate for rate, _, p99 in figures if p99 > 3 * base), None)
    results.record(
        "W2 open loop",
        {
            "seconds per rate": f"{seconds:.0f}",
            **{f"{rate}/s p50 / p99": f"{ms(p50)} / {ms(p99)}" for rate, p50, p99 in figures},
            "p99 takes off at": f"{knee} runs/s" if knee else f"> {figures[-1][0]} runs/s",
            "load": load(),
            "versions": versions(),
        },
    )


async def w5(runs: int, steps: int) -> None:
    """`runs` in-flight runs (a long first step, the rest waiting) cancelled at once."""
    async with stack("w5") as s, aiohttp.ClientSession() as session:
        sent = await trigger_many(session, s, chain_body(steps, first_duration=120), runs)
        deadline = time.monotonic() + 60
        while True:
            flowing = await s.pool.fetchval(
                "SELECT count(*) FROM steps WHERE position = 0 AND status IN ('queued', 'running')"
            )
            running = await s.pool.fetchval("SELECT count(*) FROM steps WHERE status = 'running'")
            if flowing == runs and running >= min(runs, 8):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {flowing} runs in flight, {running} running")
            await asyncio.sleep(0.1)
        answered: dict[str, float] = {}

        async def cancel(run_id: str) -> None:
            async with session.post(f"{s.url}/model-runs/{run_id}/cancel", headers=s.headers()) as response:
                body: dict[str, Any] = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"cancel answered {response.status}: {body}")
            answered[run_id] = time.time()

        fired = time.time()
        await asyncio.gather(*(cancel(run_id) for run_id in sent))
        await wait_terminal(s.pool, runs, timeout=120)
        rows = await s.pool.fetch(
            "SELECT id::text, status::text, extract(epoch FROM finished_at) AS done FROM runs"
        )
        late = await s.pool.fetch(
            "SELECT run_id::text AS id, extract(epoch FROM started_at) AS started FROM steps WHERE started_at IS NOT NULL"
        )
    latencies = [max(0.0, float(r["done"]) - answered[r["id"]]) for r in rows]
    late_starts = sum(1 for r in late if float(r["started"]) > answered[r["id"]])
    not_cancelled = sum(1 for r in rows if r["status"] != "cancelled")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    say(
        f"W5 {runs} runs cancelled at once (answers took {max(answered.values()) - fired:.2f} s): cancel→cancelled "
        f"p50 {ms(p50)} p99 {ms(p99)}, late starts {late_starts}, not cancelled {not_cancelled}"
    )
    results.record(
        "W5 cancel",
        {
            "runs": runs,
            "cancel→cancelled p50 / p99 (p99 ≤ 2 s)": f"{ms(p50)} / {ms(p99)}",
            "late starts (0)": late_starts,
            "not cancelled": not_cancelled,
            "load": load(),
            "versions": versions(),
        },
    )


async def memory(first: int, second: int) -> None:
    """Orchestrator and worker RSS after `first` and after `second` finished one-step runs."""
    async with stack("mem") as s, aiohttp.ClientSession() as session:
        body = chain_body(1)
        marks: list[tuple[int, float, float]] = []
        done = 0
        for target in (first, second):
            with progress(f"memory: {target} runs", target) as show:
                show(done)
                poll = asyncio.create_task(
                    wait_terminal(s.pool, target, timeout=120 + target / 5, progress=show)
                )
                await trigger_many(session, s, body, target - done, in_flight=64)
                await poll
            done = target
            await asyncio.sleep(2)  # let the outbox and event handlers settle
            marks.append((target, s.processes["orchestrator"].rss_mb(), s.processes["worker"].rss_mb()))
            say(
                f"memory after {target} runs: orchestrator {marks[-1][1]:.0f} MB, worker {marks[-1][2]:.0f} MB"
            )
    (n1, o1, w1_), (n2, o2, w2_) = marks
    results.record(
        "Memory",
        {
            "runs (1 step each)": f"{n1} → {n2}",
            "orchestrator RSS": f"{o1:.0f} → {o2:.0f} MB",
            "orchestrator growth (≤ 20 MB)": f"{o2 - o1:+.0f} MB",
            "worker RSS": f"{w1_:.0f} → {w2_:.0f} MB",
            "worker growth": f"{w2_ - w1_:+.0f} MB",
            "load": load(),
            "versions": versions(),
        },
    )
