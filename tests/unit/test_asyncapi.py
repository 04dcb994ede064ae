"""docs/asyncapi.json: what the event models generate, a valid AsyncAPI 3 document, one message per
public event, and events as the code makes them match it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import jsonschema
import pytest

from shared import amqp, asyncapi, jsonutil
from shared.events import (
    RUN_EVENTS,
    SOURCE_ORCHESTRATOR,
    STEP_EVENTS,
    TEST_RESULT_EVENTS,
    make_event,
    routing_key,
)
from shared.models.api import empty_test_counts, step_counts_of
from shared.models.resources import result_resource, run_resource, step_resource
from shared.states import StepStatus
from tests.asyncapi_support import DOCUMENT, document, validate_event

ASYNCAPI_SCHEMA = Path(__file__).with_name("schemas") / "asyncapi-3.0.0.json"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RUN_ID = uuid4()
STEP_ID = uuid4()


def test_the_committed_document_is_what_the_models_generate() -> None:
    assert DOCUMENT.read_bytes() == asyncapi.document(), (
        "docs/asyncapi.json is stale: python -m shared.asyncapi > docs/asyncapi.json"
    )


def test_it_is_a_valid_asyncapi_3_document() -> None:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(document())
    ]
    assert not errors
    broken = {**document(), "operations": {"x": {"action": "publish"}}}
    assert list(validator.iter_errors(broken)), "the AsyncAPI schema refuses nothing"


def test_one_message_per_public_event_on_the_results_exchange() -> None:
    names = {m["name"] for m in document()["components"]["messages"].values()}
    expected = {f"modelruns.run.{e}" for e in RUN_EVENTS}
    expected |= {f"modelruns.step.{e}" for e in STEP_EVENTS}
    expected |= {f"modelruns.test_result.{e}" for e in TEST_RESULT_EVENTS}
    assert names == expected
    for channel in document()["channels"].values():
        assert channel["bindings"]["amqp"]["exchange"]["name"] == amqp.RESULTS
        assert channel["bindings"]["amqp"]["exchange"]["type"] == "topic"
        entity = channel["address"].split(".")[1]
        # The address is the routing key the code builds, with its parameters in place.
        for event in channel["parameters"]["event"]["enum"]:
            assert routing_key("acme", entity, event) == channel["address"].format(tenant="acme", event=event)


def run_row() -> dict[str, Any]:
    return {
        "id": RUN_ID,
        "status": "running",
        "model": {"name": "iris-classifier", "version": "1.0.0", "uri": None},
        "labels": {"team": "ml"},
        "parameters": {"seed": 1},
        "fail_fast": True,
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": None,
        "cancel_requested_at": None,
        "step_counts": step_counts_of([StepStatus.PENDING, StepStatus.RUNNING]),
        "test_counts": empty_test_counts(),
        "error": None,
    }


def step_row() -> dict[str, Any]:
    return {
        "id": STEP_ID,
        "run_id": RUN_ID,
        "name": "train",
        "kind": "synthetic",
        "status": "succeeded",
        "depends_on": [],
        "pool": "default",
        "attempt": 1,
        "max_attempts": 3,
        "timeout_seconds": 3600,
        "worker_id": "w-1",
        "created_at": NOW,
        "queued_at": NOW,
        "started_at": NOW,
        "finished_at": NOW,
        "outputs": {"rows": 150},
        "error": None,
        "test_counts": empty_test_counts(),
    }


def result_row() -> dict[str, Any]:
    return {
        "id": uuid4(),
        "run_id": RUN_ID,
        "step_id": STEP_ID,
        "attempt": 1,
        "name": "accuracy >= 0.9",
        "status": "passed",
        "duration_ms": 12.5,
        "message": None,
        "metrics": {"accuracy": 0.95},
        "created_at": NOW,
    }


def published(entity: Any, event: str, data: dict[str, Any]) -> dict[str, Any]:
    """The event as it goes on the wire: made by the code, then JSON."""
    made = make_event(
        run_id=RUN_ID, runseq=3, entity=entity, event=event, data=data, source=SOURCE_ORCHESTRATOR, time=NOW
    )
    loaded: dict[str, Any] = jsonutil.loads(jsonutil.dumps(made))
    return loaded


CASES = [
    *(("run", e, lambda: run_resource(run_row())) for e in RUN_EVENTS),
    *(("step", e, lambda: step_resource(step_row())) for e in STEP_EVENTS),
    *(("test_result", e, lambda: result_resource(result_row())) for e in TEST_RESULT_EVENTS),
]


@pytest.mark.parametrize(("entity", "event", "data"), CASES, ids=[f"{c[0]}.{c[1]}" for c in CASES])
def test_events_as_the_code_makes_them_match_their_message(entity: str, event: str, data: Any) -> None:
    validate_event(published(entity, event, data()))


def test_an_event_that_breaks_the_contract_does_not_match() -> None:
    event = published("step", "started", step_resource(step_row()))
    del event["data"]["pool"]
    with pytest.raises(jsonschema.ValidationError):
        validate_event(event)
    wrong = published("run", "started", run_resource(run_row()))
    wrong["type"] = "modelruns.step.started"
    with pytest.raises(jsonschema.ValidationError):
        validate_event(wrong)
