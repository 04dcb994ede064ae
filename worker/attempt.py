"""One attempt of one step on this worker: from its dispatch to its finish.

The attempt announces itself (started), has its dispatch acknowledged once that is confirmed, runs
the kind's executor at once, streams its test results, and ends with exactly one finished event.
Stopping (a StopStep, the timeout, a shutdown) first sets the context's cancellation event, gives
the executor a moment to return, then cancels its task; the finish is reported then, while the
slot stays taken until the executor's task has really ended (a command's process group may need
its grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import orjson
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from shared import jsonutil
from shared.acks import Acknowledger
from shared.errors import StepFailed, StepKindError
from shared.kinds import get_kind
from shared.messages import (
    StepDispatch,
    StepErrorReport,
    WorkerFinished,
    WorkerResults,
    WorkerStarted,
)
from worker.context import Policy, Scratch, StepContext
from worker.publisher import EventPublisher
from worker.results import ResultBuffer, cut

log = logging.getLogger(__name__)

Key = tuple[UUID, UUID, int]
Outcome = Literal["succeeded", "failed", "cancelled"]

# How long an executor has to return on its own once its cancellation event is set.
STOP_MOMENT = 0.5
# How long the finish waits for a cancelled task before it is reported anyway.
REPORT_WAIT = 1.0
RESULTS_INTERVAL = 0.1
MAX_ERROR_MESSAGE = 10_000
MAX_OUTPUTS_BYTES = 1024 * 1024
ERROR_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_")


@dataclass(frozen=True)
class Ending:
    outcome: Outcome
    outputs: dict[str, Any] | None = None
    error: StepErrorReport | None = None


def failure(code: str, message: str, *, retryable: bool) -> Ending:
    if not code or len(code) > 64 or not set(code) <= ERROR_CODE_CHARS:
        code = "step_failed"
    return Ending(
        "failed",
        error=StepErrorReport(code=code, message=cut(message, MAX_ERROR_MESSAGE), retryable=retryable),
    )


def describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _params_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "params"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid params: {where}: {first['msg']}{more}"


def stopped(reason: str, timeout_seconds: int) -> Ending:
    """What a stop for `reason` ends the attempt as."""
    if reason == "timeout_local":
        return failure("timeout", f"the step ran past its timeout of {timeout_seconds} s", retryable=True)
    if reason == "shutdown":
        return failure("worker_shutdown", "the worker shut down before the step finished", retryable=True)
    return Ending(
        "cancelled",
        error=StepErrorReport(
            code=reason, message=f"stopped by the orchestrator ({reason})", retryable=False
        ),
    )


def checked_outputs(value: Any) -> Ending:
    if not isinstance(value, dict):
        return failure(
            "invalid_outputs",
            f"the executor returned {type(value).__name__}, not a JSON object",
            retryable=False,
        )
    try:
        size = len(jsonutil.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:
        return failure("invalid_outputs", f"the outputs are not JSON: {exc}", retryable=False)
    if size > MAX_OUTPUTS_BYTES:
        return failure(
            "invalid_outputs",
            f"the outputs are {size} bytes of JSON, over {MAX_OUTPUTS_BYTES}",
            retryable=False,
        )
    return Ending("succeeded", outputs=value)


class Attempt:
    def __init__(
        self,
        dispatch: StepDispatch,
        *,
        worker_id: str,
        publisher: EventPublisher,
        policy: Policy,
        scratch_root: Path,
        acks: Acknowledger,
        before_ack: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.dispatch = dispatch
        self.key: Key = (dispatch.run_id, dispatch.step_id, dispatch.attempt)
        self.worker_id = worker_id
        self.publisher = publisher
        self.policy = policy
        self.scratch_root = scratch_root
        self.acks = acks
        self.before_ack = before_ack
        self.started_confirmed = False
        self.finished = False
        self.ending: Ending | None = None
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._deliveries: list[AbstractIncomingMessage] = []
        self._acks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[Any] | None = None
        self._results_due = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.results = ResultBuffer(on_full=self._wake_results)
        self._log = {
            "run_id": str(dispatch.run_id),
            "step_id": str(dispatch.step_id),
            "attempt": dispatch.attempt,
            "step": dispatch.name,
            "kind": dispatch.kind,
        }

    # --- called by the worker -------------------------------------------------------------------

    def add_delivery(self, message: AbstractIncomingMessage) -> None:
        """A delivery of this attempt's dispatch (the first, or a redelivery after a reconnect):
        acknowledged once the start is confirmed."""
        self._deliveries.append(message)
        if self.started_confirmed:
            task = self._loop.create_task(self._ack_deliveries())
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None and not self.finished:
            self.stop_reason = reason
            self._stop.set()

    # --- the attempt ----------------------------------------------------------------------------

    def _wake_results(self) -> None:
        # Called from whatever thread the step reports from.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._results_due.set)

    async def _ack_deliveries(self) -> None:
        while self._deliveries:
            message = self._deliveries.pop(0)
            try:
                await self.acks.ack(message)
            except Exception as exc:
                # The channel it came on is gone: the broker requeues it, and its redelivery is
                # recognised as this attempt (or, later, as a finished one) and acknowledged.
                log.warning(
                    "could not acknowledge a dispatch",
                    extra={"action": "worker.ack_failed", "error": repr(exc), **self._log},
                )

    async def _acknowledge(self, confirmed: asyncio.Future[None]) -> None:
        await confirmed
        self.started_confirmed = True
        if self.before_ack is not None:
            await self.before_ack()
        await self._ack_deliveries()

    def _send_results(self) -> None:
        run_id, step_id, attempt = self.key
        while batch := self.results.take():
            self.publisher.enqueue(
                self.key,
                WorkerResults(
                    run_id=run_id, step_id=step_id, attempt=attempt, worker_id=self.worker_id, results=batch
                ),
            )

    async def _stream_results(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._results_due.wait(), RESULTS_INTERVAL)
            self._results_due.clear()
            self._send_results()

    def _prepare(self, scratch: Scratch) -> tuple[Callable[..., Awaitable[Any]], Any, StepContext] | Ending:
        dispatch = self.dispatch
        try:
            kind = get_kind(dispatch.kind)
        except StepKindError as exc:
            return failure("unknown_kind", describe(exc), retryable=False)
        try:
            params = kind.parse_params(dispatch.params)
        except ValidationError as exc:
            return failure("invalid_params", _params_problem(exc), retryable=False)
        try:
            executor = kind.load_executor()
        except Exception as exc:
            log.exception(
                "cannot load the executor", extra={"action": "worker.executor_missing", **self._log}
            )
            return failure(
                "step_failed",
                f"cannot load the executor of kind {kind.name!r}: {describe(exc)}",
                retryable=True,
            )
        ctx = StepContext(
            run_id=dispatch.run_id,
            step_id=dispatch.step_id,
            attempt=dispatch.attempt,
            name=dispatch.name,
            tenant_id=dispatch.tenant_id,
            parameters=dispatch.parameters,
            inputs=dispatch.inputs,
            params=dispatch.params,
            scratch=scratch,
            policy=self.policy,
            results=self.results,
        )
        return executor, params, ctx

    def _ending_of(self, task: asyncio.Task[Any]) -> Ending:
        if task.cancelled():
            return failure("step_failed", "the step's task was cancelled", retryable=True)
        exc = task.exception()
        if exc is None:
            return checked_outputs(task.result())
        if isinstance(exc, StepFailed):
            log.info(
                "step failed",
                extra={"action": "worker.step_error", "code": exc.code, "error": describe(exc), **self._log},
            )
            return failure(exc.code, describe(exc), retryable=exc.retryable)
        log.error(
            "step raised",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"action": "worker.step_error", **self._log},
        )
        return failure("step_failed", describe(exc), retryable=True)

    async def _execute(
        self, executor: Callable[..., Awaitable[Any]], params: Any, ctx: StepContext
    ) -> Ending:
        task: asyncio.Task[Any] = asyncio.ensure_future(executor(ctx, params))
        self._task = task
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait(
                [task, stop], timeout=self.dispatch.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
        if task.done():
            return self._ending_of(task)
        reason = self.stop_reason or "timeout_local"
        self.stop_reason = reason
        log.info("stopping step", extra={"action": "worker.step_stopping", "reason": reason, **self._log})
        ctx.cancel()
        await asyncio.wait([task], timeout=STOP_MOMENT)
        if not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=REPORT_WAIT)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: how it ended no longer matters
        return stopped(reason, self.dispatch.timeout_seconds)

    def _finish(self, ending: Ending) -> None:
        run_id, step_id, attempt = self.key
        self.results.close()
        self._send_results()
        self.ending = ending
        self.finished = True
        self.publisher.enqueue(
            self.key,
            WorkerFinished(
                run_id=run_id,
                step_id=step_id,
                attempt=attempt,
                worker_id=self.worker_id,
                outcome=ending.outcome,
                outputs=ending.outputs if ending.outcome == "succeeded" else None,
                error=ending.error,
                results_count=self.results.count,
            ),
        )
        log.info(
            "step finished",
            extra={
                "action": "worker.step_finished",
                "outcome": ending.outcome,
                "code": ending.error.code if ending.error else None,
                "results": self.results.count,
                **self._log,
            },
        )

    async def run(self) -> Ending:
        run_id, step_id, attempt = self.key
        confirmed = self.publisher.enqueue(
            self.key,
            WorkerStarted(run_id=run_id, step_id=step_id, attempt=attempt, worker_id=self.worker_id),
            confirm=True,
        )
        assert confirmed is not None
        acknowledging = asyncio.ensure_future(self._acknowledge(confirmed))
        streaming = asyncio.ensure_future(self._stream_results())
        log.info("step starting", extra={"action": "worker.step_starting", **self._log})
        scratch = Scratch(self.scratch_root, f"{step_id.hex}-{attempt}-")
        ending = failure("step_failed", "the worker could not run the step", retryable=True)
        try:
            try:
                prepared = self._prepare(scratch)
                if isinstance(prepared, Ending):
                    ending = prepared
                else:
                    ending = await self._execute(*prepared)
            except asyncio.CancelledError:
                # Only a worker giving up on its steps cancels this task.
                ending = stopped(self.stop_reason or "shutdown", self.dispatch.timeout_seconds)
                raise
            except Exception as exc:
                log.exception("attempt broke", extra={"action": "worker.attempt_error", **self._log})
                ending = failure(
                    "step_failed", f"the worker could not run the step: {describe(exc)}", retryable=True
                )
            finally:
                streaming.cancel()
                self._finish(ending)
            task = self._task
            if task is not None and not task.done():
                # The finish is out; the slot stays taken until the executor has really let go.
                await asyncio.wait([task])
            await acknowledging
        finally:
            acknowledging.cancel()
            task = self._task
            if task is not None:
                if not task.done():
                    task.cancel()
                elif not task.cancelled():
                    task.exception()  # retrieved: how it ended is already reported
            if scratch.path is not None:
                await asyncio.to_thread(shutil.rmtree, scratch.path, True)
        return ending
