"""Schemathesis against a served gateway: each operation alone with valid and invalid input, then
stateful sequences along the document's OpenAPI links (trigger -> get -> steps -> test-results ->
cancel). Every answer is checked: no 5xx, and status, content type, headers and body as documented.

The suite runs a bounded pass (tests/integration/test_fuzz.py); `python -m bench.fuzz` a longer one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# The event stream of a real run lasts until the run ends; the fuzzer only ever reaches it with
# ids that name nothing, so a short read timeout is no loss.
TIMEOUT = 10.0
STATEFUL_ROUND = 20
VALID_TRIGGER: dict[str, Any] = {
    "model": {"name": "fuzzed", "version": "1"},
    "steps": [
        {"name": "train", "kind": "synthetic", "params": {}},
        {"name": "evaluate", "kind": "synthetic", "params": {}, "depends_on": ["train"]},
    ],
    "labels": {"team": "fuzz"},
}


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    # operationId -> statuses seen in the stateful phase: shows the links were walked.
    stateful: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    rounds_cut: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.requests} requests ({statuses}); {len(self.failures)} failing checks"


def _checker(report: FuzzReport, headers: dict[str, str], phase: str) -> Callable[[Any], None]:
    def exercise(case: Any) -> None:
        started = time.monotonic()
        response = case.call(headers=headers, timeout=TIMEOUT)
        report.slowest = max(
            report.slowest, (time.monotonic() - started, f"{case.method} {case.formatted_path}")
        )
        record(report, case, response, phase)

    return exercise


def record(report: FuzzReport, case: Any, response: Any, phase: str) -> None:
    with report._lock:
        report.requests += 1
        report.statuses[response.status_code] += 1
        if phase == "stateful":
            report.stateful.setdefault(case.operation.definition.raw["operationId"], Counter())[
                response.status_code
            ] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except (Exception, BaseExceptionGroup) as exc:  # a check's failure: recorded, then the next case
        body = response.text[:300] if hasattr(response, "text") else ""
        with report._lock:
            report.failures.append(
                f"[{phase}] {case.method} {case.formatted_path} -> {response.status_code}: "
                f"{str(exc).strip()[:600]} | body: {body}"
            )


def _settings(examples: int, seed: int, **extra: Any) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        # Failures are recorded, not raised: shrinking would only repeat requests.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        **extra,
    )


def fuzz(base_url: str, key: str, *, examples: int, stateful_examples: int, seed: int = 0) -> FuzzReport:
    """Fuzz the gateway at `base_url` with `key` (both scopes); blocking (run it in a thread)."""
    report = FuzzReport()
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=TIMEOUT)
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise = _checker(report, headers, f"{mode.value} {operation.label}")
            test = hypothesis.given(operation.as_strategy(generation_mode=mode))(exercise)
            # Unsatisfiable: nothing in this operation can be made invalid (no parameters, no body).
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                hypothesis.seed(seed)(_settings(examples, seed)(test))()

    report.seconds["stateless"] = time.monotonic() - started
    started = time.monotonic()
    # A live run's event stream lasts as long as the run: the stateless phase covers the operation,
    # sequences would spend their time waiting on streams.
    base = schema.exclude(operation_id="streamModelRunEvents").as_state_machine()

    triggers = Counter[str]()

    class Machine(base):  # type: ignore[misc, valid-type]
        def before_call(self, case: Any) -> None:
            # Sequences only go deep from runs that exist: every other trigger sends a valid body
            # (random ones almost never pass the step-graph and params checks), and the stateful
            # phase always presents the key (the stateless one also tries without).
            case.headers = {**(case.headers or {}), **headers}
            if case.operation.definition.raw["operationId"] == "triggerModelRun":
                triggers["sent"] += 1
                if triggers["sent"] % 2:
                    case.body = VALID_TRIGGER

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": headers, "timeout": TIMEOUT}

        def validate_response(self, response: Any, case: Any, *args: Any, **kwargs: Any) -> None:
            record(report, case, response, "stateful")

    # In rounds: the server's state changes what a sequence can draw next, which hypothesis may
    # take for a flaky strategy and end the round; the next round goes on with a fresh seed.
    for round_ in range(0, stateful_examples, STATEFUL_ROUND):
        try:
            Machine.run(
                settings=_settings(
                    min(STATEFUL_ROUND, stateful_examples - round_), seed, stateful_step_count=8
                )
            )
        except hypothesis.errors.FlakyStrategyDefinition:
            report.rounds_cut += 1
    report.seconds["stateful"] = time.monotonic() - started
    return report
