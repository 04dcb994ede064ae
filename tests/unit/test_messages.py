"""Internal messages: they survive the wire unchanged, and poison (from a broken or hostile worker)
is refused as InvalidMessage, never as anything else."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shared.errors import InvalidMessage
from shared.messages import (
    MAX_MESSAGE_BYTES,
    MAX_RESULTS_PER_MESSAGE,
    MAX_WORKER_TEST_MESSAGE,
    Message,
    ReportedResult,
    RunCommand,
    StepDispatch,
    StepErrorReport,
    StepRef,
    StopStep,
    WorkerFinished,
    WorkerHeartbeat,
    WorkerResults,
    WorkerStarted,
    decode,
    decode_worker_event,
    encode,
)
from shared.models.validation import MAX_DEPTH
from shared.states import TestStatus

RUN, STEP = uuid.uuid4(), uuid.uuid4()


def ref(**fields: Any) -> dict[str, Any]:
    return {"run_id": RUN, "step_id": STEP, "attempt": 1, **fields}


SAMPLES: list[Message] = [
    RunCommand(command="trigger", run_id=RUN),
    RunCommand(command="cancel", run_id=RUN),
    StepDispatch(
        run_id=RUN,
        step_id=STEP,
        tenant_id="acme",
        attempt=2,
        name="evaluate",
        kind="python",
        params={"callable": "examples.iris:evaluate", "kwargs": {"min_accuracy": 0.9}},
        parameters={"dataset": "iris", "nested": [1, None, {"a": "ü"}]},
        inputs={"train": {"model_path": "/tmp/m", "accuracy": 0.95}},
        timeout_seconds=600,
        pool="default",
    ),
    StopStep(run_id=RUN, step_id=STEP, attempt=1, reason="cancelled"),
    StopStep(run_id=RUN, step_id=STEP, attempt=3, reason="fenced"),
    WorkerStarted(**ref(), worker_id="worker-host-1234"),
    WorkerHeartbeat(
        worker_id="w1", steps=[StepRef(**ref()), StepRef(run_id=RUN, step_id=uuid.uuid4(), attempt=2)]
    ),
    WorkerHeartbeat(worker_id="w1", steps=[]),
    WorkerResults(
        **ref(),
        worker_id="w1",
        results=[
            ReportedResult(
                seq=0,
                name="accuracy >= 0.9",
                status=TestStatus.PASSED,
                duration_ms=12.5,
                metrics={"accuracy": 0.953},
            ),
            ReportedResult(seq=1, name="f1", status=TestStatus.FAILED, message="0.7 < 0.8"),
            ReportedResult(seq=2, name="skipped one", status=TestStatus.SKIPPED),
        ],
    ),
    WorkerFinished(**ref(), worker_id="w1", outcome="succeeded", outputs={"accuracy": 0.95}, results_count=3),
    WorkerFinished(
        **ref(),
        worker_id="w1",
        outcome="failed",
        error=StepErrorReport(code="not_allowed", message="callable not allowed", retryable=False),
    ),
    WorkerFinished(**ref(), worker_id="w1", outcome="cancelled"),
]
WORKER_EVENTS = [
    m for m in SAMPLES if isinstance(m, WorkerStarted | WorkerHeartbeat | WorkerResults | WorkerFinished)
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    body = encode(message)
    assert isinstance(body, bytes)
    assert orjson.loads(body)["v"] == 1
    assert decode(type(message), body) == message


@pytest.mark.parametrize("event", WORKER_EVENTS, ids=lambda m: type(m).__name__)
def test_worker_events_round_trip_by_their_type(event: Message) -> None:
    decoded = decode_worker_event(encode(event))
    assert type(decoded) is type(event)
    assert decoded == event


def test_encoding_is_plain_json() -> None:
    body = orjson.loads(encode(RunCommand(command="trigger", run_id=RUN)))
    assert body == {"v": 1, "command": "trigger", "run_id": str(RUN)}


def test_a_message_without_v_is_version_one() -> None:
    assert decode(RunCommand, orjson.dumps({"command": "cancel", "run_id": str(RUN)})).v == 1


def started(**fields: Any) -> dict[str, Any]:
    return {
        "type": "started",
        "run_id": str(RUN),
        "step_id": str(STEP),
        "attempt": 1,
        "worker_id": "w",
        **fields,
    }


def result(**fields: Any) -> dict[str, Any]:
    return {"seq": 0, "name": "t", "status": "passed", **fields}


def results(*items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**started(type="results"), "results": list(items) or [result()], **fields}


def finished(**fields: Any) -> dict[str, Any]:
    return {**started(type="finished"), "outcome": "succeeded", **fields}


def heartbeat(**fields: Any) -> dict[str, Any]:
    return {"type": "heartbeat", "worker_id": "w", "steps": [], **fields}


def test_the_helpers_build_valid_events() -> None:
    for body in (started(), results(), finished(), heartbeat()):
        decode_worker_event(orjson.dumps(body))


NOT_JSON = [b"", b"{", b"{'a': 1}", b"\xff\xfe", b"NaN", b"[1,]", b'{"v": 1} trailing', b"\x00"]


@pytest.mark.parametrize("body", NOT_JSON)
def test_not_json(body: bytes) -> None:
    with pytest.raises(InvalidMessage, match="not JSON"):
        decode_worker_event(body)
    with pytest.raises(InvalidMessage, match="not JSON"):
        decode(RunCommand, body)


@pytest.mark.parametrize("body", [b"null", b"1", b'"started"', b"[]", b"true", b"{}"])
def test_json_that_is_no_message(body: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_worker_event(body)
    with pytest.raises(InvalidMessage):
        decode(StepDispatch, body)


@pytest.mark.parametrize("v", [0, 2, "1", "v1", None, [1]])
def test_wrong_version(v: Any) -> None:
    with pytest.raises(InvalidMessage):
        decode_worker_event(orjson.dumps(started(v=v)))
    with pytest.raises(InvalidMessage):
        decode(RunCommand, orjson.dumps({"v": v, "command": "trigger", "run_id": str(RUN)}))


@pytest.mark.parametrize("kind", ["exploded", "Started", "", None, 1, "heartbeats"])
def test_unknown_worker_event_type(kind: Any) -> None:
    with pytest.raises(InvalidMessage):
        decode_worker_event(orjson.dumps(started(type=kind)))


def test_missing_worker_event_type() -> None:
    body = started()
    del body["type"]
    with pytest.raises(InvalidMessage):
        decode_worker_event(orjson.dumps(body))


def test_oversized_is_refused_before_parsing() -> None:
    body = b" " * MAX_MESSAGE_BYTES + orjson.dumps(started())
    with pytest.raises(InvalidMessage, match="over the"):
        decode_worker_event(body)
    with pytest.raises(InvalidMessage, match="over the"):
        decode(RunCommand, b"[" * (MAX_MESSAGE_BYTES + 1))


def test_just_under_the_size_limit_is_read() -> None:
    raw = orjson.dumps(started())
    decode_worker_event(raw + b" " * (MAX_MESSAGE_BYTES - len(raw)))


@pytest.mark.parametrize(
    "body",
    [
        {"command": "start", "run_id": str(RUN)},
        {"command": "trigger", "run_id": "not-a-uuid"},
        {"command": "trigger"},
        {"command": "trigger", "run_id": str(RUN), "extra": 1},
    ],
)
def test_invalid_commands(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage, match="RunCommand"):
        decode(RunCommand, orjson.dumps(body))


@pytest.mark.parametrize("reason", ["", "because", None])
def test_invalid_stop_reasons(reason: Any) -> None:
    with pytest.raises(InvalidMessage):
        decode(
            StopStep, orjson.dumps({"run_id": str(RUN), "step_id": str(STEP), "attempt": 1, "reason": reason})
        )


POISON_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("unknown field", started(bogus=1)),
    ("run_id not a uuid", started(run_id="x")),
    ("step_id missing", {k: v for k, v in started().items() if k != "step_id"}),
    ("attempt 0", started(attempt=0)),
    ("attempt 101", started(attempt=101)),
    ("attempt string", started(attempt="one")),
    ("worker_id empty", started(worker_id="")),
    ("worker_id too long", started(worker_id="w" * 201)),
    ("worker_id with a space", started(worker_id="w 1")),
    ("worker_id with a slash", started(worker_id="w/1")),
    ("worker_id unicode", started(worker_id="wörker")),
    ("worker_id newline", started(worker_id="w\n")),
    ("worker_id not a string", started(worker_id=1)),
    ("heartbeat steps not a list", heartbeat(steps={})),
    (
        "heartbeat too many steps",
        heartbeat(steps=[{"run_id": str(RUN), "step_id": str(STEP), "attempt": 1}] * 10_001),
    ),
    (
        "heartbeat step bad attempt",
        heartbeat(steps=[{"run_id": str(RUN), "step_id": str(STEP), "attempt": 0}]),
    ),
    (
        "heartbeat step unknown field",
        heartbeat(steps=[{"run_id": str(RUN), "step_id": str(STEP), "attempt": 1, "x": 1}]),
    ),
    ("no results", results(results=[])),
    ("too many results", results(*[result(seq=i) for i in range(MAX_RESULTS_PER_MESSAGE + 1)])),
    ("seq negative", results(result(seq=-1))),
    ("seq too large", results(result(seq=10_000_001))),
    ("name empty", results(result(name=""))),
    ("name too long", results(result(name="n" * 501))),
    ("status unknown", results(result(status="ok"))),
    ("message too long", results(result(message="m" * (MAX_WORKER_TEST_MESSAGE + 1)))),
    ("duration negative", results(result(duration_ms=-1))),
    ("duration too large", results(result(duration_ms=1e13))),
    ("too many metrics", results(result(metrics={f"m{i}": 1.0 for i in range(201)}))),
    ("metric name too long", results(result(metrics={"m" * 201: 1.0}))),
    ("metric not a number", results(result(metrics={"m": "x"}))),
    ("metrics not an object", results(result(metrics=[1.0]))),
    ("result unknown field", results(result(bogus=1))),
    ("outcome unknown", finished(outcome="exploded")),
    ("outputs not an object", finished(outputs=[1])),
    ("error code uppercase", finished(outcome="failed", error={"code": "STEP_FAILED", "message": "m"})),
    ("error code empty", finished(outcome="failed", error={"code": "", "message": "m"})),
    ("error code too long", finished(outcome="failed", error={"code": "a" * 65, "message": "m"})),
    ("error message too long", finished(outcome="failed", error={"code": "x", "message": "m" * 10_001})),
    ("error unknown field", finished(outcome="failed", error={"code": "x", "message": "m", "bogus": 1})),
    (
        "error retryable not a bool",
        finished(outcome="failed", error={"code": "x", "message": "m", "retryable": "perhaps"}),
    ),
    ("results_count negative", finished(results_count=-1)),
    ("results_count too large", finished(results_count=10_000_001)),
]


@pytest.mark.parametrize(("why", "body"), POISON_EVENTS, ids=[why for why, _ in POISON_EVENTS])
def test_poison_worker_events(why: str, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessage):
        decode_worker_event(orjson.dumps(body))


BOUNDS_OK: list[tuple[str, dict[str, Any]]] = [
    ("attempt 100", started(attempt=100)),
    ("worker_id at its limit", started(worker_id="w" * 200)),
    ("worker_id punctuation", started(worker_id="host-1.example:worker_2@pod")),
    (
        "heartbeat of 10,000 steps",
        heartbeat(steps=[{"run_id": str(RUN), "step_id": str(STEP), "attempt": 1}] * 10_000),
    ),
    ("results at the per-message limit", results(*[result(seq=i) for i in range(MAX_RESULTS_PER_MESSAGE)])),
    ("seq at its limit", results(result(seq=10_000_000))),
    ("name at its limit", results(result(name="n" * 500))),
    ("long message, cut later", results(result(message="m" * MAX_WORKER_TEST_MESSAGE))),
    ("200 metrics", results(result(metrics={f"m{i}": i for i in range(200)}))),
    ("null optional fields", results(result(duration_ms=None, message=None, metrics=None))),
    ("outputs null", finished(outputs=None)),
    ("error without retryable", finished(outcome="failed", error={"code": "step_failed", "message": ""})),
]


@pytest.mark.parametrize(("why", "body"), BOUNDS_OK, ids=[why for why, _ in BOUNDS_OK])
def test_worker_events_at_their_bounds(why: str, body: dict[str, Any]) -> None:
    decode_worker_event(orjson.dumps(body))


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def finished_with_outputs(raw_outputs_value: str) -> bytes:
    head = orjson.dumps(finished())[:-1]
    return head + b',"outputs":{"k":' + raw_outputs_value.encode() + b"}}"


def test_deeply_nested_outputs_are_poison() -> None:
    # orjson reads 1024 levels but writes only 254: outputs deeper than that could never be stored.
    # The outputs object counts as level 0: its key "k" holds the lists.
    decode_worker_event(finished_with_outputs(nested(MAX_DEPTH - 1)))
    for depth in (MAX_DEPTH, 300, 1000, 5000):
        with pytest.raises(InvalidMessage):
            decode_worker_event(finished_with_outputs(nested(depth)))


def test_decode_never_raises_anything_else() -> None:
    odd = [
        b"[" * 2000,
        b'{"type": "started", "attempt": 1e400}',
        b'{"type": "results", "results": null}',
        "\ud800".encode("utf-8", "surrogatepass"),
    ]
    for body in odd:
        with pytest.raises(InvalidMessage):
            decode_worker_event(body)
