"""DBOS: a workflow of chained steps, enqueued on a queue that worker processes take from."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import sqlalchemy
from dbos import DBOS, DBOSClient, DBOSConfig

DB_URL = os.environ["BENCH_DB_URL"]


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow(name="chain")
def run_chain(steps: int) -> None:
    for i in range(steps):
        noop(i)


def worker() -> None:
    config: DBOSConfig = {"name": "bench", "system_database_url": DB_URL, "log_level": "WARNING"}
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue("bench")
    print("ready", flush=True)
    threading.Event().wait()


def drive(runs: int, steps: int) -> None:
    client = DBOSClient(system_database_url=DB_URL)
    engine = sqlalchemy.create_engine(DB_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    started = time.time()
    for _ in range(runs):
        client.enqueue({"queue_name": "bench", "workflow_name": "chain"}, steps)
    while True:
        with engine.connect() as conn:
            done = conn.execute(
                sqlalchemy.text("SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'")
            ).scalar_one()
        if done >= runs:
            break
        time.sleep(0.1)
    print(json.dumps({"seconds": time.time() - started}))


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker()
    else:
        drive(int(sys.argv[2]), int(sys.argv[3]))
