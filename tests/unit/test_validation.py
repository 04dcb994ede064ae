"""Trigger validation (API.md "Trigger a run"): every rule, its limits, and the pointers it reports."""

from __future__ import annotations

import copy
import operator
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.kinds import registry
from shared.models.api import MAX_PARAMS_BYTES, POOL_PATTERN, STEP_NAME_PATTERN, TriggerRequest
from shared.models.validation import MAX_DEPTH, RequestInvalid, validate_trigger

API_EXAMPLE: dict[str, Any] = {
    "model": {"name": "iris-classifier", "version": "1.4.0", "uri": "s3://models/iris/1.4.0"},
    "steps": [
        {
            "name": "train",
            "kind": "python",
            "params": {"callable": "examples.iris:train", "kwargs": {"c": 1.0}},
        },
        {
            "name": "evaluate",
            "kind": "python",
            "depends_on": ["train"],
            "params": {"callable": "examples.iris:evaluate", "kwargs": {"min_accuracy": 0.9}},
            "timeout_seconds": 600,
            "max_attempts": 2,
        },
    ],
    "labels": {"team": "vision"},
    "parameters": {"dataset": "iris"},
    "fail_fast": False,
}

# A valid params object for each built-in kind.
KIND_PARAMS: dict[str, dict[str, Any]] = {
    "synthetic": {},
    "python": {"callable": "examples.iris:train"},
    "command": {"argv": ["true"]},
}


def step(name: Any = "a", kind: Any = "synthetic", **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "params": copy.deepcopy(KIND_PARAMS.get(kind, {})), **fields}


