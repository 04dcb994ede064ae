"""`python`: call `package.module:function(ctx, **kwargs)` from a module this worker allows.

The allow-list is checked before anything is imported: importing runs the module's code. Sync
functions run in a thread of their own, marked daemon: a cancelled function that ignores
`ctx.is_cancelled()` cannot be stopped from outside, and must not hold the process open at exit
(asyncio's default executor would, and would also cap concurrent sync steps at a few threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from shared.errors import StepFailed
from shared.kinds import PythonParams
from worker.context import StepContext

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # the awaiting task was cancelled meanwhile
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = fn(*args, **kwargs)
        except (StopIteration, Exception) as exc:
            error = exc
        except BaseException as exc:  # SystemExit and friends end this step, not the worker
            error = StepFailed(f"the step raised {type(exc).__name__}: {exc}")
        if isinstance(error, StopIteration):  # a future refuses StopIteration
            error = StepFailed(f"the step raised StopIteration: {error}")
        # The loop is gone when a cancelled step ends after the worker closed.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name=f"step-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
    return await future


def load(ctx: StepContext, target: str) -> Callable[..., Any]:
    """Import the callable named by `target` ("package.module:function"); runs in a thread."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepFailed(f"cannot import {module_name!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise StepFailed(f"{target!r} names no callable", code="invalid_params", retryable=False)
    return fn  # type: ignore[no-any-return]


async def run(ctx: StepContext, params: PythonParams) -> dict[str, Any]:
    if not ctx.policy.allows_callable(params.callable):
        raise StepFailed(
            f"{params.callable!r} is outside the modules this worker allows (MODELRUNS_WORKER_PYTHON_ALLOW)",
            code="not_allowed",
            retryable=False,
        )
    fn = await in_thread(load, ctx, params.callable)
    if inspect.iscoroutinefunction(fn):
        result = await fn(ctx, **params.kwargs)
    else:
        result = await in_thread(fn, ctx, **params.kwargs)
        if inspect.isawaitable(result):
            result = await result
    if result is None:
        return {}
    if not isinstance(result, dict):
        raise StepFailed(
            f"{params.callable} returned {type(result).__name__}, not a JSON object (dict) or None",
            code="invalid_outputs",
            retryable=False,
        )
    return result
