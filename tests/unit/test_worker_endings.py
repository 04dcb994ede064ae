"""How an attempt's end is put into its finished event."""

from __future__ import annotations

import math

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings
from worker.attempt import MAX_OUTPUTS_BYTES, checked_outputs, failure, stopped
from worker.service import worker_id_for


def test_failure_keeps_a_valid_code_and_cuts_the_message() -> None:
    ending = failure("missing_data", "x" * 20_000, retryable=False)
    assert ending.outcome == "failed"
    assert ending.error is not None
    assert ending.error.code == "missing_data"
    assert not ending.error.retryable
    assert len(ending.error.message) == 10_000
    assert ending.error.message.endswith(" [truncated]")


@pytest.mark.parametrize("code", ["", "Bad-Code", "x" * 65, "ünï"])
def test_a_code_the_contract_refuses_becomes_step_failed(code: str) -> None:
    ending = failure(code, "boom", retryable=True)
    assert ending.error is not None and ending.error.code == "step_failed"


def test_outputs_must_be_a_json_object_of_bounded_size() -> None:
    assert checked_outputs({"a": [1, 2], "nan": math.nan}).outcome == "succeeded"
    for bad in ([1, 2], "text", {"obj": object()}, {1: "non-string key"}, {"big": "x" * MAX_OUTPUTS_BYTES}):
        ending = checked_outputs(bad)
        assert ending.outcome == "failed", bad
        assert ending.error is not None
        assert (ending.error.code, ending.error.retryable) == ("invalid_outputs", False)


def test_what_each_stop_ends_as() -> None:
    timeout = stopped("timeout_local", 5)
    assert timeout.outcome == "failed"
    assert timeout.error is not None and (timeout.error.code, timeout.error.retryable) == ("timeout", True)
    shutdown = stopped("shutdown", 5)
    assert shutdown.error is not None and (shutdown.error.code, shutdown.error.retryable) == (
        "worker_shutdown",
        True,
    )
    for reason in ("cancelled", "fenced", "worker_lost", "timeout"):
        ending = stopped(reason, 5)
        assert ending.outcome == "cancelled"


def test_worker_id() -> None:
    assert worker_id_for(Settings(worker_id="gpu-7.example:1")) == "gpu-7.example:1"
    generated = worker_id_for(Settings())
    assert generated.rsplit("-", 1)[1].isdigit()
    with pytest.raises(ConfigurationError):
        worker_id_for(Settings(worker_id="has space"))
    with pytest.raises(ConfigurationError):
        worker_id_for(Settings(worker_id="wild.#"))
