"""Internal message bodies: commands, dispatches, worker events and control. Versioned by `v`.

Worker events are untrusted input: every field is bounded here, and the orchestrator fences them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from shared import jsonutil
from shared.errors import InvalidMessage
from shared.models.api import MAX_TEST_NAME
from shared.models.validation import MAX_DEPTH, too_deep
from shared.states import TestStatus

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_RESULTS_PER_MESSAGE = 1000
# Longer messages from a worker are cut to the API's limit and marked as cut, not refused.
MAX_WORKER_TEST_MESSAGE = 100_000
M = TypeVar("M", bound="Message")
WorkerId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@-]+$")]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    v: Literal[1] = 1


class RunCommand(Message):
    command: Literal["trigger", "cancel"]
    run_id: UUID


class StepDispatch(Message):
    run_id: UUID
    step_id: UUID
    tenant_id: str
    attempt: int
    name: str
    kind: str
    params: dict[str, Any]
    parameters: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    timeout_seconds: int
    pool: str


class StepRef(Message):
    run_id: UUID
    step_id: UUID
    attempt: Annotated[int, Field(ge=1, le=100)]


class ReportedResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: Annotated[int, Field(ge=0, le=10_000_000)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEST_NAME)]
    status: TestStatus
    duration_ms: Annotated[float, Field(ge=0, le=1e12)] | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_WORKER_TEST_MESSAGE)] | None = None
    metrics: (
        Annotated[dict[Annotated[str, StringConstraints(max_length=200)], float], Field(max_length=200)]
        | None
    ) = None


class StepErrorReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]
    message: Annotated[str, StringConstraints(max_length=10_000)]
    retryable: bool = True


class WorkerStarted(StepRef):
    type: Literal["started"] = "started"
    worker_id: WorkerId


class WorkerHeartbeat(Message):
    type: Literal["heartbeat"] = "heartbeat"
    worker_id: WorkerId
    steps: Annotated[list[StepRef], Field(max_length=10_000)]


class WorkerResults(StepRef):
    type: Literal["results"] = "results"
    worker_id: WorkerId
    results: Annotated[list[ReportedResult], Field(min_length=1, max_length=MAX_RESULTS_PER_MESSAGE)]


class WorkerFinished(StepRef):
    type: Literal["finished"] = "finished"
    worker_id: WorkerId
    outcome: Literal["succeeded", "failed", "cancelled"]
    outputs: dict[str, Any] | None = None
    error: StepErrorReport | None = None
    # How many results this attempt reported in all: a finish that overtakes its results waits for them.
    results_count: Annotated[int, Field(ge=0, le=10_000_000)] = 0

    @field_validator("outputs")
    @classmethod
    def _outputs_depth(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Outputs are stored, published and handed to later steps, nested inside other documents;
        # orjson refuses to write anything past 254 levels, so the nesting is bounded here.
        if value is not None and too_deep(value, MAX_DEPTH) is not None:
            raise ValueError(f"outputs are nested deeper than {MAX_DEPTH} levels")
        return value


WorkerEvent = Annotated[
    WorkerStarted | WorkerHeartbeat | WorkerResults | WorkerFinished, Field(discriminator="type")
]
_worker_event: TypeAdapter[WorkerStarted | WorkerHeartbeat | WorkerResults | WorkerFinished] = TypeAdapter(
    WorkerEvent
)


# The events of one attempt's report that a batch carries, validated one by one.
StepEventMessage = Annotated[WorkerStarted | WorkerResults | WorkerFinished, Field(discriminator="type")]
_step_event: TypeAdapter[WorkerStarted | WorkerResults | WorkerFinished] = TypeAdapter(StepEventMessage)
MAX_EVENTS_PER_BATCH = 1000


class WorkerBatch(Message):
    """Several step events of one worker in one message: what its publisher had queued while the
    broker confirmed the previous message, each attempt's in the order they happened. One message
    instead of one per event is one publish, one confirm, one delivery and one ack."""

    type: Literal["batch"] = "batch"
    events: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)]


class StopStep(Message):
    """orchestrator → one worker: stop this attempt now."""

    run_id: UUID
    step_id: UUID
    attempt: int
    reason: Literal["cancelled", "fenced", "timeout", "worker_lost"]


def encode(message: BaseModel) -> bytes:
    return jsonutil.dumps(message.model_dump(mode="json"))


def _load(body: bytes) -> Any:
    if len(body) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(f"message of {len(body)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None


def decode(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate(_load(body))
    except ValidationError as exc:
        raise InvalidMessage(
            f"not a valid {model.__name__}: {exc.error_count()} error(s): {exc.errors()[0]['msg']}"
        ) from None


def decode_worker_event(body: bytes) -> WorkerStarted | WorkerHeartbeat | WorkerResults | WorkerFinished:
    return _worker_event_of(_load(body))


def _worker_event_of(data: Any) -> WorkerStarted | WorkerHeartbeat | WorkerResults | WorkerFinished:
    try:
        return _worker_event.validate_python(data)
    except ValidationError as exc:
        raise InvalidMessage(f"not a valid worker event: {exc.errors()[0]['msg']}") from None


def batch_body(bodies: list[bytes]) -> bytes:
    """A WorkerBatch of already encoded events, without decoding and encoding them again."""
    return b'{"v":1,"type":"batch","events":[' + b",".join(bodies) + b"]}"


def decode_worker_message(
    body: bytes,
) -> tuple[list[WorkerStarted | WorkerHeartbeat | WorkerResults | WorkerFinished], list[str]]:
    """A worker's message as its events, in order, and what was wrong with any it held that are
    not valid: one bad event of a batch is dropped alone. Raises InvalidMessage when the message
    itself is neither an event nor a batch."""
    data = _load(body)
    if not (isinstance(data, dict) and data.get("type") == "batch"):
        return [_worker_event_of(data)], []
    try:
        batch = WorkerBatch.model_validate(data)
    except ValidationError as exc:
        raise InvalidMessage(f"not a valid worker batch: {exc.errors()[0]['msg']}") from None
    events: list[WorkerStarted | WorkerHeartbeat | WorkerResults | WorkerFinished] = []
    problems: list[str] = []
    for i, raw in enumerate(batch.events):
        try:
            events.append(_step_event.validate_python(raw))
        except ValidationError as exc:
            problems.append(f"event {i} of the batch is not a valid step event: {exc.errors()[0]['msg']}")
    return events, problems


def utc_now() -> datetime:
    return datetime.now(UTC)
