"""The HTTP API's bodies: the trigger request and the resources. The OpenAPI document is generated from these."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, field_validator

from shared.states import RunStatus, StepStatus, TestStatus

STEP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
POOL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

MAX_STEPS = 200
MAX_LABELS = 32
# The request body is capped at 1 MiB; a step's params may use all of it (10,000 synthetic results do).
MAX_PARAMS_BYTES = 1024 * 1024
MAX_TEST_NAME = 500
MAX_TEST_MESSAGE = 10_000


class Strict(BaseModel):
    """Unknown fields anywhere in the schema are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Open(BaseModel):
    model_config = ConfigDict(extra="forbid")


StepName = Annotated[str, StringConstraints(pattern=STEP_NAME_PATTERN.pattern)]
PoolName = Annotated[str, StringConstraints(pattern=POOL_PATTERN.pattern)]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=63)]
LabelValue = Annotated[str, StringConstraints(max_length=255)]


class ModelRef(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    version: Annotated[str, StringConstraints(max_length=100)] | None = None
    uri: Annotated[str, StringConstraints(max_length=2048)] | None = None


class StepSpec(Strict):
    name: StepName
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: Annotated[list[StepName], Field(max_length=MAX_STEPS)] = Field(default_factory=list)
    timeout_seconds: Annotated[StrictInt, Field(ge=1, le=604_800)] = 3600
    max_attempts: Annotated[StrictInt, Field(ge=1, le=10)] = 1
    pool: PoolName = "default"
    allow_test_failures: StrictBool = False


class TriggerRequest(Strict):
    model: ModelRef
    steps: Annotated[list[StepSpec], Field(min_length=1, max_length=MAX_STEPS)]
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    fail_fast: StrictBool = False

    @field_validator("labels")
    @classmethod
    def _label_count(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        return value


class StepCounts(Strict):
    total: int = 0
    pending: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0


class TestCounts(Strict):
    __test__ = False

    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    error: int = 0


class ErrorInfo(Strict):
    code: str
    message: str


class Run(Strict):
    id: str
    status: RunStatus
    model: ModelRef
    labels: dict[str, str]
    parameters: dict[str, Any]
    fail_fast: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    step_counts: StepCounts
    test_counts: TestCounts
    error: ErrorInfo | None


class Step(Strict):
    id: str
    run_id: str
    name: str
    kind: str
    status: StepStatus
    depends_on: list[str]
    pool: str
    attempt: int
    max_attempts: int
    timeout_seconds: int
    worker_id: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    outputs: dict[str, Any] | None
    error: ErrorInfo | None
    test_counts: TestCounts


class TestResult(Strict):
    __test__ = False

    id: str
    run_id: str
    step_id: str
    attempt: int
    name: str
    status: TestStatus
    duration_ms: float | None
    message: str | None
    metrics: dict[str, float] | None
    created_at: datetime


class RunList(Strict):
    model_runs: list[Run]
    next_page_token: str | None


class StepList(Strict):
    steps: list[Step]


class TestResultList(Strict):
    __test__ = False

    test_results: list[TestResult]
    next_page_token: str | None


class ProblemError(Strict):
    pointer: str
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine `code`."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    code: str
    request_id: str | None = None
    errors: list[ProblemError] | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    postgres: Literal["ok", "down"] | None = None
    rabbitmq: Literal["ok", "down"] | None = None


def empty_test_counts() -> dict[str, int]:
    return TestCounts().model_dump()


def step_counts_of(statuses: list[StepStatus]) -> dict[str, int]:
    counts = StepCounts(total=len(statuses)).model_dump()
    for status in statuses:
        counts[status.value] += 1
    return counts
