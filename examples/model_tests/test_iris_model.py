"""Properties the trained model must have, checked against the file the `train` step wrote.

The model is found through MODEL_PATH, or through the run id the worker gives a command step
(examples/artifacts.py says why).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from examples.artifacts import model_path_from_env
from examples.iris import class_names, load_model, split

ACCURACY_FLOOR = 0.85


@pytest.fixture(scope="module")
def model() -> Any:
    path = model_path_from_env()
    if not path.is_file():
        pytest.fail(f"no model at {path}")
    return load_model(path)


@pytest.fixture(scope="module")
def held_out() -> tuple[Any, Any]:
    _, x_test, _, y_test = split()
    return x_test, y_test


def test_predictions_have_one_label_per_sample(model: Any, held_out: tuple[Any, Any]) -> None:
    x_test, _ = held_out
    predicted = model.predict(x_test)
    assert predicted.shape == (len(x_test),)
    assert set(np.unique(predicted)) <= set(range(len(class_names())))


def test_probabilities_sum_to_one(model: Any, held_out: tuple[Any, Any]) -> None:
    x_test, _ = held_out
    probabilities = model.predict_proba(x_test)
    assert probabilities.shape == (len(x_test), len(class_names()))
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities >= 0).all()


def test_predictions_are_deterministic(model: Any, held_out: tuple[Any, Any]) -> None:
    x_test, _ = held_out
    assert np.array_equal(model.predict(x_test), model.predict(x_test))
    reloaded = load_model(model_path_from_env())
    assert np.array_equal(model.predict_proba(x_test), reloaded.predict_proba(x_test))


def test_accuracy_above_floor(model: Any, held_out: tuple[Any, Any]) -> None:
    x_test, y_test = held_out
    accuracy = float((model.predict(x_test) == y_test).mean())
    assert accuracy >= ACCURACY_FLOOR, f"accuracy {accuracy:.3f} below {ACCURACY_FLOOR}"
