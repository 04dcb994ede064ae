"""The client's reading of answers: lenient models, typed errors, events, and its configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelruns_client import errors
from modelruns_client.config import DEFAULT_URL, load_config
from modelruns_client.models import Run, RunEvent, Step, TestResult, parse
from shared.errors import ConfigurationError

TIME = "2026-12-02T05:22:51.123456Z"
COUNTS = {
    "total": 1,
    "pending": 0,
    "queued": 0,
    "running": 1,
    "succeeded": 0,
    "failed": 0,
    "cancelled": 0,
    "skipped": 0,
}
TESTS = {"total": 0, "passed": 0, "failed": 0, "skipped": 0, "error": 0}


def run_json(**extra: Any) -> dict[str, Any]:
    return {
        "id": "r1",
        "status": "running",
        "model": {"name": "iris"},
        "labels": {},
        "parameters": {},
        "fail_fast": False,
        "created_at": TIME,
        "started_at": TIME,
        "finished_at": None,
        "cancel_requested_at": None,
        "step_counts": COUNTS,
        "test_counts": TESTS,
        "error": None,
        **extra,
    }


def test_fields_a_newer_gateway_adds_are_ignored_at_any_depth() -> None:
    newer = run_json(
        priority=3,
        model={"name": "iris", "digest": "sha256:…"},
        step_counts={**COUNTS, "paused": 0},
        error={"code": "step_failed", "message": "m", "step": "train"},
    )
    run = parse(Run, newer)
    assert run.model.name == "iris" and run.step_counts.running == 1 and run.error is not None
    # Free-form objects keep every key.
    assert parse(Run, run_json(parameters={"anything": {"goes": 1}})).parameters == {"anything": {"goes": 1}}


def test_answers_that_are_not_the_model_are_invalid_responses() -> None:
    for raw in (b"<html>", b"[]", b'{"id": "r1"}'):
        with pytest.raises(errors.InvalidResponse):
            parse(Run, raw)


def test_events_give_their_resource() -> None:
    def event(type_: str, data: dict[str, Any]) -> RunEvent:
        body = {
            "specversion": "1.0",
            "id": "e1",
            "source": "/modelruns/orchestrator",
            "type": type_,
            "subject": "model-runs/r1",
            "time": TIME,
            "datacontenttype": "application/json",
            "runseq": 3,
            "data": data,
            "traceparent": "00-…",  # an extension the client does not know
        }
        return parse(RunEvent, body)

    run = event("modelruns.run.succeeded", run_json(status="succeeded"))
    assert (run.entity, run.action, run.run_id, run.terminal) == ("run", "succeeded", "r1", True)
    assert isinstance(run.resource(), Run)
    step = {
        "id": "s1", "run_id": "r1", "name": "train", "kind": "synthetic", "status": "running",
        "depends_on": [], "pool": "default", "attempt": 1, "max_attempts": 1, "timeout_seconds": 60,
        "worker_id": "w", "created_at": TIME, "queued_at": TIME, "started_at": TIME, "finished_at": None,
        "outputs": None, "error": None, "test_counts": TESTS,
    }  # fmt: skip
    started = event("modelruns.step.started", step)
    assert not started.terminal and isinstance(started.resource(), Step)
    result = {
        "id": "t1", "run_id": "r1", "step_id": "s1", "attempt": 1, "name": "acc", "status": "passed",
        "duration_ms": 1.5, "message": None, "metrics": {"acc": 0.9}, "created_at": TIME,
    }  # fmt: skip
    assert isinstance(event("modelruns.test_result.reported", result).resource(), TestResult)
    with pytest.raises(errors.InvalidResponse):
        _ = event("modelruns.worker.joined", {}).entity


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (400, b'{"type": "/problems/validation-error", "title": "Invalid request", "status": 400, "code": "validation_error"}', errors.BadRequest, "validation_error"),
        (400, b'{"type": "t", "title": "t", "status": 400, "code": "idempotency_key_reused"}', errors.IdempotencyKeyReused, "idempotency_key_reused"),
        (401, b'{"type": "t", "title": "t", "status": 401, "code": "unauthorized"}', errors.Unauthorized, "unauthorized"),
        (403, b'{"type": "t", "title": "t", "status": 403, "code": "forbidden"}', errors.Forbidden, "forbidden"),
        (404, b'{"type": "t", "title": "t", "status": 404, "code": "not_found"}', errors.NotFound, "not_found"),
        (405, b'{"type": "t", "title": "t", "status": 405, "code": "method_not_allowed"}', errors.ApiError, "method_not_allowed"),
        (413, b"", errors.PayloadTooLarge, "error"),
        (429, b'{"type": "t", "title": "t", "status": 429, "code": "rate_limited"}', errors.RateLimited, "rate_limited"),
        (500, b'{"type": "t", "title": "t", "status": 500, "code": "internal", "request_id": "abc"}', errors.ServerError, "internal"),
        (502, b"<html>bad gateway</html>", errors.ServerError, "error"),
        (503, b'{"code": "unavailable"}', errors.ServiceUnavailable, "unavailable"),
        (504, b'{"code": 7}', errors.ServerError, "error"),
        (400, b'{"code": "validation_error", "errors": ["not", "pointers"]}', errors.BadRequest, "validation_error"),
    ],
)  # fmt: skip
def test_errors_are_typed_by_code_then_status(status: int, body: bytes, cls: type, code: str) -> None:
    error = errors.api_error(status, body, retry_after=2.0)
    assert type(error) is cls and error.status == status and error.code == code
    assert error.retry_after == 2.0 and "\n" not in str(error)
    assert str(error).startswith(f"{status} {code}: ")


def test_the_problem_is_kept_whole() -> None:
    body = b'{"type": "/problems/x", "title": "T", "status": 400, "code": "validation_error", "detail": "d", "errors": [{"pointer": "/a", "detail": "b"}], "request_id": "r", "extra": 1}'
    error = errors.api_error(400, body)
    assert error.problem.errors is not None and error.problem.errors[0].pointer == "/a"
    assert (error.detail, error.request_id, error.problem.model_extra) == ("d", "r", {"extra": 1})


def test_configuration_arguments_then_environment_then_file(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('url = "http://file:1"\napi_key = "file-key"\n')
    env = {"MODELRUNS_CONFIG": str(file)}
    assert load_config(environ=env) == load_config(path=file, environ={})
    assert load_config(environ=env).url == "http://file:1"
    assert load_config(environ={**env, "MODELRUNS_URL": "http://env:2"}).url == "http://env:2"
    assert (
        load_config(url="http://arg:3", environ={**env, "MODELRUNS_URL": "http://env:2"}).url
        == "http://arg:3"
    )
    assert load_config(environ={**env, "MODELRUNS_API_KEY": "env-key"}).api_key == "env-key"
    xdg = tmp_path / "xdg"
    (xdg / "modelruns").mkdir(parents=True)
    (xdg / "modelruns" / "config.toml").write_text('api_key = "xdg-key"\n')
    assert load_config(environ={"XDG_CONFIG_HOME": str(xdg)}).api_key == "xdg-key"
    nothing = load_config(environ={"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert (nothing.url, nothing.api_key) == (DEFAULT_URL, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("url = ", "is not TOML"),
        ('url = "x"\napi-key = "k"\n', "unknown keys: api-key"),
        ("api_key = 5\n", "api_key must be strings"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "config.toml"
    file.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        load_config(path=file, environ={})


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(environ={"MODELRUNS_CONFIG": str(tmp_path / "missing.toml")})
