"""When a failed attempt runs again: a validated policy and one pure decision."""

from __future__ import annotations

from dataclasses import dataclass

# Verdicts, never retried whatever the reporter says: failed tests, refused code or params, a
# cancel, a failed dependency. Any other error with `retryable` set (a step's own code included)
# is retried while attempts are left.
NEVER_RETRIED_CODES = frozenset(
    {
        "tests_failed",
        "not_allowed",
        "invalid_params",
        "unknown_kind",
        "invalid_outputs",
        "invalid_junit",
        "cancelled",
        "dependency_failed",
        "too_many_results",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_interval <= 0:
            raise ValueError("initial_interval must be positive")
        if self.backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be at least 1")
        if self.maximum_interval < self.initial_interval:
            raise ValueError("maximum_interval must be at least initial_interval")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before the attempt after `attempt` (1-based)."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        # Capped before the power grows huge.
        exponent = min(attempt - 1, 64)
        try:
            delay = self.initial_interval * self.backoff_coefficient**exponent
        except OverflowError:  # a large coefficient can still pass float's range within 64 steps
            return self.maximum_interval
        return min(delay, self.maximum_interval)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_seconds: float = 0.0


def next_attempt(
    *, attempt: int, max_attempts: int, code: str, retryable: bool, policy: RetryPolicy = DEFAULT_POLICY
) -> RetryDecision:
    if not retryable or code in NEVER_RETRIED_CODES or attempt >= max_attempts:
        return RetryDecision(False)
    return RetryDecision(True, policy.backoff(attempt))
