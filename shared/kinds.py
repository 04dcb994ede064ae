"""The step-kind registry: a kind's params model (checked by the gateway at trigger time) and its
executor (loaded by the worker only). Third-party kinds register through the
`modelruns.step_kinds` entry-point group, each entry pointing at a `StepKind`."""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StringConstraints, field_validator

from shared.errors import StepKindError
from shared.models.api import MAX_TEST_MESSAGE, MAX_TEST_NAME
from shared.states import TestStatus

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "modelruns.step_kinds"


class KindParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticResult(KindParams):
    name: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEST_NAME)]
    status: TestStatus
    # Numbers are JSON numbers: strict, so "1" and true are refused rather than coerced.
    duration_ms: Annotated[float, Field(ge=0, strict=True)] | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_TEST_MESSAGE)] | None = None
    metrics: dict[str, StrictFloat] | None = None


class SyntheticParams(KindParams):
    duration_seconds: Annotated[float, Field(ge=0, le=86_400, strict=True)] = 0
    results: Annotated[list[SyntheticResult], Field(max_length=10_000)] = Field(default_factory=list)
    outcome: Literal["succeeded", "failed"] = "succeeded"
    fail_attempts: Annotated[StrictInt, Field(ge=0, le=10)] = 0
    outputs: dict[str, Any] = Field(default_factory=dict)


CALLABLE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


class PythonParams(KindParams):
    callable: Annotated[str, StringConstraints(pattern=CALLABLE_PATTERN.pattern, max_length=300)]
    kwargs: dict[str, Any] = Field(default_factory=dict)


class CommandParams(KindParams):
    argv: Annotated[
        list[Annotated[str, StringConstraints(max_length=8192)]], Field(min_length=1, max_length=1000)
    ]
    env: dict[Annotated[str, StringConstraints(min_length=1, max_length=255)], str] = Field(
        default_factory=dict
    )
    junit_xml: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None

    @field_validator("junit_xml")
    @classmethod
    def _inside_scratch(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or ".." in parts:
            raise ValueError("junit_xml must be a path relative to the step's scratch directory")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if "=" in name:
                raise ValueError(f"environment variable name {name!r} contains '='")
        return value


@dataclass(frozen=True)
class StepKind:
    name: str
    params_model: type[KindParams]
    # "module:attribute" of the executor; imported by workers only, so the gateway needs none of
    # an executor's dependencies.
    executor: str

    def parse_params(self, params: dict[str, Any]) -> KindParams:
        return self.params_model.model_validate(params)

    def load_executor(self) -> Any:
        module, _, attr = self.executor.partition(":")
        return getattr(importlib.import_module(module), attr)


BUILTIN: tuple[StepKind, ...] = (
    StepKind("synthetic", SyntheticParams, "worker.kinds.synthetic:run"),
    StepKind("python", PythonParams, "worker.kinds.python:run"),
    StepKind("command", CommandParams, "worker.kinds.command:run"),
)


@cache
def registry() -> dict[str, StepKind]:
    kinds = {kind.name: kind for kind in BUILTIN}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            kind = entry.load()
        except Exception:
            log.exception("cannot load step kind", extra={"action": "kinds.load", "entry_point": entry.name})
            continue
        if not isinstance(kind, StepKind):
            log.error(
                "entry point is not a StepKind", extra={"action": "kinds.load", "entry_point": entry.name}
            )
            continue
        if kind.name in kinds:
            log.error("step kind registered twice", extra={"action": "kinds.load", "kind": kind.name})
            continue
        kinds[kind.name] = kind
    return kinds


def get_kind(name: str) -> StepKind:
    try:
        return registry()[name]
    except KeyError:
        raise StepKindError(f"unknown step kind {name!r}") from None
