"""One exception root. Driver errors are wrapped at the boundary; HTTP errors live only in the gateway's views."""

from __future__ import annotations


class ModelRunsError(Exception):
    """Root of every error modelruns raises on purpose."""


class ConfigurationError(ModelRunsError):
    """A setting is missing, unknown or invalid."""


class DatabaseUnavailable(ModelRunsError):
    """Postgres could not be reached or dropped the connection."""


class BrokerUnavailable(ModelRunsError):
    """RabbitMQ could not be reached, or a publish was not confirmed."""


class MigrationError(ModelRunsError):
    """The database's applied migrations disagree with the ones shipped."""


class IllegalTransition(ModelRunsError):
    """A state change the state machine does not allow."""


class InvalidMessage(ModelRunsError):
    """An internal message that does not parse: poison, to be dead-lettered."""


class StepKindError(ModelRunsError):
    """A step kind is unknown or its parameters are rejected."""


class StepFailed(ModelRunsError):
    """Raised inside a step to fail the attempt with a code; `retryable=False` stops retries."""

    def __init__(self, message: str, *, code: str = "step_failed", retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
