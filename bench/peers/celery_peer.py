"""Celery: RabbitMQ broker, Postgres result backend, `chain`, acks_late."""

from __future__ import annotations

import json
import os
import sys
import time

import sqlalchemy
from celery import Celery, chain

DB_URL = os.environ["BENCH_DB_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
app = Celery("celery_peer", broker=os.environ["BENCH_AMQP_URL"], backend="db+" + DB_URL)
app.conf.update(task_acks_late=True, task_serializer="json", result_serializer="json")


@app.task(name="noop")
def noop() -> None:
    return None


def done_count(engine: sqlalchemy.Engine) -> int:
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sqlalchemy.text("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
                ).scalar_one()
            )
    except sqlalchemy.exc.ProgrammingError:
        return 0  # the backend creates its table with the first result


def drive(runs: int, steps: int) -> None:
    engine = sqlalchemy.create_engine(DB_URL)
    started = time.time()
    for _ in range(runs):
        chain(*(noop.si() for _ in range(steps))).apply_async()
    while done_count(engine) < runs * steps:
        time.sleep(0.1)
    print(json.dumps({"seconds": time.time() - started}))


if __name__ == "__main__":
    drive(int(sys.argv[2]), int(sys.argv[3]))
