"""The engine against real Postgres, fed one worker's messages in every order they can arrive in.

An orchestrator handles many messages at once and several orchestrators share the queue, so a
worker's `started`, `results` and `finished` reach the engine in any order. Whatever the order, the
attempt ends as the worker reported it, with its results, and the worker is never fenced off its
own attempt.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery

from gateway import writes
from gateway.repository import GatewayRepository
from orchestrator.change import Change
from orchestrator.engine import Decidable, Engine
from orchestrator.inserts import ResultInserts
from orchestrator.repository import Report, Repository
from orchestrator.state import StepState
from shared import amqp, apikeys
from shared.amqp import Broker
from shared.messages import ReportedResult, RunCommand, WorkerFinished, WorkerResults, WorkerStarted
from shared.models.api import TriggerRequest
from shared.outbox import OutboxPublisher
from shared.settings import Settings
from shared.states import RunStatus, StepStatus

WORKER = "worker-a"


async def queued_step(pool: asyncpg.Pool, settings: Settings, engine: Engine, **step: object) -> StepState:
    request = TriggerRequest.model_validate(
        {
            "model": {"name": "iris-classifier", "version": "1.4.0"},
            "steps": [{"name": "evaluate", "kind": "synthetic", "params": {}, **step}],
        }
    )
    await apikeys.create_key(pool, "acme", ["runs:write"])  # creates the tenant
    # Never connected: the outbox rows stay in Postgres, which is all the engine needs.
    publisher = OutboxPublisher(pool, Broker(settings.amqp_url, name="test"))
    triggered = await writes.trigger(
        GatewayRepository(pool),
        publisher,
        tenant_id="acme",
        request=request,
        idempotency_key=None,
        request_hash=b"",
    )
    run_id: UUID = triggered.run["id"]
    await engine.advance(run_id)
    (state,) = await steps_of(engine, run_id)
    assert state.status is StepStatus.QUEUED and state.attempt == 1
    return state


async def steps_of(engine: Engine, run_id: UUID) -> list[StepState]:
    async with engine.repo.pool.acquire() as conn, conn.transaction():
        snapshot = await engine.repo.lock(conn, run_id)
    assert snapshot is not None
    return snapshot[1]


def stops(changes: list[Change]) -> list[str]:
    return [m.routing_key for c in changes for m in c.messages if m.exchange == amqp.CONTROL]


ORDERS = list(itertools.permutations(["started", "results", "finished"]))


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
async def test_any_order_of_one_workers_messages_ends_the_attempt_as_reported(
    pool: asyncpg.Pool, settings: Settings, order: tuple[str, ...]
) -> None:
    changes: list[Change] = []
    engine = Engine(Repository(pool), settings, on_change=changes.append)
    step = await queued_step(pool, settings, engine, allow_test_failures=True)
    ref = {"run_id": step.run_id, "step_id": step.id, "attempt": 1, "worker_id": WORKER}
    results = [
        ReportedResult(seq=0, name="accuracy >= 0.9", status="failed"),
        ReportedResult(seq=1, name="f1 >= 0.8", status="passed"),
    ]
    handlers: dict[str, Callable[[], Awaitable[None]]] = {
        "started": lambda: engine.started(WorkerStarted(**ref)),
        "results": lambda: engine.results(WorkerResults(**ref, results=results)),
        "finished": lambda: engine.finished(
            WorkerFinished(**ref, outcome="succeeded", outputs={"accuracy": 0.81}, results_count=2)
        ),
    }
    for name in order:
        await handlers[name]()

    (done,) = await steps_of(engine, step.run_id)
    assert done.status is StepStatus.SUCCEEDED, (done.status, done.error)
    assert done.worker_id == WORKER and done.attempt == 1
    assert done.outputs == {"accuracy": 0.81}
    assert done.results_stored == 2
    assert done.test_counts["failed"] == 1 and done.test_counts["passed"] == 1
    assert stops(changes) == [], "the worker was fenced off its own attempt"


async def test_a_duplicate_start_after_the_end_is_ignored_and_another_worker_is_fenced(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    changes: list[Change] = []
    engine = Engine(Repository(pool), settings, on_change=changes.append)
    step = await queued_step(pool, settings, engine)
    ref = {"run_id": step.run_id, "step_id": step.id, "attempt": 1}
    await engine.finished(WorkerFinished(**ref, worker_id=WORKER, outcome="succeeded"))
    await engine.started(WorkerStarted(**ref, worker_id=WORKER))
    assert stops(changes) == []
    await engine.started(WorkerStarted(**ref, worker_id="worker-b"))
    assert stops(changes) == [amqp.control_key("worker-b")]
    (done,) = await steps_of(engine, step.run_id)
    assert done.status is StepStatus.SUCCEEDED and done.worker_id == WORKER


async def test_results_that_overtook_their_start_in_a_cancelling_run_stop_the_worker(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    changes: list[Change] = []
    engine = Engine(Repository(pool), settings, on_change=changes.append)
    step = await queued_step(pool, settings, engine)
    await writes.cancel(
        GatewayRepository(pool),
        OutboxPublisher(pool, Broker(settings.amqp_url, name="test")),
        tenant_id="acme",
        run_id=step.run_id,
    )
    ref = {"run_id": step.run_id, "step_id": step.id, "attempt": 1, "worker_id": WORKER}
    await engine.results(WorkerResults(**ref, results=[ReportedResult(seq=0, name="t", status="passed")]))
    assert stops(changes) == [amqp.control_key(WORKER)]
    (done,) = await steps_of(engine, step.run_id)
    assert done.status is StepStatus.CANCELLED and done.results_stored == 0
    async with pool.acquire() as conn, conn.transaction():
        snapshot = await engine.repo.lock(conn, step.run_id)
    assert snapshot is not None and snapshot[0].status is RunStatus.CANCELLED


async def test_a_step_flooding_results_is_failed_and_stopped_with_its_first_ones_kept(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    changes: list[Change] = []
    capped = settings.model_copy(update={"max_test_results_per_step": 3})
    engine = Engine(Repository(pool), capped, on_change=changes.append)
    step = await queued_step(pool, capped, engine, max_attempts=3)
    ref = {"run_id": step.run_id, "step_id": step.id, "attempt": 1, "worker_id": WORKER}
    await engine.started(WorkerStarted(**ref))
    batch = [ReportedResult(seq=i, name=f"t{i}", status="passed") for i in range(2)]
    await engine.results(WorkerResults(**ref, results=batch))
    more = [ReportedResult(seq=i, name=f"t{i}", status="passed") for i in range(2, 4)]
    await engine.results(WorkerResults(**ref, results=more))
    (done,) = await steps_of(engine, step.run_id)
    assert done.status is StepStatus.FAILED and done.attempt == 1
    assert done.error is not None and done.error["code"] == "too_many_results"
    assert done.results_stored == 2 and done.test_counts["total"] == 2
    assert stops(changes) == [amqp.control_key(WORKER)]
    # What the stopped worker still sends changes nothing.
    await engine.finished(WorkerFinished(**ref, outcome="succeeded", results_count=4))
    (after,) = await steps_of(engine, step.run_id)
    assert after.status is StepStatus.FAILED and after.results_stored == 2


async def test_many_runs_in_one_transaction_end_as_each_would_alone(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The batcher's transaction: several runs' messages in one `handle`, each run's in order,
    with a message for a run that does not exist among them."""
    changes: list[Change] = []
    engine = Engine(Repository(pool), settings, on_change=changes.append)
    first = await queued_step(pool, settings, engine)
    second = await queued_step(pool, settings, engine)
    changes.clear()

    def report(step: StepState, outcome: str) -> list[Decidable]:
        ref = {"run_id": step.run_id, "step_id": step.id, "attempt": 1, "worker_id": WORKER}
        return [
            WorkerStarted(**ref),
            WorkerResults(**ref, results=[ReportedResult(seq=0, name="t", status="passed")]),
            WorkerFinished(**ref, outcome=outcome, results_count=1),
        ]

    missing = uuid4()
    await engine.handle(
        {
            second.run_id: report(second, "failed"),
            missing: [RunCommand(command="trigger", run_id=missing)],
            first.run_id: report(first, "succeeded"),
        }
    )
    (one,) = await steps_of(engine, first.run_id)
    (two,) = await steps_of(engine, second.run_id)
    assert one.status is StepStatus.SUCCEEDED and one.results_stored == 1
    assert two.status is StepStatus.FAILED and two.results_stored == 1
    # One change for each run that exists, and nothing for the one that does not.
    assert sorted(str(c.run.id) for c in changes) == sorted([str(first.run_id), str(second.run_id)])
    runs = {
        r["id"]: str(r["status"])
        for r in await pool.fetch(
            "SELECT id, status FROM runs WHERE id = ANY($1::uuid[])", [first.run_id, second.run_id]
        )
    }
    assert runs == {first.run_id: "succeeded", second.run_id: "failed"}