def trigger(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": {"name": "m"}, "steps": list(steps) or [step()], **fields}


def with_model(**model: Any) -> dict[str, Any]:
    return trigger(model={"name": "m", **model})


def with_params(kind: str, **params: Any) -> dict[str, Any]:
    return trigger({"name": "a", "kind": kind, "params": {**KIND_PARAMS[kind], **params}})


def invalid(body: Any) -> RequestInvalid:
    with pytest.raises(RequestInvalid) as caught:
        validate_trigger(body)
    exc = caught.value
    assert exc.errors, "a refusal names at least one problem"
    assert exc.detail
    return exc


def pointers(body: Any) -> list[str]:
    return [ptr for ptr, _ in invalid(body).errors]


def assert_refused_at(body: Any, ptr: str, *words: str) -> None:
    errors = dict(invalid(body).errors)
    assert ptr in errors, f"expected an error at {ptr!r}, got {errors}"
    for word in words:
        assert word in errors[ptr], f"{word!r} not in {errors[ptr]!r}"


# --- valid bodies -------------------------------------------------------------------------------


def test_api_example_is_valid() -> None:
    request = validate_trigger(copy.deepcopy(API_EXAMPLE))
    assert isinstance(request, TriggerRequest)
    assert request.model.name == "iris-classifier"
    train, evaluate = request.steps
    assert (train.timeout_seconds, train.max_attempts, train.pool, train.allow_test_failures) == (
        3600,
        1,
        "default",
        False,
    )
    assert train.depends_on == []
    assert evaluate.depends_on == ["train"]
    assert (evaluate.timeout_seconds, evaluate.max_attempts) == (600, 2)
    assert request.labels == {"team": "vision"}
    assert request.parameters == {"dataset": "iris"}
    assert request.fail_fast is False


def test_minimal_body_takes_the_defaults() -> None:
    request = validate_trigger({"model": {"name": "m"}, "steps": [{"name": "a", "kind": "synthetic"}]})
    assert request.labels == {}
    assert request.parameters == {}
    assert request.fail_fast is False
    assert request.model.version is None and request.model.uri is None
    assert request.steps[0].params == {}


@pytest.mark.parametrize("kind", sorted(KIND_PARAMS))
def test_each_builtin_kind_is_known(kind: str) -> None:
    assert kind in registry()
    validate_trigger(trigger(step(kind=kind)))


def test_every_field_at_once() -> None:
    validate_trigger(
        trigger(
            step(
                "a",
                "synthetic",
                params={
                    "duration_seconds": 0.5,
                    "results": [
                        {
                            "name": "t",
                            "status": "passed",
                            "duration_ms": 1,
                            "message": "ok",
                            "metrics": {"x": 1},
                        },
                        {"name": "u", "status": "error"},
                    ],
                    "outcome": "failed",
                    "fail_attempts": 2,
                    "outputs": {"any": {"thing": [1, None]}},
                },
                timeout_seconds=1,
                max_attempts=10,
                pool="gpu.large_1-x",
                allow_test_failures=True,
            ),
            step(
                "b",
                "python",
                depends_on=["a"],
                params={"callable": "pkg.mod:fn", "kwargs": {"any": [1, {"k": None}]}},
            ),
            step(
                "c",
                "command",
                depends_on=["a", "b"],
                params={"argv": ["pytest", "-q"], "env": {"A": "1"}, "junit_xml": "reports/junit.xml"},
            ),
            labels={"team": "vision", "k" * 63: "v" * 255},
            parameters={"nested": {"deep": [1, 2.5, "x", True, None]}},
            fail_fast=True,
            model={"name": "n" * 200, "version": "v" * 100, "uri": "u" * 2048},
        )
    )


def test_any_unicode_is_accepted() -> None:
    request = validate_trigger(
        trigger(
            model={"name": "modèle 🚀 \u202e ‮ 模型", "version": "\t\n"},
            labels={"équipe": "визия"},
            parameters={"ключ": "値", "emoji": "🎉"},
        )
    )
    assert request.model.name.startswith("modèle")


def test_dependencies_may_point_forward_and_form_a_diamond() -> None:
    validate_trigger(
        trigger(
            step("join", depends_on=["left", "right"]),
            step("left", depends_on=["root"]),
            step("right", depends_on=["root"]),
            step("root"),
        )
    )


# --- non-object bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], [API_EXAMPLE], "x", "", 1, 1.5, None, True, False])
def test_body_must_be_an_object(body: Any) -> None:
    exc = invalid(body)
    assert exc.errors == [("", "expected an object")]
    assert "object" in exc.detail


@pytest.mark.parametrize("missing", ["model", "steps"])
def test_required_top_level_fields(missing: str) -> None:
    body = trigger()
    del body[missing]
    assert_refused_at(body, f"/{missing}", "required")


def test_model_name_is_required() -> None:
    assert_refused_at(trigger(model={"version": "1"}), "/model/name", "required")


@pytest.mark.parametrize("missing", ["name", "kind"])
def test_required_step_fields(missing: str) -> None:
    s = step()
    del s[missing]
    assert_refused_at(trigger(step("ok"), s), f"/steps/1/{missing}", "required")


# --- the graph ----------------------------------------------------------------------------------


def test_unknown_dependency_is_pointed_at() -> None:
    body = copy.deepcopy(API_EXAMPLE)
    body["steps"][1]["depends_on"] = ["trian"]
    exc = invalid(body)
    assert exc.errors == [("/steps/1/depends_on/0", "unknown step 'trian'")]
    assert exc.detail.startswith("steps[1].depends_on[0]")
    assert "trian" in exc.detail


def test_unknown_dependency_after_known_ones() -> None:
    assert pointers(trigger(step("a"), step("b"), step("c", depends_on=["a", "b", "zz"]))) == [
        "/steps/2/depends_on/2"
    ]


def test_self_dependency() -> None:
    assert_refused_at(trigger(step("a"), step("b", depends_on=["a", "b"])), "/steps/1/depends_on/1", "itself")


def test_duplicate_names() -> None:
    exc = invalid(trigger(step("a"), step("b"), step("a")))
    assert exc.errors == [("/steps/2/name", "duplicate step name 'a' (also steps[0])")]


def test_duplicate_dependency() -> None:
    assert_refused_at(trigger(step("a"), step("b", depends_on=["a", "a"])), "/steps/1/depends_on/1", "twice")


def test_two_node_cycle() -> None:
    exc = invalid(trigger(step("a", depends_on=["b"]), step("b", depends_on=["a"])))
    assert [p for p, _ in exc.errors] == ["/steps"]
    detail = exc.errors[0][1]
    assert "cycle" in detail
    assert "a" in detail and "b" in detail


def test_three_node_cycle() -> None:
    exc = invalid(
        trigger(
            step("root"),
            step("x", depends_on=["root", "z"]),
            step("y", depends_on=["x"]),
            step("z", depends_on=["y"]),
        )
    )
    assert [p for p, _ in exc.errors] == ["/steps"]
    path = exc.errors[0][1].split(": ", 1)[1].split(" -> ")
    assert path[0] == path[-1]
    assert set(path) == {"x", "y", "z"}


def test_every_problem_is_reported_at_once() -> None:
    exc = invalid(trigger(step("a"), step("a", depends_on=["a", "nope"]), step("c", depends_on=["a", "a"])))
    assert [p for p, _ in exc.errors] == [
        "/steps/1/name",
        "/steps/1/depends_on/0",
        "/steps/1/depends_on/1",
        "/steps/2/depends_on/1",
    ]


def test_invalid_dependency_name_is_a_field_error() -> None:
    assert_refused_at(trigger(step("a", depends_on=["not a name"])), "/steps/0/depends_on/0")


# --- kinds and their params ---------------------------------------------------------------------


def test_unknown_kind() -> None:
    exc = invalid(trigger(step("a"), step("b", kind="quantum")))
    assert [p for p, _ in exc.errors] == ["/steps/1/kind"]
    assert "quantum" in exc.errors[0][1]
    assert "synthetic" in exc.errors[0][1]


@pytest.mark.parametrize("kind", ["", "k" * 65])
def test_kind_name_limits(kind: str) -> None:
    assert_refused_at(trigger(step(kind=kind)), "/steps/0/kind")


SYNTHETIC_REJECTS: list[tuple[dict[str, Any], str]] = [
    ({"duration_seconds": -0.001}, "/steps/0/params/duration_seconds"),
    ({"duration_seconds": 86_400.5}, "/steps/0/params/duration_seconds"),
    ({"duration_seconds": "1"}, "/steps/0/params/duration_seconds"),
    ({"duration_seconds": True}, "/steps/0/params/duration_seconds"),
    ({"duration_seconds": None}, "/steps/0/params/duration_seconds"),
    ({"outcome": "maybe"}, "/steps/0/params/outcome"),
    ({"outcome": "cancelled"}, "/steps/0/params/outcome"),
    ({"fail_attempts": -1}, "/steps/0/params/fail_attempts"),
    ({"fail_attempts": 11}, "/steps/0/params/fail_attempts"),
    ({"fail_attempts": 1.0}, "/steps/0/params/fail_attempts"),
    ({"fail_attempts": True}, "/steps/0/params/fail_attempts"),
    ({"fail_attempts": "1"}, "/steps/0/params/fail_attempts"),
    ({"outputs": []}, "/steps/0/params/outputs"),
    ({"results": {}}, "/steps/0/params/results"),
    ({"results": [{"status": "passed"}]}, "/steps/0/params/results/0/name"),
    ({"results": [{"name": "", "status": "passed"}]}, "/steps/0/params/results/0/name"),
    ({"results": [{"name": "n" * 501, "status": "passed"}]}, "/steps/0/params/results/0/name"),
    ({"results": [{"name": "t"}]}, "/steps/0/params/results/0/status"),
    ({"results": [{"name": "t", "status": "ok"}]}, "/steps/0/params/results/0/status"),
    (
        {"results": [{"name": "t", "status": "passed", "duration_ms": -1}]},
        "/steps/0/params/results/0/duration_ms",
    ),
    (
        {"results": [{"name": "t", "status": "passed", "duration_ms": "1"}]},
        "/steps/0/params/results/0/duration_ms",
    ),
    (
        {"results": [{"name": "t", "status": "passed", "message": "m" * 10_001}]},
        "/steps/0/params/results/0/message",
    ),
    (
        {"results": [{"name": "t", "status": "passed", "metrics": {"a": "1"}}]},
        "/steps/0/params/results/0/metrics/a",
    ),
    (
        {"results": [{"name": "t", "status": "passed", "metrics": {"a": False}}]},
        "/steps/0/params/results/0/metrics/a",
    ),
    ({"results": [{"name": "t", "status": "passed"}] * 10_001}, "/steps/0/params/results"),
]


@pytest.mark.parametrize(("params", "ptr"), SYNTHETIC_REJECTS, ids=[p for _, p in SYNTHETIC_REJECTS])
def test_synthetic_params_rejected(params: dict[str, Any], ptr: str) -> None:
    assert_refused_at(with_params("synthetic", **params), ptr)


def test_synthetic_params_at_their_limits() -> None:
    validate_trigger(
        with_params(
            "synthetic",
            duration_seconds=86_400,
            fail_attempts=10,
            results=[{"name": "n" * 500, "status": "skipped", "message": "m" * 10_000, "duration_ms": 0}],
        )
    )
    # As many results as API.md allows, as small as they come, fit a step's params.
    validate_trigger(
        with_params("synthetic", results=[{"name": f"t{i}", "status": "passed"} for i in range(10_000)])
    )
    validate_trigger(with_params("synthetic", duration_seconds=0, fail_attempts=0, results=[]))


PYTHON_REJECTS: list[tuple[dict[str, Any], str]] = [
    ({"callable": None}, "/steps/0/params/callable"),
    ({"callable": "no_colon"}, "/steps/0/params/callable"),
    ({"callable": "pkg.mod:"}, "/steps/0/params/callable"),
    ({"callable": ":fn"}, "/steps/0/params/callable"),
    ({"callable": "pkg..mod:fn"}, "/steps/0/params/callable"),
    ({"callable": "pkg.mod:fn.attr"}, "/steps/0/params/callable"),
    ({"callable": "1pkg:fn"}, "/steps/0/params/callable"),
    ({"callable": "os:system; rm"}, "/steps/0/params/callable"),
    ({"callable": "a" * 300 + ":f"}, "/steps/0/params/callable"),
    ({"callable": 5}, "/steps/0/params/callable"),
    ({"kwargs": []}, "/steps/0/params/kwargs"),
    ({"kwargs": "x"}, "/steps/0/params/kwargs"),
]


@pytest.mark.parametrize(("params", "ptr"), PYTHON_REJECTS, ids=[p for _, p in PYTHON_REJECTS])
def test_python_params_rejected(params: dict[str, Any], ptr: str) -> None:
    assert_refused_at(with_params("python", **params), ptr)


def test_python_callable_is_required() -> None:
    assert_refused_at(trigger(step(kind="python", params={})), "/steps/0/params/callable", "required")


COMMAND_REJECTS: list[tuple[dict[str, Any], str]] = [
    ({"argv": []}, "/steps/0/params/argv"),
    ({"argv": "true"}, "/steps/0/params/argv"),
    ({"argv": ["ok", 1]}, "/steps/0/params/argv/1"),
    ({"argv": ["x" * 8193]}, "/steps/0/params/argv/0"),
    ({"argv": ["x"] * 1001}, "/steps/0/params/argv"),
    ({"env": []}, "/steps/0/params/env"),
    ({"env": {"A": 1}}, "/steps/0/params/env/A"),
    ({"env": {"A=B": "1"}}, "/steps/0/params/env"),
    ({"env": {"": "1"}}, "/steps/0/params/env/"),
    ({"junit_xml": ""}, "/steps/0/params/junit_xml"),
    ({"junit_xml": "/etc/passwd"}, "/steps/0/params/junit_xml"),
    ({"junit_xml": "../escape.xml"}, "/steps/0/params/junit_xml"),
    ({"junit_xml": "reports/../../escape.xml"}, "/steps/0/params/junit_xml"),
    ({"junit_xml": "reports\\..\\..\\escape.xml"}, "/steps/0/params/junit_xml"),
    ({"junit_xml": 1}, "/steps/0/params/junit_xml"),
]


@pytest.mark.parametrize(("params", "ptr"), COMMAND_REJECTS, ids=[p for _, p in COMMAND_REJECTS])
def test_command_params_rejected(params: dict[str, Any], ptr: str) -> None:
    assert_refused_at(with_params("command", **params), ptr)


def test_command_argv_is_required() -> None:
    assert_refused_at(trigger(step(kind="command", params={})), "/steps/0/params/argv", "required")


def test_params_of_a_later_step_are_pointed_at() -> None:
    assert pointers(trigger(step("a"), step("b", kind="python", params={"callable": "bad"}))) == [
        "/steps/1/params/callable"
    ]


# --- unknown fields -----------------------------------------------------------------------------

UNKNOWN_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({**trigger(), "bogus": 1}, "/bogus"),
    (trigger(model={"name": "m", "bogus": 1}), "/model/bogus"),
    (trigger(step("a"), {**step("b"), "bogus": 1}), "/steps/1/bogus"),
    (with_params("synthetic", bogus=1), "/steps/0/params/bogus"),
    (
        with_params("synthetic", results=[{"name": "t", "status": "passed", "bogus": 1}]),
        "/steps/0/params/results/0/bogus",
    ),
    (with_params("python", bogus=1), "/steps/0/params/bogus"),
    (with_params("command", bogus=1), "/steps/0/params/bogus"),
    # A near-miss of a real name is still unknown.
    (trigger(step("a", dependsOn=["x"])), "/steps/0/dependsOn"),
    ({**trigger(), "failFast": True}, "/failFast"),
]


