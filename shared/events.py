"""The public facts: CloudEvents 1.0 on the results exchange, numbered per run by `runseq`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict

Entity = Literal["run", "step", "test_result"]
RUN_EVENTS = ("queued", "started", "cancelling", "succeeded", "failed", "cancelled")
STEP_EVENTS = ("queued", "started", "retrying", "succeeded", "failed", "cancelled", "skipped")
TEST_RESULT_EVENTS = ("reported",)
TERMINAL_RUN_EVENTS = frozenset(
    {"modelruns.run.succeeded", "modelruns.run.failed", "modelruns.run.cancelled"}
)

SOURCE_GATEWAY = "/modelruns/gateway"
SOURCE_ORCHESTRATOR = "/modelruns/orchestrator"
CONTENT_TYPE = "application/cloudevents+json"


class CloudEvent(BaseModel):
    """The envelope of every public fact, as published and as stored in `run_events`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    runseq: int
    data: dict[str, Any]


def routing_key(tenant_id: str, entity: Entity, event: str) -> str:
    return f"{tenant_id}.{entity}.{event}"


def make_event(
    *,
    run_id: UUID,
    runseq: int,
    entity: Entity,
    event: str,
    data: dict[str, Any],
    source: str,
    time: datetime,
) -> dict[str, Any]:
    allowed = {"run": RUN_EVENTS, "step": STEP_EVENTS, "test_result": TEST_RESULT_EVENTS}[entity]
    if event not in allowed:
        raise ValueError(f"{entity}.{event} is not a public event")
    return {
        "specversion": "1.0",
        "id": str(uuid4()),
        "source": source,
        "type": f"modelruns.{entity}.{event}",
        "subject": f"model-runs/{run_id}",
        "time": time,
        "datacontenttype": "application/json",
        "runseq": runseq,
        "data": data,
    }
