"""A real pipeline on a dataset that ships inside scikit-learn (no download): train a logistic
regression on iris, evaluate it on a held-out split against thresholds, write a report.

Each function is a `python` step: the worker calls it as `fn(ctx, **kwargs)` and stores what it
returns as the step's outputs. Test results go to `ctx.report(...)` as they are decided.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, recall_score
from sklearn.model_selection import train_test_split

from examples.artifacts import MODEL_FILE, REPORT_FILE, run_dir
from shared.errors import StepFailed
from shared.states import TestStatus

SEED = 42
TEST_SIZE = 0.3


class Context(Protocol):
    """What these steps use of the worker's StepContext."""

    @property
    def run_id(self) -> object: ...

    @property
    def parameters(self) -> Mapping[str, Any]: ...

    @property
    def inputs(self) -> Mapping[str, Mapping[str, Any]]: ...

    def report(
        self,
        name: str,
        status: TestStatus,
        *,
        duration_ms: float | None = None,
        message: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> object: ...


def split() -> tuple[Any, Any, Any, Any]:
    """The fixed train/test split every step and the model tests agree on: x_train, x_test, y_train, y_test."""
    data = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=TEST_SIZE, random_state=SEED, stratify=data.target
    )
    return x_train, x_test, y_train, y_test


def class_names() -> list[str]:
    return [str(name) for name in load_iris().target_names]


def load_model(path: str | Path) -> Any:
    # The file was written by this pipeline's own train step; pickles from elsewhere are not to be loaded.
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _save_model(model: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A retried attempt rewrites the file: write aside and rename, so a reader never sees half a model.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(model, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _verdict(ok: bool) -> TestStatus:
    return TestStatus.PASSED if ok else TestStatus.FAILED


def train(ctx: Context, c: float = 1.0, max_iter: int = 200) -> dict[str, Any]:
    """Fit the model on the training split and save it under the run's artifacts directory."""
    if not c > 0 or max_iter < 1:
        raise StepFailed(f"invalid kwargs: c={c!r}, max_iter={max_iter!r}", retryable=False)
    x_train, _, y_train, _ = split()
    model = LogisticRegression(C=float(c), max_iter=int(max_iter))
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Not converging is reported as a failed test below, not as a warning nobody reads.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    fit_ms = (time.perf_counter() - started) * 1000
    iterations = int(max(model.n_iter_))
    converged = iterations < max_iter
    ctx.report(
        "training converged",
        _verdict(converged),
        duration_ms=fit_ms,
        message=None if converged else f"stopped at max_iter={max_iter} before converging",
        metrics={"iterations": float(iterations), "max_iter": float(max_iter)},
    )
    train_accuracy = float(model.score(x_train, y_train))
    path = run_dir(str(ctx.run_id), ctx.parameters) / MODEL_FILE
    _save_model(model, path)
    return {"model_path": str(path), "train_accuracy": train_accuracy, "iterations": iterations}


def evaluate(ctx: Context, min_accuracy: float = 0.9, min_recall: float = 0.8) -> dict[str, Any]:
    """Score the trained model on the held-out split; each threshold is one test result."""
    model_path = ctx.inputs.get("train", {}).get("model_path")
    if not isinstance(model_path, str):
        raise StepFailed("evaluate needs the output 'model_path' of a step named 'train'", retryable=False)
    model = load_model(model_path)
    _, x_test, _, y_test = split()
    started = time.perf_counter()
    predicted = model.predict(x_test)
    predict_ms = (time.perf_counter() - started) * 1000
    accuracy = float(accuracy_score(y_test, predicted))
    ctx.report(
        f"accuracy >= {min_accuracy}",
        _verdict(accuracy >= min_accuracy),
        duration_ms=predict_ms,
        message=None if accuracy >= min_accuracy else f"accuracy {accuracy:.3f} < {min_accuracy}",
        metrics={"accuracy": accuracy, "threshold": float(min_accuracy)},
    )
    recalls = {
        name: float(value)
        for name, value in zip(class_names(), recall_score(y_test, predicted, average=None), strict=True)
    }
    for name, recall in recalls.items():
        ctx.report(
            f"recall[{name}] >= {min_recall}",
            _verdict(recall >= min_recall),
            message=None if recall >= min_recall else f"recall of {name} {recall:.3f} < {min_recall}",
            metrics={"recall": recall, "threshold": float(min_recall)},
        )
    return {"model_path": model_path, "accuracy": accuracy, "recall": recalls, "test_samples": len(y_test)}


def report(ctx: Context) -> dict[str, Any]:
    """Gather what the branches found into one JSON file beside the model (inputs hold the outputs
    of the steps it depends on: evaluate and model-tests)."""
    evaluation = dict(ctx.inputs.get("evaluate", {}))
    summary = {
        "run_id": str(ctx.run_id),
        "model_path": evaluation.get("model_path"),
        "evaluation": evaluation,
        "model_tests": dict(ctx.inputs.get("model-tests", {})),
    }
    path = run_dir(str(ctx.run_id), ctx.parameters) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8")
    return {"report_path": str(path), "accuracy": evaluation.get("accuracy")}