@pytest.mark.parametrize(("body", "ptr"), UNKNOWN_FIELDS, ids=[p for _, p in UNKNOWN_FIELDS])
def test_unknown_fields_anywhere(body: dict[str, Any], ptr: str) -> None:
    errors = dict(invalid(body).errors)
    assert errors.get(ptr) == f"unknown field {ptr.rsplit('/', 1)[1]!r}"


def test_free_form_objects_take_any_keys() -> None:
    validate_trigger(
        trigger(
            step(
                "a",
                params={
                    "outputs": {"bogus": 1},
                    "results": [{"name": "t", "status": "passed", "metrics": {"any": 1}}],
                },
            ),
            step("b", kind="python", params={"callable": "m:f", "kwargs": {"bogus": {"deeper": 1}}}),
            step("c", kind="command", params={"argv": ["x"], "env": {"BOGUS": "1"}}),
            parameters={"bogus": {"anything": [1]}},
        )
    )


# --- limits -------------------------------------------------------------------------------------

LIMITS_OK: list[dict[str, Any]] = [
    with_model(name="n"),
    with_model(name="n" * 200),
    with_model(version=""),
    with_model(version="v" * 100),
    with_model(uri=""),
    with_model(uri="u" * 2048),
    trigger(labels={f"k{i}": "v" for i in range(32)}),
    trigger(labels={"k" * 63: ""}),
    trigger(labels={"k": "v" * 255}),
    trigger(*[step(f"s{i}") for i in range(200)]),
    trigger(step(timeout_seconds=1)),
    trigger(step(timeout_seconds=604_800)),
    trigger(step(max_attempts=1)),
    trigger(step(max_attempts=10)),
    trigger(step(pool="a")),
    trigger(step(pool="0" + "a" * 63)),
    trigger(step(pool="gpu.a100_x-2")),
    trigger(step("A")),
    trigger(step("a" * 64)),
    trigger(step("Train.v2_final-1")),
    trigger(step("0")),
]


