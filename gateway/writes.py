"""The gateway's two writes of intent: a trigger and a cancel, each one transaction that also records
the run's public event and puts what must be sent into the outbox."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID, uuid4

import orjson

from gateway.repository import GatewayRepository, Record
from shared import amqp, outbox
from shared.db.pool import Conn
from shared.events import SOURCE_GATEWAY, make_event, routing_key
from shared.messages import RunCommand
from shared.models.api import TriggerRequest, empty_test_counts, step_counts_of
from shared.models.resources import run_resource
from shared.states import RunEvent, RunStatus, StepStatus, run_sources, run_transition

log = logging.getLogger(__name__)


class IdempotencyKeyReused(Exception):
    """The key was used by this tenant, within 24 h, with another body."""


@dataclass(frozen=True)
class Triggered:
    run: Record
    created: bool  # False when an idempotent replay answered with the original run


class _Replay(Exception):
    """Leaves the trigger's transaction (rolling it back) when another request holds the key."""

    def __init__(self, run_id: UUID, body_hash: bytes) -> None:
        self.run_id = run_id
        self.body_hash = body_hash


def body_hash(body: Any) -> bytes:
    """The same JSON value hashes the same, whatever its key order and whitespace."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


def _now() -> datetime:
    return datetime.now(UTC)


async def _replay(
    repo: GatewayRepository, tenant_id: str, run_id: UUID, stored_hash: bytes, wanted_hash: bytes
) -> Triggered:
    if bytes(stored_hash) != wanted_hash:
        raise IdempotencyKeyReused()
    row = await repo.get_run(run_id, tenant_id)
    if row is None:  # deleted since: the key went with it (ON DELETE CASCADE)
        raise IdempotencyKeyReused()
    return Triggered(row, created=False)


async def _announce(
    repo: GatewayRepository,
    conn: Conn,
    run: Record,
    *,
    runseq: int,
    event: str,
    command: Literal["trigger", "cancel"],
) -> None:
    """In the caller's transaction: the run's event in its log and on the results exchange, and the
    command that hands the run to the orchestrator."""
    body = make_event(
        run_id=run["id"],
        runseq=runseq,
        entity="run",
        event=event,
        data=run_resource(run),
        source=SOURCE_GATEWAY,
        time=_now(),
    )
    await repo.insert_run_event(conn, run["id"], body)
    await outbox.insert(
        conn,
        [
            outbox.public(routing_key(run["tenant_id"], "run", event), body),
            outbox.internal(
                amqp.COMMANDS,
                f"run.{command}",
                RunCommand(command=command, run_id=run["id"]),
                message_id=str(uuid4()),
            ),
        ],
    )


async def trigger(
    repo: GatewayRepository,
    publisher: outbox.OutboxPublisher,
    *,
    tenant_id: str,
    request: TriggerRequest,
    idempotency_key: str | None,
    request_hash: bytes,
) -> Triggered:
    run_id = uuid4()
    try:
        async with repo.transaction() as conn:
            if idempotency_key is not None:
                found = await repo.find_idempotency_key(conn, tenant_id, idempotency_key)
                if found is not None:
                    raise _Replay(found["run_id"], bytes(found["body_hash"]))
            row = await repo.insert_run(
                conn,
                run_id=run_id,
                tenant_id=tenant_id,
                model=request.model.model_dump(mode="json"),
                labels=dict(request.labels),
                parameters=dict(request.parameters),
                fail_fast=request.fail_fast,
                step_counts=step_counts_of([StepStatus.PENDING] * len(request.steps)),
                test_counts=empty_test_counts(),
            )
            created_at = row["created_at"]
            await repo.insert_steps(
                conn,
                [
                    (
                        uuid4(),
                        run_id,
                        position,
                        step.name,
                        step.kind,
                        step.params,
                        list(step.depends_on),
                        step.pool,
                        step.max_attempts,
                        step.timeout_seconds,
                        step.allow_test_failures,
                        empty_test_counts(),
                        created_at,
                    )
                    for position, step in enumerate(request.steps)
                ],
            )
            # Claimed after the run exists (the key row references it); a racing request with the
            # same key waits here on the unique index and then sees this one's claim.
            if idempotency_key is not None and not await repo.claim_idempotency_key(
                conn, tenant_id, idempotency_key, request_hash, run_id
            ):
                found = await repo.find_idempotency_key(conn, tenant_id, idempotency_key)
                if found is None:  # the holder expired in between: vanishingly rare, ask again
                    raise IdempotencyKeyReused()
                raise _Replay(found["run_id"], bytes(found["body_hash"]))
            await _announce(repo, conn, row, runseq=1, event="queued", command="trigger")
    except _Replay as replay:
        return await _replay(repo, tenant_id, replay.run_id, replay.body_hash, request_hash)
    publisher.wake()
    log.info(
        "run triggered",
        extra={
            "action": "run.trigger",
            "run_id": str(run_id),
            "tenant_id": tenant_id,
            "steps": len(request.steps),
        },
    )
    return Triggered(row, created=True)


@dataclass(frozen=True)
class Cancelled:
    run: Record
    requested: bool  # False when the run was answered as it was (cancelling, or finished)


async def cancel(
    repo: GatewayRepository, publisher: outbox.OutboxPublisher, *, tenant_id: str, run_id: UUID
) -> Cancelled | None:
    """Request the cancel of a queued or running run; any other run is answered as it is.
    None when the tenant has no such run."""
    async with repo.transaction() as conn:
        row = await repo.lock_run(conn, run_id, tenant_id)
        if row is None:
            return None
        status = RunStatus(row["status"])
        sources = run_sources(RunEvent.CANCEL)
        if status not in sources:
            return Cancelled(row, requested=False)
        target = run_transition(status, RunEvent.CANCEL)
        updated = await repo.request_cancel(conn, run_id, target.value, [s.value for s in sources])
        if updated is None:  # impossible under the row lock; answer what is there
            return Cancelled(row, requested=False)
        await _announce(
            repo, conn, updated, runseq=updated["last_runseq"], event="cancelling", command="cancel"
        )
    publisher.wake()
    log.info(
        "run cancel requested",
        extra={"action": "run.cancel", "run_id": str(run_id), "tenant_id": tenant_id, "from": status.value},
    )
    return Cancelled(updated, requested=True)
