"""The bundled iris pipeline: its steps called as the worker calls them, its model test suite run as
the `command` step runs it, and its trigger body checked by the gateway's own validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from examples import iris
from examples.artifacts import MODEL_FILE, REPORT_FILE, model_path_from_env
from shared.errors import StepFailed
from shared.messages import ReportedResult
from shared.models.validation import validate_trigger
from shared.states import TestStatus
from worker import junit
from worker.context import Scratch, StepContext

PIPELINE = Path(iris.__file__).with_name("iris-pipeline.json")


def context(
    root: Path, run_id: UUID, name: str, inputs: dict[str, dict[str, Any]] | None = None
) -> StepContext:
    scratch = root / "scratch" / name
    scratch.mkdir(parents=True, exist_ok=True)
    return StepContext(
        run_id=run_id,
        step_id=uuid4(),
        attempt=1,
        name=name,
        tenant_id="acme",
        parameters={"artifacts_root": str(root / "artifacts")},
        inputs=inputs or {},
        params={},
        scratch=Scratch.existing(scratch),
    )


def reported(ctx: StepContext) -> dict[str, ReportedResult]:
    return {result.name: result for result in ctx.results.pending()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, UUID, dict[str, Any]]:
    root = tmp_path_factory.mktemp("iris")
    run_id = uuid4()
    ctx = context(root, run_id, "train")
    outputs = iris.train(ctx, c=1.0)
    results = reported(ctx)
    assert results["training converged"].status is TestStatus.PASSED
    assert results["training converged"].metrics is not None
    return root, run_id, outputs


def test_train_saves_the_model_under_the_run(trained: tuple[Path, UUID, dict[str, Any]]) -> None:
    root, run_id, outputs = trained
    assert outputs["model_path"] == str(root / "artifacts" / str(run_id) / MODEL_FILE)
    assert Path(outputs["model_path"]).is_file()
    assert 0.9 < outputs["train_accuracy"] <= 1.0
    json.dumps(outputs)  # outputs travel as JSON


def test_evaluate_reports_each_threshold(trained: tuple[Path, UUID, dict[str, Any]]) -> None:
    root, run_id, outputs = trained
    ctx = context(root, run_id, "evaluate", {"train": outputs})
    metrics = iris.evaluate(ctx, min_accuracy=0.9, min_recall=0.8)
    results = reported(ctx)
    assert set(results) == {"accuracy >= 0.9"} | {f"recall[{n}] >= 0.8" for n in iris.class_names()}
    assert all(r.status is TestStatus.PASSED for r in results.values())
    accuracy = results["accuracy >= 0.9"]
    assert accuracy.metrics == {"accuracy": metrics["accuracy"], "threshold": 0.9}
    assert accuracy.duration_ms is not None
    assert metrics["test_samples"] == 45
    assert set(metrics["recall"]) == set(iris.class_names())


def test_evaluate_fails_a_threshold_it_misses(trained: tuple[Path, UUID, dict[str, Any]]) -> None:
    root, run_id, outputs = trained
    ctx = context(root, run_id, "evaluate", {"train": outputs})
    iris.evaluate(ctx, min_accuracy=0.999)
    result = reported(ctx)["accuracy >= 0.999"]
    assert result.status is TestStatus.FAILED
    assert result.message is not None and "< 0.999" in result.message


def test_train_reports_a_fit_that_did_not_converge(tmp_path: Path) -> None:
    ctx = context(tmp_path, uuid4(), "train")
    iris.train(ctx, max_iter=2)
    result = reported(ctx)["training converged"]
    assert result.status is TestStatus.FAILED
    assert result.message == "stopped at max_iter=2 before converging"


def test_bad_inputs_fail_without_retries(tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as no_model:
        iris.evaluate(context(tmp_path, uuid4(), "evaluate"))
    assert no_model.value.retryable is False
    with pytest.raises(StepFailed) as bad_c:
        iris.train(context(tmp_path, uuid4(), "train"), c=0)
    assert bad_c.value.retryable is False


def test_report_gathers_the_branches(trained: tuple[Path, UUID, dict[str, Any]]) -> None:
    root, run_id, outputs = trained
    evaluation = iris.evaluate(context(root, run_id, "evaluate", {"train": outputs}))
    ctx = context(root, run_id, "report", {"evaluate": evaluation, "model-tests": {"exit_code": 0}})
    out = iris.report(ctx)
    assert out["report_path"] == str(root / "artifacts" / str(run_id) / REPORT_FILE)
    summary = json.loads(Path(out["report_path"]).read_text())
    assert summary["model_path"] == outputs["model_path"]
    assert summary["model_tests"] == {"exit_code": 0}
    assert summary["evaluation"]["accuracy"] == evaluation["accuracy"]


def test_model_path_comes_from_the_command_environment(tmp_path: Path) -> None:
    assert model_path_from_env({"MODEL_PATH": "/m.pkl", "MODELRUNS_RUN_ID": "r"}) == Path("/m.pkl")
    env = {"MODELRUNS_RUN_ID": "r1", "ARTIFACTS_ROOT": str(tmp_path)}
    assert model_path_from_env(env) == tmp_path / "r1" / MODEL_FILE
    with pytest.raises(LookupError):
        model_path_from_env({})


def pipeline() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(PIPELINE.read_text())
    return body


def test_pipeline_is_a_valid_four_step_dag_with_parallel_branches() -> None:
    request = validate_trigger(pipeline())
    deps = {step.name: set(step.depends_on) for step in request.steps}
    assert deps == {
        "train": set(),
        "evaluate": {"train"},
        "model-tests": {"train"},
        "report": {"evaluate", "model-tests"},
    }
    command = next(step for step in request.steps if step.kind == "command")
    # The python steps and the command are told the same artifacts root.
    assert command.params["env"]["ARTIFACTS_ROOT"] == request.parameters["artifacts_root"]


def test_model_suite_runs_as_the_command_step_runs_it(trained: tuple[Path, UUID, dict[str, Any]]) -> None:
    root, run_id, _ = trained
    step = next(s for s in pipeline()["steps"] if s["name"] == "model-tests")
    argv = [sys.executable if arg == "python" else arg for arg in step["params"]["argv"]]
    scratch = root / "scratch" / "model-tests"
    scratch.mkdir(parents=True, exist_ok=True)
    # The environment the worker gives a command: minimal, with the run id and the step's env.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        "MODELRUNS_RUN_ID": str(run_id),
        "MODELRUNS_SCRATCH_DIR": str(scratch),
        "ARTIFACTS_ROOT": str(root / "artifacts"),
    }
    done = subprocess.run(
        argv, cwd=scratch, env=env, capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cases = junit.parse((scratch / step["params"]["junit_xml"]).read_bytes())
    assert len(cases) == 4
    assert {case.status for case in cases} == {TestStatus.PASSED}