@pytest.mark.parametrize("body", LIMITS_OK)
def test_at_the_limits(body: dict[str, Any]) -> None:
    validate_trigger(body)


LIMITS_BAD: list[tuple[dict[str, Any], str]] = [
    (with_model(name=""), "/model/name"),
    (with_model(name="n" * 201), "/model/name"),
    (with_model(version="v" * 101), "/model/version"),
    (with_model(uri="u" * 2049), "/model/uri"),
    (trigger(labels={f"k{i}": "v" for i in range(33)}), "/labels"),
    (trigger(labels={"k" * 64: "v"}), "/labels/" + "k" * 64),
    (trigger(labels={"": "v"}), "/labels/"),
    (trigger(labels={"k": "v" * 256}), "/labels/k"),
    (trigger(*[step(f"s{i}") for i in range(201)]), "/steps"),
    ({"model": {"name": "m"}, "steps": []}, "/steps"),
    (trigger(step(timeout_seconds=0)), "/steps/0/timeout_seconds"),
    (trigger(step(timeout_seconds=-1)), "/steps/0/timeout_seconds"),
    (trigger(step(timeout_seconds=604_801)), "/steps/0/timeout_seconds"),
    (trigger(step(timeout_seconds=10**30)), "/steps/0/timeout_seconds"),
    (trigger(step(max_attempts=0)), "/steps/0/max_attempts"),
    (trigger(step(max_attempts=11)), "/steps/0/max_attempts"),
    (trigger(step(pool="")), "/steps/0/pool"),
    (trigger(step(pool="GPU")), "/steps/0/pool"),
    (trigger(step(pool="-gpu")), "/steps/0/pool"),
    (trigger(step(pool=".gpu")), "/steps/0/pool"),
    (trigger(step(pool="gpu pool")), "/steps/0/pool"),
    (trigger(step(pool="gpu/a")), "/steps/0/pool"),
    (trigger(step(pool="a" * 65)), "/steps/0/pool"),
    (trigger(step(pool="gpu\n")), "/steps/0/pool"),
    (trigger(step("")), "/steps/0/name"),
    (trigger(step("a" * 65)), "/steps/0/name"),
    (trigger(step("_train")), "/steps/0/name"),
    (trigger(step("-train")), "/steps/0/name"),
    (trigger(step(".train")), "/steps/0/name"),
    (trigger(step("train step")), "/steps/0/name"),
    (trigger(step("train/1")), "/steps/0/name"),
    (trigger(step("trän")), "/steps/0/name"),
    (trigger(step("train\n")), "/steps/0/name"),
]


