"""Retry policy (API.md: exponential backoff from 1 s, capped at 60 s) and the retry decision, by tables."""

from __future__ import annotations

import math

import pytest

from shared.retry import DEFAULT_POLICY, NEVER_RETRIED_CODES, RetryDecision, RetryPolicy, next_attempt

BACKOFF = [
    (1, 1.0),
    (2, 2.0),
    (3, 4.0),
    (4, 8.0),
    (5, 16.0),
    (6, 32.0),
    (7, 60.0),
    (8, 60.0),
    (9, 60.0),
    (10, 60.0),
    (65, 60.0),
    (1000, 60.0),
    (10**9, 60.0),
]


@pytest.mark.parametrize(("attempt", "delay"), BACKOFF)
def test_default_backoff(attempt: int, delay: float) -> None:
    assert DEFAULT_POLICY.backoff(attempt) == delay


def test_default_policy_is_the_apis() -> None:
    assert RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=60.0) == DEFAULT_POLICY


def test_backoff_never_decreases_and_stays_capped() -> None:
    delays = [DEFAULT_POLICY.backoff(n) for n in range(1, 200)]
    assert delays == sorted(delays)
    assert max(delays) == 60.0
    assert all(math.isfinite(d) for d in delays)


CUSTOM_BACKOFF = [
    (RetryPolicy(0.5, 3.0, 10.0), [0.5, 1.5, 4.5, 10.0, 10.0]),
    (RetryPolicy(2.0, 1.0, 2.0), [2.0, 2.0, 2.0, 2.0, 2.0]),
    (RetryPolicy(0.1, 10.0, 1000.0), [0.1, 1.0, 10.0, 100.0, 1000.0]),
]


@pytest.mark.parametrize(("policy", "delays"), CUSTOM_BACKOFF)
def test_custom_backoff(policy: RetryPolicy, delays: list[float]) -> None:
    assert [policy.backoff(n) for n in range(1, 6)] == pytest.approx(delays)


def test_huge_coefficients_do_not_overflow() -> None:
    policy = RetryPolicy(1.0, 1e10, 60.0)
    assert policy.backoff(1) == 1.0
    assert policy.backoff(500) == 60.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="from 1"):
        DEFAULT_POLICY.backoff(attempt)


INVALID_POLICIES = [
    ({"initial_interval": 0}, "initial_interval"),
    ({"initial_interval": -1}, "initial_interval"),
    ({"backoff_coefficient": 0.99}, "backoff_coefficient"),
    ({"backoff_coefficient": 0}, "backoff_coefficient"),
    ({"initial_interval": 10, "maximum_interval": 5}, "maximum_interval"),
]


@pytest.mark.parametrize(("fields", "word"), INVALID_POLICIES)
def test_policy_validation(fields: dict[str, float], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        RetryPolicy(**fields)


def test_policy_edges_are_valid() -> None:
    RetryPolicy(initial_interval=5, backoff_coefficient=1, maximum_interval=5)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_POLICY.initial_interval = 2.0  # type: ignore[misc]


def test_verdicts_are_never_retried() -> None:
    # API.md: failed tests, not_allowed and params the kind rejects are verdicts; so are a cancel,
    # a failed dependency and what the worker found wrong with the step itself.
    assert {
        "tests_failed",
        "not_allowed",
        "invalid_params",
        "unknown_kind",
        "invalid_outputs",
        "invalid_junit",
        "cancelled",
        "dependency_failed",
        "too_many_results",
    } == NEVER_RETRIED_CODES


NO = RetryDecision(False)

DECISIONS: list[tuple[int, int, str, bool, RetryDecision]] = [
    # attempt, max_attempts, code, retryable -> decision
    (1, 2, "step_failed", True, RetryDecision(True, 1.0)),
    (1, 3, "timeout", True, RetryDecision(True, 1.0)),
    (2, 3, "timeout", True, RetryDecision(True, 2.0)),
    (1, 2, "worker_lost", True, RetryDecision(True, 1.0)),
    (1, 2, "undeliverable", True, RetryDecision(True, 1.0)),
    (1, 2, "worker_shutdown", True, RetryDecision(True, 1.0)),
    (3, 10, "step_failed", True, RetryDecision(True, 4.0)),
    (7, 10, "step_failed", True, RetryDecision(True, 60.0)),
    (9, 10, "worker_lost", True, RetryDecision(True, 60.0)),
    # The last attempt, or past it: no more.
    (1, 1, "step_failed", True, NO),
    (2, 2, "timeout", True, NO),
    (10, 10, "worker_lost", True, NO),
    (11, 10, "step_failed", True, NO),
    # Marked non-retryable by the step's code.
    (1, 5, "step_failed", False, NO),
    (1, 5, "timeout", False, NO),
    # Verdicts, never accidents.
    (1, 5, "tests_failed", True, NO),
    (1, 5, "not_allowed", True, NO),
    (1, 5, "invalid_params", True, NO),
    (1, 5, "cancelled", True, NO),
    (1, 5, "dependency_failed", True, NO),
    (1, 5, "unknown_kind", True, NO),
    (1, 5, "invalid_outputs", True, NO),
    (1, 5, "invalid_junit", True, NO),
    # A code of the step's own, marked retryable by its code, is retried like any accident.
    (1, 2, "data_not_ready", True, RetryDecision(True, 1.0)),
    (1, 2, "data_not_ready", False, NO),
]


@pytest.mark.parametrize(("attempt", "max_attempts", "code", "retryable", "decision"), DECISIONS)
def test_next_attempt(
    attempt: int, max_attempts: int, code: str, retryable: bool, decision: RetryDecision
) -> None:
    assert (
        next_attempt(attempt=attempt, max_attempts=max_attempts, code=code, retryable=retryable) == decision
    )


def test_next_attempt_uses_the_given_policy() -> None:
    policy = RetryPolicy(initial_interval=0.25, backoff_coefficient=2.0, maximum_interval=0.5)
    decide = [
        next_attempt(attempt=n, max_attempts=5, code="timeout", retryable=True, policy=policy).delay_seconds
        for n in range(1, 5)
    ]
    assert decide == [0.25, 0.5, 0.5, 0.5]


def test_a_decision_not_to_retry_has_no_delay() -> None:
    assert next_attempt(attempt=1, max_attempts=1, code="step_failed", retryable=True).delay_seconds == 0.0


def test_every_attempt_of_the_budget_is_used() -> None:
    for max_attempts in range(1, 11):
        retries = 0
        attempt = 1
        while next_attempt(
            attempt=attempt, max_attempts=max_attempts, code="step_failed", retryable=True
        ).retry:
            retries += 1
            attempt += 1
        assert attempt == max_attempts
        assert retries == max_attempts - 1
