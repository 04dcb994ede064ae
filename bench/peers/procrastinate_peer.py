"""procrastinate: Postgres only; each job defers the next step of its run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import procrastinate
import psycopg

DB_URL = os.environ["BENCH_DB_URL"]
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DB_URL))


@app.task(name="step")
async def step(n: int, steps: int) -> None:
    if n + 1 < steps:
        await step.defer_async(n=n + 1, steps=steps)


async def drive(runs: int, steps: int) -> None:
    async with app.open_async(), await psycopg.AsyncConnection.connect(DB_URL, autocommit=True) as conn:
        started = time.time()
        await step.batch_defer_async(*({"n": 0, "steps": steps} for _ in range(runs)))
        while True:
            cursor = await conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
            row = await cursor.fetchone()
            if row is not None and row[0] >= runs * steps:
                break
            await asyncio.sleep(0.1)
        print(json.dumps({"seconds": time.time() - started}))


if __name__ == "__main__":
    asyncio.run(drive(int(sys.argv[2]), int(sys.argv[3])))
