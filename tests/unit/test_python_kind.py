"""The python kind, run directly with a StepContext."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from shared.errors import StepFailed
from shared.kinds import PythonParams
from tests.unit.worker_support import make_ctx, reported
from worker.context import Policy
from worker.kinds import python

ALLOW = Policy(python_allow=("tests.unit.worker_steps",))


def params(target: str, **kwargs: object) -> PythonParams:
    return PythonParams(callable=target, kwargs=kwargs)


async def test_sync_callable_gets_ctx_and_kwargs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=ALLOW, parameters={"dataset": "iris"})
    outputs = await python.run(ctx, params("tests.unit.worker_steps:add", a=2, b=3))
    assert outputs == {"sum": 5, "attempt": 1, "dataset": "iris"}
    (result,) = reported(ctx)
    assert result.name == "sum is positive"
    assert result.metrics == {"sum": 5.0}


async def test_async_callable(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=ALLOW, inputs={"train": {"model": "m"}})
    outputs = await python.run(ctx, params("tests.unit.worker_steps:async_double", x=1.5))
    assert outputs == {"x2": 3.0, "inputs": {"train": {"model": "m"}}}
    assert reported(ctx)[0].duration_ms == 1.5


async def test_none_is_empty_outputs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=ALLOW)
    assert await python.run(ctx, params("tests.unit.worker_steps:nothing")) == {}


async def test_non_dict_return_fails(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=ALLOW)
    with pytest.raises(StepFailed) as caught:
        await python.run(ctx, params("tests.unit.worker_steps:a_list"))
    assert caught.value.code == "invalid_outputs"
    assert not caught.value.retryable
    assert "list" in str(caught.value)


async def test_exceptions_propagate(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=ALLOW)
    with pytest.raises(RuntimeError, match="the model diverged"):
        await python.run(ctx, params("tests.unit.worker_steps:boom"))
    with pytest.raises(StepFailed) as caught:
        await python.run(ctx, params("tests.unit.worker_steps:final"))
    assert (caught.value.code, caught.value.retryable) == ("missing_data", False)


async def test_system_exit_in_a_step_does_not_escape(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=ALLOW)
    with pytest.raises(StepFailed, match="SystemExit"):
        await python.run(ctx, params("tests.unit.worker_steps:exits"))


async def test_not_allowed_is_refused_before_import(tmp_path: Path) -> None:
    sys.modules.pop("tests.unit.worker_import_probe", None)
    ctx = make_ctx(tmp_path, policy=Policy(python_allow=("examples.", "tests.unit.worker_steps")))
    with pytest.raises(StepFailed) as caught:
        await python.run(ctx, params("tests.unit.worker_import_probe:run"))
    assert (caught.value.code, caught.value.retryable) == ("not_allowed", False)
    assert "tests.unit.worker_import_probe" not in sys.modules


async def test_nothing_is_allowed_by_default(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    with pytest.raises(StepFailed) as caught:
        await python.run(ctx, params("os:getcwd"))
    assert caught.value.code == "not_allowed"


async def test_missing_module_and_attribute(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=Policy(python_allow=("tests.",)))
    with pytest.raises(StepFailed, match="cannot import"):
        await python.run(ctx, params("tests.unit.no_such_module:run"))
    with pytest.raises(StepFailed) as caught:
        await python.run(ctx, params("tests.unit.worker_steps:NOT_CALLABLE"))
    assert caught.value.code == "invalid_params"


@pytest.mark.parametrize(
    ("prefixes", "target", "allowed"),
    [
        (("examples.",), "examples.iris:train", True),
        (("examples",), "examples.iris:train", True),
        (("examples",), "examples:main", True),
        (("examples.",), "examples_evil.iris:train", False),
        (("examples",), "examplesx:train", False),
        (("examples.iris:train",), "examples.iris:train", True),
        (("examples.iris:train",), "examples.iris:evaluate", False),
        ((), "examples.iris:train", False),
        (("",), "os:system", False),
        ((".",), "os:system", False),
    ],
)
def test_allow_prefixes(prefixes: tuple[str, ...], target: str, allowed: bool) -> None:
    assert Policy(python_allow=prefixes).allows_callable(target) is allowed


async def test_sync_step_sees_cancellation(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=ALLOW)
    task = asyncio.create_task(python.run(ctx, params("tests.unit.worker_steps:polite_sleeper", seconds=30)))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    ctx.cancel()
    assert await asyncio.wait_for(task, 2.0) == {"stopped": True}
    assert time.monotonic() - started < 0.5


async def test_sync_steps_run_concurrently_beyond_the_default_executor(tmp_path: Path) -> None:
    ctxs = [make_ctx(tmp_path, policy=ALLOW) for _ in range(12)]
    started = time.monotonic()
    await asyncio.gather(
        *(python.run(ctx, params("tests.unit.worker_steps:polite_sleeper", seconds=0.3)) for ctx in ctxs)
    )
    assert time.monotonic() - started < 1.0


async def test_reports_from_many_threads(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, policy=ALLOW)
    await python.run(ctx, params("tests.unit.worker_steps:many_from_threads", n=300))
    assert [r.seq for r in reported(ctx)] == list(range(1200))
