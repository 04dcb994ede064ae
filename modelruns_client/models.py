"""The API's own pydantic models, read leniently: a newer gateway may add fields (the contract
allows it), and an older client must still read the resources it knows."""

from __future__ import annotations

import json
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from modelruns_client.errors import InvalidResponse
from shared.events import TERMINAL_RUN_EVENTS, CloudEvent
from shared.models.api import (
    ModelRef,
    Problem,
    Run,
    RunList,
    Step,
    StepList,
    StepSpec,
    TestResult,
    TestResultList,
    TriggerRequest,
)
from shared.states import TERMINAL_RUN, RunStatus, StepStatus, TestStatus

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "TERMINAL_RUN",
    "ModelRef",
    "Problem",
    "Run",
    "RunEvent",
    "RunList",
    "RunStatus",
    "Step",
    "StepList",
    "StepSpec",
    "StepStatus",
    "TestResult",
    "TestResultList",
    "TestStatus",
    "TriggerRequest",
    "parse",
]


def _known_fields(annotation: Any, value: Any) -> Any:
    """`value` without the keys the models under `annotation` do not declare, at any depth."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        for option in get_args(annotation):
            if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(value, dict):
                return _known_fields(option, value)
        return value
    if origin is list and isinstance(value, list):
        (item,) = get_args(annotation) or (Any,)
        return [_known_fields(item, v) for v in value]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        if annotation.model_config.get("extra") != "forbid":
            return value
        fields = annotation.model_fields
        return {k: _known_fields(fields[k].annotation, v) for k, v in value.items() if k in fields}
    return value


def parse(model: type[M], raw: bytes | str | dict[str, Any]) -> M:
    """Read an answer of the API as `model`; anything unreadable is InvalidResponse."""
    try:
        value = json.loads(raw) if isinstance(raw, bytes | str) else raw
        return model.model_validate(_known_fields(model, value))
    except (ValueError, ValidationError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise InvalidResponse(f"the API's answer is not a {model.__name__}: {detail}") from exc


class RunEvent(CloudEvent):
    """One fact of a run, as the event stream and the results exchange carry it: a CloudEvent whose
    `data` is the run, step or test result resource."""

    @property
    def entity(self) -> Literal["run", "step", "test_result"]:
        entity = self.type.split(".")[1]
        if entity not in ("run", "step", "test_result"):
            raise InvalidResponse(f"unknown event type {self.type!r}")
        return entity  # type: ignore[return-value]

    @property
    def action(self) -> str:
        return self.type.rsplit(".", 1)[-1]

    @property
    def run_id(self) -> str:
        return self.subject.removeprefix("model-runs/")

    @property
    def terminal(self) -> bool:
        """The run's last event: the stream ends after it."""
        return self.type in TERMINAL_RUN_EVENTS

    def resource(self) -> Run | Step | TestResult:
        """`data` as the model its entity names."""
        entity = self.entity
        if entity == "run":
            return parse(Run, self.data)
        if entity == "step":
            return parse(Step, self.data)
        return parse(TestResult, self.data)
