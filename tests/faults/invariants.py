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
    by_subject: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    deliveries: int = 0

    def _take(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.deliveries += 1
        event = orjson.loads(message.body)
        assert message.message_id == event["id"], "message_id is not the event id"
        known = self.events.setdefault(event["id"], event)
        assert known == event, f"two different events share the id {event['id']}"
        self.by_subject[event["subject"]][event["id"]] = event

    async def drain(self) -> None:
        """Takes everything the queue holds now."""
        connection = await aio_pika.connect(self.amqp_url)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1000)
            queue = await channel.declare_queue(SUBSCRIBER_QUEUE, passive=True)
            while (count := queue.declaration_result.message_count or 0) > 0:
                got = 0
                # Acknowledged one by one: deliveries beyond `count` go back to the queue unread.
                async with queue.iterator() as messages:
                    async for message in messages:
                        self._take(message)
                        await message.ack()
                        got += 1
                        if got >= count:
                            break
                queue = await channel.declare_queue(SUBSCRIBER_QUEUE, passive=True)
        finally:
            await connection.close()

    def of_run(self, run_id: str) -> list[dict[str, Any]]:
        return sorted(self.by_subject[f"model-runs/{run_id}"].values(), key=lambda e: e["runseq"])


async def wait_terminal(api: Api, run_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while True:
        for run_id in [r for r in run_ids if r not in done]:
            status, run = await api.call("GET", f"/model-runs/{run_id}")
            assert status in (200, 404), (status, run)
            if status == 404 or run["status"] in TERMINAL:
                done[run_id] = run
        if len(done) == len(run_ids) or time.monotonic() > deadline:
            return done
        await asyncio.sleep(0.2)


def illegal_transitions(run_id: str, events: list[dict[str, Any]]) -> list[str]:
    """Replays a run's events through the state machines' edges; returns what they forbid."""
    found: list[str] = []
    run_status: RunStatus | None = None
    steps: dict[str, StepStatus] = {}
    allowed_run = run_edges()
    allowed_step = step_edges()
    for event in events:
        entity = event["type"].split(".")[1]
        data = event["data"]
        if entity == "run":
            new = RunStatus(data["status"])
            if run_status is None and new is not RunStatus.QUEUED:
                found.append(f"run {run_id} begins {new}")
            elif run_status is not None and new is not run_status and (run_status, new) not in allowed_run:
                found.append(f"run {run_id}: {run_status} -> {new}")
            run_status = new
        elif entity == "step":
            old = steps.get(data["id"], StepStatus.PENDING)
            new_step = StepStatus(data["status"])
            if (old, new_step) not in allowed_step:
                found.append(f"run {run_id} step {data['name']}: {old} -> {new_step} ({event['type']})")
            steps[data["id"]] = new_step
    if not events or events[-1]["type"] not in TERMINAL_RUN_EVENTS:
        found.append(f"run {run_id}: the last event is {events[-1]['type'] if events else None}")
    return found


@dataclass
class Audit:
    """What went wrong, by kind; empty lists everywhere is the promise kept."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    illegal: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        kinds = {
            "lost": self.lost,
            "stuck": self.stuck,
            "duplicated": self.duplicated,
            "illegal": self.illegal,
            "gaps": self.gaps,
        }
        return {kind: found for kind, found in kinds.items() if found}


async def audit(
    api: Api, db_url: str, subscriber: Subscriber, run_ids: list[str], *, timeout: float = 60.0
) -> Audit:
    """Every invariant over `run_ids`, each broken one counted."""
    result = Audit()
    seen = await wait_terminal(api, run_ids, timeout)
    for run_id in run_ids:
        run = seen.get(run_id)
        if run is None or "status" not in run:
            result.lost.append(run_id)
        elif run["status"] not in TERMINAL:
            result.stuck.append(f"{run_id} {run['status']}")
        else:
            result.runs[run_id] = run
    finished = list(result.runs)
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT run_id::text, runseq, event_id::text, body::text FROM run_events "
            "WHERE run_id = ANY($1::uuid[]) ORDER BY run_id, runseq",
            finished,
        )
        last: dict[str, int] = {
            row["id"]: row["last_runseq"]
            for row in await conn.fetch(
                "SELECT id::text, last_runseq FROM runs WHERE id = ANY($1::uuid[])", finished
            )
        }
        results = await conn.fetch(
            "SELECT id::text, run_id::text, step_id::text, attempt, seq, name FROM test_results "
            "WHERE run_id = ANY($1::uuid[])",
            finished,
        )
    finally:
        await conn.close()

    stored: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        body = orjson.loads(row["body"])
        assert body["id"] == row["event_id"] and body["runseq"] == row["runseq"]
        stored[row["run_id"]].append(body)
    for run_id in finished:
        events = stored[run_id]
        if [e["runseq"] for e in events] != list(range(1, last[run_id] + 1)):
            result.gaps.append(f"run {run_id}: stored runseqs are not 1..{last[run_id]}")
        result.illegal += illegal_transitions(run_id, events)
        workers: dict[tuple[str, int], set[str]] = defaultdict(set)
        for event in events:
            if event["type"] == "modelruns.step.started":
                workers[(event["data"]["id"], event["data"]["attempt"])].add(event["data"]["worker_id"])
        result.duplicated += [
            f"run {run_id} step {step} attempt {attempt}: accepted {sorted(ids)}"
            for (step, attempt), ids in workers.items()
            if len(ids) > 1
        ]
        if events and result.runs[run_id]["status"] != events[-1]["data"]["status"]:
            result.illegal.append(f"run {run_id}: the API and the event log disagree")

    for what, key in [("seq", "seq"), ("name", "name")]:
        keys = [(r["step_id"], r["attempt"], r[key]) for r in results]
        result.duplicated += [f"test result {k} stored twice (by {what})" for k in _repeats(keys)]
    reported = [
        e["data"]["id"]
        for events in stored.values()
        for e in events
        if e["type"] == "modelruns.test_result.reported"
    ]
    result.duplicated += [f"test result {k} published twice" for k in _repeats(reported)]
    if sorted(set(reported)) != sorted(r["id"] for r in results):
        result.duplicated.append("published test results differ from the stored ones")

    # The subscriber sees the same facts, at least once each: every event id, no runseq taken twice.
    deadline = time.monotonic() + timeout
    while True:
        await subscriber.drain()
        missing = {
            run_id: sorted(
                {e["runseq"] for e in stored[run_id]} - {e["runseq"] for e in subscriber.of_run(run_id)}
            )
            for run_id in finished
        }
        missing = {k: v for k, v in missing.items() if v}
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    result.gaps += [
        f"run {run_id}: runseqs {seqs} never reached the subscriber" for run_id, seqs in missing.items()
    ]
    for run_id in finished:
        got = subscriber.of_run(run_id)
        seqs = [e["runseq"] for e in got]
        result.duplicated += [f"run {run_id}: runseq {n} published under two ids" for n in _repeats(seqs)]
        if [e["id"] for e in got] != [e["id"] for e in stored[run_id]] and not missing.get(run_id):
            result.gaps.append(f"run {run_id}: the subscriber saw other events than the log holds")
    return result


def _repeats(values: list[Any]) -> list[Any]:
    counts: dict[Any, int] = defaultdict(int)
    for value in values:
        counts[value] += 1
    return [value for value, n in counts.items() if n > 1]


async def check(
    api: Api, db_url: str, subscriber: Subscriber, run_ids: list[str], *, timeout: float = 60.0
) -> dict[str, dict[str, Any]]:
    """Every invariant over `run_ids`; returns the runs as the API shows them at the end."""
    found = await audit(api, db_url, subscriber, run_ids, timeout=timeout)
    assert not found.problems(), found.problems()
    return found.runs


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