@pytest.mark.parametrize(("body", "ptr"), LIMITS_BAD, ids=[p[:40] for _, p in LIMITS_BAD])
def test_over_the_limits(body: dict[str, Any], ptr: str) -> None:
    assert ptr in pointers(body)


def test_label_key_errors_point_at_the_entry() -> None:
    errors = dict(invalid(trigger(labels={"k" * 64: "v"})).errors)
    assert errors["/labels/" + "k" * 64].startswith("invalid key:")


def test_params_size_limit() -> None:
    assert_refused_at(
        with_params("python", kwargs={"blob": "x" * MAX_PARAMS_BYTES}), "/steps/0/params", "larger than"
    )


def test_nesting_limit() -> None:
    def nest(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return value

    # `parameters` is at depth 1: 62 lists inside it stay within MAX_DEPTH levels, 63 do not.
    validate_trigger(trigger(parameters={"k": nest(MAX_DEPTH - 2)}))
    exc = invalid(trigger(parameters={"k": nest(MAX_DEPTH - 1)}))
    assert exc.errors == [
        ("/parameters/k" + "/0" * (MAX_DEPTH - 2), f"nested deeper than {MAX_DEPTH} levels")
    ]
    # Far deeper than Python's recursion limit, as a JSON parser may hand over.
    for depth in (300, 1100, 5000):
        invalid(trigger(step(kind="python", params={"callable": "m:f", "kwargs": {"k": nest(depth)}})))
        invalid(trigger(parameters={"k": nest(depth)}))


# --- NUL characters -----------------------------------------------------------------------------

NUL_CASES: list[tuple[dict[str, Any], str]] = [
    (with_model(name="a\x00b"), "/model/name"),
    (with_model(version="\x00"), "/model/version"),
    (with_model(uri="s3://x\x00"), "/model/uri"),
    (trigger(labels={"k\x00": "v"}), "/labels/k\x00"),
    (trigger(labels={"k": "v\x00"}), "/labels/k"),
    (trigger(step("a\x00")), "/steps/0/name"),
    (trigger(step("a\x00", kind="\x00")), "/steps/0/kind"),
    (trigger(step("a"), step("b", depends_on=["a\x00"])), "/steps/1/depends_on/0"),
    (trigger(step(pool="gpu\x00")), "/steps/0/pool"),
    (trigger(parameters={"a": [{"b": ["x", "y\x00"]}]}), "/parameters/a/0/b/1"),
    (trigger(parameters={"a": {"\x00": 1}}), "/parameters/a/\x00"),
    (
        with_params("python", kwargs={"deep": {"er": [{"k\x00ey": None}]}}),
        "/steps/0/params/kwargs/deep/er/0/k\x00ey",
    ),
    (with_params("command", argv=["echo", "\x00"]), "/steps/0/params/argv/1"),
    (with_params("command", env={"A": "\x00"}), "/steps/0/params/env/A"),
    (
        with_params("synthetic", results=[{"name": "t\x00", "status": "passed"}]),
        "/steps/0/params/results/0/name",
    ),
    ({**trigger(), "bo\x00gus": 1}, "/bo\x00gus"),
]


@pytest.mark.parametrize(("body", "ptr"), NUL_CASES, ids=[repr(p) for _, p in NUL_CASES])
def test_nul_characters_anywhere(body: dict[str, Any], ptr: str) -> None:
    exc = invalid(body)
    assert (ptr, "NUL characters are not allowed") in exc.errors
    assert "NUL" in exc.detail


def test_every_nul_is_listed() -> None:
    exc = invalid(trigger(model={"name": "\x00"}, parameters={"a": "\x00", "b\x00": 1}))
    assert sorted(p for p, _ in exc.errors) == ["/model/name", "/parameters/a", "/parameters/b\x00"]


def test_pointer_escapes_slash_and_tilde() -> None:
    assert_refused_at(trigger(labels={"a/b~c": 1}), "/labels/a~1b~0c")


# --- wrong types --------------------------------------------------------------------------------

WRONG_TYPES: list[tuple[dict[str, Any], str]] = [
    (trigger(step(timeout_seconds=True)), "/steps/0/timeout_seconds"),
    (trigger(step(timeout_seconds=False)), "/steps/0/timeout_seconds"),
    (trigger(step(timeout_seconds=60.0)), "/steps/0/timeout_seconds"),
    (trigger(step(timeout_seconds=60.5)), "/steps/0/timeout_seconds"),
    (trigger(step(timeout_seconds="60")), "/steps/0/timeout_seconds"),
    (trigger(step(timeout_seconds=None)), "/steps/0/timeout_seconds"),
    (trigger(step(max_attempts=True)), "/steps/0/max_attempts"),
    (trigger(step(max_attempts=2.0)), "/steps/0/max_attempts"),
    (trigger(step(max_attempts="2")), "/steps/0/max_attempts"),
    (trigger(fail_fast="true"), "/fail_fast"),
    (trigger(fail_fast="false"), "/fail_fast"),
    (trigger(fail_fast=1), "/fail_fast"),
    (trigger(fail_fast=0), "/fail_fast"),
    (trigger(fail_fast=None), "/fail_fast"),
    (trigger(step(allow_test_failures="false")), "/steps/0/allow_test_failures"),
    (trigger(step(allow_test_failures=0)), "/steps/0/allow_test_failures"),
    (trigger(model="iris"), "/model"),
    (trigger(model=None), "/model"),
    (trigger(model={"name": 5}), "/model/name"),
    (trigger(model={"name": "m", "version": 1.4}), "/model/version"),
    (trigger(model={"name": "m", "uri": ["s3://x"]}), "/model/uri"),
    ({"model": {"name": "m"}, "steps": {"a": step()}}, "/steps"),
    ({"model": {"name": "m"}, "steps": "a"}, "/steps"),
    ({"model": {"name": "m"}, "steps": [1]}, "/steps/0"),
    ({"model": {"name": "m"}, "steps": [None]}, "/steps/0"),
    (trigger(step(name=1)), "/steps/0/name"),
    (trigger(step(kind=None)), "/steps/0/kind"),
    (trigger(step(params=[])), "/steps/0/params"),
    (trigger(step(params=None)), "/steps/0/params"),
    (trigger(step(depends_on="a")), "/steps/0/depends_on"),
    (trigger(step(depends_on=None)), "/steps/0/depends_on"),
    (trigger(step(depends_on=[1])), "/steps/0/depends_on/0"),
    (trigger(step(pool=None)), "/steps/0/pool"),
    (trigger(labels=[]), "/labels"),
    (trigger(labels={"k": 1}), "/labels/k"),
    (trigger(labels={"k": None}), "/labels/k"),
    (trigger(labels={"k": True}), "/labels/k"),
    (trigger(parameters=[]), "/parameters"),
    (trigger(parameters="x"), "/parameters"),
    (trigger(parameters=None), "/parameters"),
]


@pytest.mark.parametrize(
    ("body", "ptr"), WRONG_TYPES, ids=[f"{i}:{p}" for i, (_, p) in enumerate(WRONG_TYPES)]
)
def test_wrong_types(body: dict[str, Any], ptr: str) -> None:
    assert ptr in pointers(body)


def test_detail_names_the_first_problem_readably() -> None:
    exc = invalid(trigger(step("a"), step("b", timeout_seconds=0)))
    assert exc.detail.startswith("steps[1].timeout_seconds: ")


# --- properties ---------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-2, max_value=700_000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "\x00", "a", "train", "synthetic", "python", "command", "default", "passed"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

STEP_KEYS = [
    "name",
    "kind",
    "params",
    "depends_on",
    "timeout_seconds",
    "max_attempts",
    "pool",
    "allow_test_failures",
]
PARAM_KEYS = [
    "duration_seconds",
    "results",
    "outcome",
    "fail_attempts",
    "outputs",
    "callable",
    "kwargs",
    "argv",
    "env",
    "junit_xml",
]


def near(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects made mostly of the schema's own keys, so that fuzzing reaches past the first check."""
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=4), values, max_size=min(len(keys), 5))


