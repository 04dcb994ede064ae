"""What must hold after any fault, checked from the API, the database and a subscriber on the
results exchange:

- every run acknowledged with 201 reaches a terminal state (none lost, none stuck);
- each attempt of a step has at most one accepted worker;
- no test result is stored or published twice;
- each run's events are numbered 1..n without gap or repeat, once deduplicated by event id, in
  the database and on the exchange alike;
- every status change in a run's event log is one the state machines allow.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
import orjson

from shared.amqp import RESULTS, declare_exchanges
from shared.events import TERMINAL_RUN_EVENTS
from shared.states import RunStatus, StepStatus, run_edges, step_edges
from tests.e2e.conftest import Api

SUBSCRIBER_QUEUE = "faults.subscriber"
TERMINAL = ("succeeded", "failed", "cancelled")


async def bind_subscriber(amqp_url: str) -> None:
    """A durable queue bound to every event: it keeps what is published while the test is busy,
    and survives a broker restart."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_exchanges(channel)
        queue = await channel.declare_queue(SUBSCRIBER_QUEUE, durable=True)
        await queue.bind(RESULTS, "#")
    finally:
        await connection.close()


@dataclass
class Subscriber:
    amqp_url: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: int = 0

    async def drain(self) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            queue = await channel.get_queue(SUBSCRIBER_QUEUE)
            while True:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    return
                self.deliveries += 1
                event = orjson.loads(message.body)
                assert message.message_id == event["id"], "message_id is not the event id"
                known = self.events.setdefault(event["id"], event)
                assert known == event, f"two different events share the id {event['id']}"
        finally:
            await connection.close()

    def of_run(self, run_id: str) -> list[dict[str, Any]]:
        subject = f"model-runs/{run_id}"
        return sorted((e for e in self.events.values() if e["subject"] == subject), key=lambda e: e["runseq"])


async def wait_terminal(api: Api, run_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while True:
        for run_id in [r for r in run_ids if r not in done]:
            run = await api.run(run_id)
            if run["status"] in TERMINAL:
                done[run_id] = run
        if len(done) == len(run_ids):
            return done
        if time.monotonic() > deadline:
            stuck = {r: (await api.run(r))["status"] for r in run_ids if r not in done}
            raise AssertionError(f"{len(stuck)} run(s) not terminal after {timeout}s: {stuck}")
        await asyncio.sleep(0.2)


def check_transitions(run_id: str, events: list[dict[str, Any]]) -> None:
    """Replays a run's events through the state machines' edges."""
    run_status: RunStatus | None = None
    steps: dict[str, StepStatus] = {}
    allowed_run = run_edges()
    allowed_step = step_edges()
    for event in events:
        entity = event["type"].split(".")[1]
        data = event["data"]
        if entity == "run":
            new = RunStatus(data["status"])
            if run_status is None:
                assert new is RunStatus.QUEUED, f"run {run_id} begins {new}"
            elif new is not run_status:
                assert (run_status, new) in allowed_run, f"run {run_id}: {run_status} -> {new} is illegal"
            run_status = new
        elif entity == "step":
            old = steps.get(data["id"], StepStatus.PENDING)
            new_step = StepStatus(data["status"])
            assert (old, new_step) in allowed_step, (
                f"run {run_id} step {data['name']}: {old} -> {new_step} ({event['type']}) is illegal"
            )
            steps[data["id"]] = new_step
    assert events and events[-1]["type"] in TERMINAL_RUN_EVENTS, (
        f"run {run_id}: the last event is {events[-1]['type'] if events else None}, not the run's end"
    )


async def check(
    api: Api, db_url: str, subscriber: Subscriber, run_ids: list[str], *, timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """Every invariant over `run_ids`; returns the runs as the API shows them at the end."""
    runs = await wait_terminal(api, run_ids, timeout)
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT run_id::text, runseq, event_id::text, body::text FROM run_events "
            "WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, runseq",
            run_ids,
        )
        last: dict[str, int] = {
            row["id"]: row["last_runseq"]
            for row in await conn.fetch(
                "SELECT id::text, last_runseq FROM runs WHERE id = ANY($1::uuid[])", run_ids
            )
        }
        results = await conn.fetch(
            "SELECT id::text, run_id::text, step_id::text, attempt, seq, name FROM test_results "
            "WHERE run_id = ANY($1::uuid[])",
            run_ids,
        )
    finally:
        await conn.close()

    stored: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        body = orjson.loads(row["body"])
        assert body["id"] == row["event_id"] and body["runseq"] == row["runseq"]
        stored[row["run_id"]].append(body)
    for run_id in run_ids:
        events = stored[run_id]
        assert [e["runseq"] for e in events] == list(range(1, last[run_id] + 1)), f"run {run_id}: gaps"
        check_transitions(run_id, events)
        workers: dict[tuple[str, int], set[str]] = defaultdict(set)
        for event in events:
            if event["type"] == "modelruns.step.started":
                workers[(event["data"]["id"], event["data"]["attempt"])].add(event["data"]["worker_id"])
        several = {k: v for k, v in workers.items() if len(v) > 1}
        assert not several, f"run {run_id}: attempts with more than one accepted worker: {several}"
        assert runs[run_id]["status"] == events[-1]["data"]["status"]

    keys = [(r["step_id"], r["attempt"], r["seq"]) for r in results]
    assert len(keys) == len(set(keys)), "a test result is stored twice"
    names = [(r["step_id"], r["attempt"], r["name"]) for r in results]
    assert len(names) == len(set(names)), "a reported test appears twice in one attempt"
    reported = [
        e["data"]["id"]
        for events in stored.values()
        for e in events
        if e["type"] == "modelruns.test_result.reported"
    ]
    assert sorted(reported) == sorted(r["id"] for r in results), "published results differ from stored ones"

    # The subscriber sees the same facts, at least once each: every event id, no runseq taken twice.
    deadline = time.monotonic() + timeout
    while True:
        await subscriber.drain()
        missing = {
            run_id: sorted(
                {e["runseq"] for e in stored[run_id]} - {e["runseq"] for e in subscriber.of_run(run_id)}
            )
            for run_id in run_ids
        }
        missing = {k: v for k, v in missing.items() if v}
        if not missing:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"events never reached the subscriber: {missing}")
        await asyncio.sleep(0.2)
    for run_id in run_ids:
        seen = subscriber.of_run(run_id)
        assert [e["runseq"] for e in seen] == list(range(1, last[run_id] + 1)), f"run {run_id}: repeats"
        assert [e["id"] for e in seen] == [e["id"] for e in stored[run_id]], f"run {run_id}: other events"
    return runs


async def outbox_drains(db_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(db_url)
    try:
        while True:
            left = await conn.fetch("SELECT exchange, routing_key, attempts FROM outbox LIMIT 5")
            if not left:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the outbox does not drain: {[dict(r) for r in left]}")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