def results_inserts() -> tuple[list[int], Callable[[LoggedQuery], None]]:
    """A query logger for connections, and the inserts of test results it saw: the rows each one
    carried (each is one round trip)."""
    seen: list[int] = []

    def log(query: LoggedQuery) -> None:
        if "INSERT INTO test_results" in query.query:
            seen.append(len(query.args[0]))

    return seen, log


async def test_the_results_of_many_runs_in_one_transaction_are_stored_by_one_statement(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    logged, log = results_inserts()
    # Every connection the pool will ever hold (at most its max_size) logs its statements.
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    for conn in held:
        conn.add_query_logger(log)
    for conn in held:
        await pool.release(conn)
    changes: list[Change] = []
    engine = Engine(Repository(pool), settings, on_change=changes.append)
    steps = [await queued_step(pool, settings, engine, allow_test_failures=True) for _ in range(4)]
    changes.clear()
    logged.clear()

    def report(step: StepState, *, resent: bool = False) -> list[Decidable]:
        ref = {"run_id": step.run_id, "step_id": step.id, "attempt": 1, "worker_id": WORKER}
        results = [
            ReportedResult(seq=0, name="accuracy", status="passed"),
            ReportedResult(seq=1, name="f1", status="failed"),
        ]
        # A report the broker delivered twice stores its results once.
        again = [WorkerResults(**ref, results=results)] if resent else []
        return [
            WorkerStarted(**ref),
            WorkerResults(**ref, results=results),
            *again,
            WorkerFinished(**ref, outcome="succeeded", results_count=2),
        ]

    await engine.handle({step.run_id: report(step, resent=i == 0) for i, step in enumerate(steps)})

    # One statement for the four runs' reports, and one for the report sent again.
    assert len(logged) == 2, logged
    for step in steps:
        (done,) = await steps_of(engine, step.run_id)
        assert done.status is StepStatus.SUCCEEDED, (done.status, done.error)
        assert done.results_stored == 2
        assert done.test_counts["passed"] == 1 and done.test_counts["failed"] == 1
    stored = await pool.fetch("SELECT step_id, seq FROM test_results ORDER BY step_id, seq")
    assert sorted((r["step_id"], r["seq"]) for r in stored) == sorted(
        (s.id, n) for s in steps for n in (0, 1)
    )
    # Each stored result is one public fact, in seq order within its run.
    for change in changes:
        reported = [e.body["data"]["name"] for e in change.events if e.type.endswith("test_result.reported")]
        assert reported == ["accuracy", "f1"]


async def test_a_decision_that_fails_stops_the_others_and_its_error_is_raised(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        inserts = ResultInserts(conn)
        waiting = asyncio.Event()
        cancelled: list[str] = []

        async def reports() -> None:
            waiting.set()
            try:
                await asyncio.Event().wait()  # decides for as long as it is let
            except asyncio.CancelledError:
                cancelled.append("reports")
                raise

        async def fails() -> None:
            await waiting.wait()
            raise LookupError("a decision's own error")

        with pytest.raises(LookupError, match="own error"):
            await asyncio.wait_for(inserts.decide([reports, fails]), timeout=10)
        assert cancelled == ["reports"]


async def test_messages_for_runs_that_do_not_exist_change_nothing(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    changes: list[Change] = []
    engine = Engine(Repository(pool), settings, on_change=changes.append)
    missing = uuid4()
    assert await asyncio.wait_for(engine.advance(missing), timeout=10) is None
    ref = {"run_id": missing, "step_id": uuid4(), "attempt": 1, "worker_id": WORKER}
    await asyncio.wait_for(
        engine.handle(
            {
                missing: [WorkerResults(**ref, results=[ReportedResult(seq=0, name="t", status="passed")])],
                uuid4(): [RunCommand(command="trigger", run_id=missing)],
            }
        ),
        timeout=10,
    )
    assert changes == []
    assert await pool.fetchval("SELECT count(*) FROM test_results") == 0


SHAPES = [[1], [0, 0], [1, 1, 1], [0, 2, 1], [3, 0, 2, 1]]


@pytest.mark.parametrize("shape", SHAPES, ids=["-".join(map(str, s)) for s in SHAPES])
async def test_inserts_go_together_level_by_level_and_never_overlap_on_the_connection(
    pool: asyncpg.Pool, settings: Settings, shape: list[int]
) -> None:
    """Each run reports `shape[i]` times, yielding to the loop a varying number of times in
    between: the inserts of each round go as one statement (as many statements as the most any
    run reports), every report gets its own new rows, and the connection is never used by two
    statements at once (asyncpg would refuse it)."""
    engine = Engine(Repository(pool), settings)
    steps = [await queued_step(pool, settings, engine) for _ in shape]
    statements, log = results_inserts()
    got: dict[UUID, list[int]] = {step.id: [] for step in steps}

    async with pool.acquire() as conn, conn.transaction():
        conn.add_query_logger(log)
        inserts = ResultInserts(conn)

        def decision(index: int, step: StepState, reports: int) -> Callable[[], Awaitable[None]]:
            async def decide() -> None:
                for n in range(reports):
                    for _ in range((index + n) % 3):
                        await asyncio.sleep(0)
                    results = [
                        ReportedResult(seq=n * 10 + i, name=f"t{n}.{i}", status="passed") for i in range(2)
                    ]
                    rows = await inserts.insert(Report(step.run_id, step.id, 1, results))
                    got[step.id].extend(row["seq"] for row in rows)

            return decide

        deciding = [
            decision(i, step, reports) for i, (step, reports) in enumerate(zip(steps, shape, strict=True))
        ]
        await asyncio.wait_for(inserts.decide(deciding), timeout=10)
        conn.remove_query_logger(log)

    assert len(statements) == max(shape), statements
    assert sum(statements) == 2 * sum(shape)
    for step, reports in zip(steps, shape, strict=True):
        assert got[step.id] == [n * 10 + i for n in range(reports) for i in range(2)]