# Inside the near-valid objects, values stay small: generating them is what costs, not validating.
small_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=4), children, max_size=2)
    ),
    max_leaves=4,
)
near_params = near(PARAM_KEYS, small_values)
near_step = near(
    STEP_KEYS,
    st.one_of(
        small_values, near_params, st.lists(st.sampled_from(["a", "b", "c", "zz", "a\x00"]), max_size=3)
    ),
)
near_body = near(
    ["model", "steps", "labels", "parameters", "fail_fast"],
    st.one_of(
        small_values,
        st.lists(near_step, max_size=3),
        near(["name", "version", "uri"], small_values),
        st.dictionaries(st.text(max_size=70), st.text(max_size=260) | json_scalars, max_size=3),
    ),
)


def resolves(body: Any, ptr: str) -> bool:
    """Whether a JSON pointer names a value inside `body`."""
    node = body
    for raw in ptr.split("/")[1:] if ptr else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def check_refusal(body: Any) -> None:
    try:
        validate_trigger(body)
    except RequestInvalid as exc:
        assert exc.errors
        for ptr, detail in exc.errors:
            assert ptr == "" or ptr.startswith("/")
            assert detail
            # Each pointer names the offending value, or a missing member of an object that exists.
            parent = ptr.rsplit("/", 1)[0] if ptr else ""
            assert resolves(body, ptr) or resolves(body, parent), (ptr, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_is_only_ever_refused_cleanly(body: Any) -> None:
    check_refusal(body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_body)
def test_near_valid_json_is_only_ever_refused_cleanly(body: dict[str, Any]) -> None:
    check_refusal(body)


# The step-name and pool patterns of API.md, spelled as alphabets (faster to draw than from_regex).
_NAME_HEAD = string.ascii_letters + string.digits
_POOL_HEAD = string.ascii_lowercase + string.digits
step_names = st.builds(operator.add, st.sampled_from(_NAME_HEAD), st.text(_NAME_HEAD + "_.-", max_size=63))
pool_names = st.builds(operator.add, st.sampled_from(_POOL_HEAD), st.text(_POOL_HEAD + "_.-", max_size=63))


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(step_names, min_size=1, max_size=25, unique=True))
    steps = []
    for i, name in enumerate(names):
        # Edges only to earlier names: acyclic by construction; the order of the list is then shuffled.
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=min(i, 5))) if i else []
        kind = draw(st.sampled_from(sorted(KIND_PARAMS)))
        spec: dict[str, Any] = {"name": name, "kind": kind, "params": KIND_PARAMS[kind], "depends_on": deps}
        if draw(st.booleans()):
            spec["timeout_seconds"] = draw(st.integers(1, 604_800))
            spec["max_attempts"] = draw(st.integers(1, 10))
            spec["pool"] = draw(pool_names)
            spec["allow_test_failures"] = draw(st.booleans())
        steps.append(spec)
    order = draw(st.permutations(steps))
    return {
        "model": {"name": draw(st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s))},
        "steps": list(order),
        "labels": draw(
            st.dictionaries(
                st.text(min_size=1, max_size=63).filter(lambda s: "\x00" not in s),
                st.text(max_size=255).filter(lambda s: "\x00" not in s),
                max_size=32,
            )
        ),
        "fail_fast": draw(st.booleans()),
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_generated_dags_are_valid(body: dict[str, Any]) -> None:
    request = validate_trigger(body)
    assert [s.name for s in request.steps] == [s["name"] for s in body["steps"]]
    assert [s.depends_on for s in request.steps] == [s["depends_on"] for s in body["steps"]]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags(), st.data())
def test_a_back_edge_makes_a_cycle(body: dict[str, Any], data: st.DataObject) -> None:
    with_deps = [s for s in body["steps"] if s["depends_on"]]
    if not with_deps:
        return
    later = data.draw(st.sampled_from(with_deps))
    target = data.draw(st.sampled_from(later["depends_on"]))
    earlier = next(s for s in body["steps"] if s["name"] == target)
    earlier["depends_on"] = [*earlier["depends_on"], later["name"]]
    exc = invalid(body)
    assert exc.errors == [("/steps", exc.errors[0][1])]
    assert "cycle" in exc.errors[0][1]


@given(step_names, pool_names)
def test_name_strategies_match_the_patterns(name: str, pool: str) -> None:
    assert STEP_NAME_PATTERN.fullmatch(name)
    assert POOL_PATTERN.fullmatch(pool)
