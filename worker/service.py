"""The worker process: consumes step dispatches for its pools, runs them in a fixed number of
slots, and reports everything through the broker (workers never touch Postgres).

A dispatch is held only while a slot is free for it: when the slots fill up the consumers are
cancelled (deliveries already on their way go back to the queue) and they consume again when a
slot frees, so work never waits behind a long step while another worker idles. Dispatches are
acknowledged early (once `started` is confirmed), so the prefetch alone cannot bound what the
broker sends: each new consumer gets a prefetch of the slots free when it opens (at most
MODELRUNS_WORKER_CONCURRENCY), which keeps such returns rare, and is opened again with a larger
one once its share of free slots has doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, ConsumerTag

from shared import amqp, tracing
from shared.acks import Acknowledger
from shared.errors import ConfigurationError, InvalidMessage
from shared.messages import StepDispatch, StepRef, StopStep, WorkerHeartbeat, decode
from shared.ops import OpsServer, lag_histogram
from shared.settings import Settings
from worker.attempt import Attempt, Key
from worker.context import Policy
from worker.metrics import worker_registry
from worker.publisher import EventPublisher

log = logging.getLogger(__name__)

WORKER_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")
# Finished attempts remembered, so a late redelivery of their dispatch is not run twice.
REMEMBERED = 10_000
SETTLE_TIMEOUT = 5.0
FLUSH_TIMEOUT = 30.0
# After the shutdown grace, how long stopped steps get to let go (a command's SIGTERM grace).
STOP_TIMEOUT = 15.0
RETRY_CONSUME = 0.5


def worker_id_for(settings: Settings) -> str:
    if settings.worker_id is not None:
        if not WORKER_ID.fullmatch(settings.worker_id):
            raise ConfigurationError(
                f"MODELRUNS_WORKER_ID {settings.worker_id!r} must match {WORKER_ID.pattern}"
            )
        return settings.worker_id
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "worker"
    return f"{host[:180]}-{os.getpid()}"


class Worker:
    def __init__(self, settings: Settings, *, broker: amqp.Broker | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id_for(settings)
        # A broker handed in belongs to the caller, who closes it.
        self._owns_broker = broker is None
        self.broker = broker or amqp.Broker(settings.amqp_url, name=f"modelruns-worker {self.worker_id}")
        self.publisher = EventPublisher(self.broker)
        # Dispatches are settled through it: the acks of attempts started together go as one.
        self.acks = Acknowledger()
        self.policy = Policy(tuple(settings.worker_python_allow), settings.worker_allow_commands)
        self.capacity = settings.worker_concurrency
        # Unset, each process makes a private directory of its own (mkdtemp: 0700, a fresh name,
        # so nobody can prepare it in a shared /tmp) and removes it when it stops.
        self._own_scratch = settings.worker_scratch_dir is None
        self.scratch_root = Path(settings.worker_scratch_dir or tempfile.gettempdir())
        self._scratch_made = False
        self.attempts: dict[Key, Attempt] = {}
        self.steps_total: Counter[str] = Counter()
        self.dispatches_total: Counter[str] = Counter()
        self.consumer_lag = lag_histogram()
        self.ops_port: int | None = None
        self.ready = asyncio.Event()
        self._recent: OrderedDict[Key, None] = OrderedDict()
        self._stopping = False
        self._channel: AbstractChannel | None = None
        self._control_channel: AbstractChannel | None = None
        self._queues: list[AbstractQueue] = []
        self._consumers: dict[str, ConsumerTag] = {}
        self._prefetch: dict[str, int] = {}
        self._consume_change = asyncio.Event()
        self._consume_settled = asyncio.Event()
        self._attempt_tasks: dict[Key, asyncio.Task[Any]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._ops: OpsServer | None = None

    # --- state the ops endpoint and the tests read ----------------------------------------------

    @property
    def busy(self) -> int:
        return len(self.attempts)

    @property
    def consuming(self) -> bool:
        return bool(self._consumers)

    async def readiness(self) -> dict[str, str]:
        return {
            "rabbitmq": "ok" if self.broker.up_for() > 0 else "down",
            "worker": "ok" if self.ready.is_set() else "not ready",
        }

    def running(self) -> list[Attempt]:
        return [a for a in self.attempts.values() if not a.finished]

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (waiting for the broker while it is down), declare, and start consuming."""
        if self.broker.connection is None:
            await self.broker.connect()
        if self._own_scratch:
            self.scratch_root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="modelruns-worker-"))
            self._scratch_made = True
        self._channel = await self.broker.channel(confirms=False, prefetch=self.capacity)
        await amqp.declare_exchanges(self._channel)
        self._queues = [
            await amqp.declare_pool_queue(self._channel, pool) for pool in self.settings.worker_pools
        ]
        self._control_channel = await self.broker.channel(confirms=False)
        control = await self._control_channel.declare_queue(
            f"{amqp.CONTROL}.{self.worker_id}.{os.urandom(4).hex()}", exclusive=True, auto_delete=True
        )
        await control.bind(amqp.CONTROL, amqp.control_key(self.worker_id))
        # No acks: a stop is idempotent, and a lost one is repeated in answer to the next heartbeat.
        await control.consume(self._on_control, no_ack=True)
        self._spawn(self.publisher.run(), "publisher")
        self._spawn(self._heartbeats(), "heartbeats")
        self._spawn(self._keep_consuming(), "consumers")
        self._want_consuming()
        if self.settings.ops_port is not None:
            self._ops = OpsServer(
                self.settings.http_host, self.settings.ops_port, worker_registry(self), self.readiness
            )
            await self._ops.start()
            self.ops_port = self._ops.bound_port
        await self._settled()
        self.ready.set()
        log.info(
            "worker ready",
            extra={
                "action": "worker.ready",
                "worker_id": self.worker_id,
                "pools": ",".join(self.settings.worker_pools),
                "concurrency": self.capacity,
            },
        )

    async def shutdown(self) -> None:
        """Stop consuming at once; give running steps the grace period, then stop them and report
        them failed (worker_shutdown, retryable) so they are retried elsewhere; flush; close."""
        self._stopping = True
        self.ready.clear()
        self._want_consuming()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._consume_settled.wait(), SETTLE_TIMEOUT)
        running = list(self._attempt_tasks.values())
        if running:
            log.info(
                "shutting down, waiting for running steps",
                extra={
                    "action": "worker.draining",
                    "running": len(running),
                    "grace_seconds": self.settings.worker_shutdown_grace_seconds,
                },
            )
            await asyncio.wait(running, timeout=self.settings.worker_shutdown_grace_seconds)
        for attempt in self.running():
            attempt.stop("shutdown")
        remaining = [task for task in self._attempt_tasks.values() if not task.done()]
        if remaining:
            _, stuck = await asyncio.wait(remaining, timeout=STOP_TIMEOUT)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=1.0)
        if not await self.publisher.flush(FLUSH_TIMEOUT):
            log.error(
                "worker events lost at shutdown: the broker did not confirm them",
                extra={"action": "worker.events_lost", "pending": self.publisher.pending},
            )
        await self.close()
        log.info("worker stopped", extra={"action": "worker.stopped", "worker_id": self.worker_id})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ops is not None:
            with contextlib.suppress(Exception):
                await self._ops.stop()
            self._ops = None
        await self.publisher.close()
        for channel in (self._channel, self._control_channel):
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
        if self._owns_broker:
            await self.broker.close()
        if self._scratch_made:
            self._scratch_made = False
            await asyncio.to_thread(shutil.rmtree, self.scratch_root, True)

    async def run(self, stop: asyncio.Event) -> None:
        starting = asyncio.ensure_future(self.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not starting.done():
            # Asked to stop while still waiting for the broker: nothing runs yet.
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await self.close()
            return
        try:
            starting.result()
        except BaseException:
            await self.close()
            raise
        await stop.wait()
        await self.shutdown()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=f"worker-{name}")
        task.add_done_callback(self._background_done)
        self._tasks.append(task)

    @staticmethod
    def _background_done(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "worker loop died",
                exc_info=task.exception(),
                extra={"action": "worker.loop_died", "task": task.get_name()},
            )

    # --- consuming, slot by slot ----------------------------------------------------------------

    def _want_consuming(self) -> None:
        self._consume_settled.clear()
        self._consume_change.set()

    async def _settled(self) -> None:
        """Acks wait for this: a dispatch that filled the last slot is acknowledged only after the
        consumers are cancelled, so the credit the ack returns cannot draw one more delivery."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._consume_settled.wait(), SETTLE_TIMEOUT)

    async def _keep_consuming(self) -> None:
        while True:
            await self._consume_change.wait()
            self._consume_change.clear()
            want = not self._stopping and self.busy < self.capacity
            try:
                if want:
                    await self._open_consumers()
                else:
                    for queue in self._queues:
                        await self._cancel(queue)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "cannot change consumers, retrying",
                    extra={"action": "worker.consume_retry", "consume": want, "error": repr(exc)},
                )
                await asyncio.sleep(RETRY_CONSUME)
                self._consume_change.set()
                continue
            if not self._consume_change.is_set():
                self._consume_settled.set()

    async def _open_consumers(self) -> None:
        """Consume from every pool queue, each with a prefetch of its share of the free slots: a
        new consumer may be sent its whole prefetch at once, and what finds no slot goes straight
        back. A consumer keeps the prefetch it opened with, so one opened while most slots were
        busy is opened again once its share has doubled: otherwise a worker whose consumer opened
        at one busy slot short of full takes one dispatch per ack round trip for as long as the
        slots never fill again."""
        if self._channel is None:
            return
        share = max(1, (self.capacity - self.busy) // len(self._queues))
        for queue in self._queues:
            if queue.name in self._consumers and self._prefetch.get(queue.name, 0) * 2 <= share:
                await self._cancel(queue)
        idle = [q for q in self._queues if q.name not in self._consumers]
        if not idle:
            return
        prefetch = max(1, (self.capacity - self.busy) // len(idle))
        await self._channel.set_qos(prefetch_count=prefetch)
        for queue in idle:
            self._consumers[queue.name] = await queue.consume(self._on_dispatch)
            self._prefetch[queue.name] = prefetch

    async def _cancel(self, queue: AbstractQueue) -> None:
        # Popped first: a robust queue would otherwise restore it after a reconnect.
        tag = self._consumers.pop(queue.name, None)
        self._prefetch.pop(queue.name, None)
        if tag is not None:
            await queue.cancel(tag)

    async def _on_dispatch(self, message: AbstractIncomingMessage) -> None:
        try:
            dispatch = decode(StepDispatch, message.body)
        except InvalidMessage as exc:
            self.dispatches_total["invalid"] += 1
            log.error(
                "poison dispatch, dead-lettering it",
                extra={
                    "action": "worker.dispatch_invalid",
                    "error": str(exc),
                    "message_id": message.message_id,
                },
            )
            await self._settle(self.acks.reject(message, requeue=False))
            return
        key: Key = (dispatch.run_id, dispatch.step_id, dispatch.attempt)
        queue = amqp.pool_queue(message.routing_key or "")
        lag = amqp.lag_of(message.headers)
        if lag is not None:
            self.consumer_lag.labels(queue).observe(lag)
        running = self.attempts.get(key)
        if running is not None:
            # Redelivered after a reconnect while it runs here: one attempt, acknowledged once started.
            running.add_delivery(message)
            return
        if key in self._recent:
            self.dispatches_total["duplicate"] += 1
            await self._settle(self.acks.ack(message))
            return
        if self._stopping or self.busy >= self.capacity:
            # Delivered before the consumer was cancelled: back to the queue, for a free worker.
            self.dispatches_total["requeued"] += 1
            await self._settle(self.acks.nack(message, requeue=True))
            self._want_consuming()
            return
        self.dispatches_total["accepted"] += 1
        attempt = Attempt(
            dispatch,
            worker_id=self.worker_id,
            publisher=self.publisher,
            policy=self.policy,
            scratch_root=self.scratch_root,
            acks=self.acks,
            before_ack=self._settled,
        )
        attempt.add_delivery(message)
        self.attempts[key] = attempt
        if self.busy >= self.capacity:
            self._want_consuming()
        task = asyncio.create_task(
            self._run_attempt(attempt, queue, message),
            name=f"attempt-{dispatch.step_id}-{dispatch.attempt}",
        )
        self._attempt_tasks[key] = task

    async def _run_attempt(self, attempt: Attempt, queue: str, message: AbstractIncomingMessage) -> None:
        try:
            # The attempt and everything it sends continue the trace of its dispatch.
            with tracing.consuming(queue, message.headers, message.message_id) as span:
                span.set_attributes(
                    {
                        "modelruns.run_id": str(attempt.key[0]),
                        "modelruns.step_id": str(attempt.key[1]),
                        "modelruns.attempt": attempt.key[2],
                        "modelruns.worker_id": self.worker_id,
                    }
                )
                ending = await attempt.run()
                span.set_attribute("modelruns.outcome", ending.outcome)
            self.steps_total[ending.outcome] += 1
        except asyncio.CancelledError:
            self.steps_total[attempt.ending.outcome if attempt.ending else "failed"] += 1
            raise
        except Exception:
            log.exception("attempt crashed", extra={"action": "worker.attempt_crashed"})
        finally:
            self.attempts.pop(attempt.key, None)
            self._attempt_tasks.pop(attempt.key, None)
            self._recent[attempt.key] = None
            while len(self._recent) > REMEMBERED:
                self._recent.popitem(last=False)
            self._want_consuming()

    @staticmethod
    async def _settle(action: Coroutine[Any, Any, Any]) -> None:
        try:
            await action
        except Exception as exc:
            log.warning(
                "could not settle a delivery", extra={"action": "worker.settle_failed", "error": repr(exc)}
            )

    # --- control and heartbeats -----------------------------------------------------------------

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        # A stop continues the trace of the decision that sent it (a cancel, a fence, a timeout).
        with tracing.consuming(amqp.CONTROL, message.headers, message.message_id):
            self._control(message)

    def _control(self, message: AbstractIncomingMessage) -> None:
        try:
            stop = decode(StopStep, message.body)
        except InvalidMessage as exc:
            log.warning(
                "unreadable control message", extra={"action": "worker.control_invalid", "error": str(exc)}
            )
            return
        attempt = self.attempts.get((stop.run_id, stop.step_id, stop.attempt))
        if attempt is None or attempt.finished:
            log.debug(
                "stop for an attempt not running here",
                extra={
                    "action": "worker.stop_ignored",
                    "step_id": str(stop.step_id),
                    "attempt": stop.attempt,
                },
            )
            return
        log.info(
            "stop requested",
            extra={
                "action": "worker.stop_requested",
                "run_id": str(stop.run_id),
                "step_id": str(stop.step_id),
                "attempt": stop.attempt,
                "reason": stop.reason,
            },
        )
        attempt.stop(stop.reason)

    async def _heartbeats(self) -> None:
        interval = self.settings.heartbeat_seconds
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due, loop.time() - interval)  # after a long stall, do not fire a burst
            steps = [
                StepRef(run_id=a.key[0], step_id=a.key[1], attempt=a.key[2])
                for a in self.running()
                if a.started_confirmed
            ]
            if steps:
                await self.publisher.publish_once(
                    WorkerHeartbeat(worker_id=self.worker_id, steps=steps), timeout=interval
                )


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    await Worker(settings).run(stop)
