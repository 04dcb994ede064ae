"""The worker on real RabbitMQ: this test plays the orchestrator's side of the broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from shared import amqp
from shared.messages import StepDispatch, WorkerFinished, WorkerResults, WorkerStarted, decode
from tests.conftest import rabbitmqctl
from tests.integration.worker_harness import (
    PY,
    Orchestrator,
    make_dispatch,
    orchestrator,
    running_worker,
    vhost_of,
    worker_settings,
)
from tests.waiting import eventually
from worker.service import Worker

pytestmark = pytest.mark.services


def assert_lifecycle(
    orch: Orchestrator, dispatch: StepDispatch, worker: Worker, *, resent: bool = False
) -> WorkerFinished:
    """started first, results with contiguous seq, finished last; all from this worker. With
    `resent` (the connection was lost), results whose confirm was lost with it may come twice:
    each is then counted once, as the orchestrator stores it once."""
    events = orch.of(dispatch)
    assert isinstance(events[0], WorkerStarted), events
    assert isinstance(events[-1], WorkerFinished), events
    assert sum(isinstance(e, WorkerStarted) for e in events) == 1
    assert sum(isinstance(e, WorkerFinished) for e in events) == 1
    seqs = [r.seq for e in events if isinstance(e, WorkerResults) for r in e.results]
    if resent:
        seqs = sorted(set(seqs))
    assert seqs == list(range(len(seqs)))
    assert all(e.worker_id == worker.worker_id for e in events)
    finished = events[-1]
    assert finished.results_count == len(seqs)
    return finished


async def test_a_step_starts_reports_and_finishes(amqp_url: str, tmp_path: Path) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        results = [{"name": f"test {i}", "status": "passed", "metrics": {"i": i}} for i in range(2_500)]
        dispatch = await orch.dispatch(
            make_dispatch(params={"duration_seconds": 0.5, "results": results, "outputs": {"model": "m1"}})
        )
        finished = await orch.finished(dispatch)
        assert finished.outcome == "succeeded", finished.error
        assert finished.outputs == {"model": "m1"}
        assert finished.error is None
        assert assert_lifecycle(orch, dispatch, worker) is finished
        assert finished.results_count == 2_500
        batches = [e for e in orch.of(dispatch) if isinstance(e, WorkerResults)]
        assert all(1 <= len(b.results) <= 1_000 for b in batches)
        # Spread over half a second and flushed every ~100 ms: more than the minimum of three messages.
        assert len(batches) > 3
        # The scratch directory is removed once the attempt is over.
        assert await eventually(lambda: _empty(tmp_path), what="scratch dirs removed")


async def _empty(root: Path) -> bool:
    def check() -> bool:
        return not any(p.is_dir() for p in root.iterdir())

    return await asyncio.to_thread(check)


async def test_ack_waits_for_a_confirmed_start(amqp_url: str, tmp_path: Path) -> None:
    # No worker-events queue yet: a mandatory `started` is returned, not confirmed, and retried.
    async with (
        orchestrator(amqp_url, declare_event_queue=False) as orch,
        running_worker(worker_settings(amqp_url, tmp_path)) as worker,
    ):
        dispatch = await orch.dispatch(make_dispatch(params={"duration_seconds": 0.2}))
        await eventually(lambda: _busy(worker), what="the step taken")

        async def held() -> bool:
            return await orch.unacked() == 1 and (await orch.stats()).ready == 0

        await eventually(held, timeout=15, what="the dispatch held unacknowledged")
        assert worker.publisher.pending >= 2  # started and finished, in order, both unconfirmed
        assert worker.busy == 1  # the step is over, but its dispatch still holds the slot
        await orch.listen()
        finished = await orch.finished(dispatch)
        assert finished.outcome == "succeeded"
        assert_lifecycle(orch, dispatch, worker)

        async def acked() -> bool:
            return await orch.unacked() == 0

        await eventually(acked, timeout=15, what="the dispatch acknowledged")


async def _busy(worker: Worker) -> bool:
    return worker.busy > 0


async def test_long_step_is_acked_early_heartbeats_and_stops_on_request(
    amqp_url: str, tmp_path: Path
) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        dispatch = await orch.dispatch(
            make_dispatch(params={"duration_seconds": 60, "results": [{"name": "late", "status": "passed"}]})
        )
        await orch.started(dispatch)

        async def acked() -> bool:
            return await orch.unacked() == 0 and (await orch.stats()).ready == 0

        await eventually(acked, timeout=15, what="the dispatch acknowledged while the step runs")

        async def beats() -> bool:
            return len(orch.heartbeats_with(dispatch)) >= 3

        await eventually(beats, timeout=5, what="heartbeats")
        beat = orch.heartbeats_with(dispatch)[-1]
        assert beat.worker_id == worker.worker_id
        assert [(r.run_id, r.step_id, r.attempt) for r in beat.steps] == [
            (dispatch.run_id, dispatch.step_id, dispatch.attempt)
        ]
        stop_sent = time.monotonic()
        await orch.stop(worker, dispatch)
        finished = await orch.finished(dispatch, timeout=2)
        assert time.monotonic() - stop_sent < 2
        assert finished.outcome == "cancelled"
        assert finished.results_count == 0
        assert_lifecycle(orch, dispatch, worker)
        # Once finished it is no longer in the heartbeats, and a late stop for it is ignored.
        count = len(orch.heartbeats_with(dispatch))
        await orch.stop(worker, dispatch)
        await asyncio.sleep(1.0)
        assert len(orch.heartbeats_with(dispatch)) <= count + 1
        assert len([e for e in orch.of(dispatch) if isinstance(e, WorkerFinished)]) == 1


async def test_timeout_fails_the_attempt_retryably(amqp_url: str, tmp_path: Path) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        sent = time.monotonic()
        dispatch = await orch.dispatch(make_dispatch(params={"duration_seconds": 30}, timeout_seconds=1))
        finished = await orch.finished(dispatch, timeout=5)
        assert 1.0 <= time.monotonic() - sent < 4
        assert finished.outcome == "failed"
        assert finished.error is not None
        assert (finished.error.code, finished.error.retryable) == ("timeout", True)
        assert_lifecycle(orch, dispatch, worker)


async def test_step_errors_are_reported_with_codes(amqp_url: str, tmp_path: Path) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        cases = {
            "unknown": (make_dispatch(kind="no-such-kind"), "unknown_kind", False),
            "bad-params": (make_dispatch(params={"duration_seconds": "soon"}), "invalid_params", False),
            "fail-attempts": (make_dispatch(params={"fail_attempts": 1}), "step_failed", True),
            "outcome-failed": (make_dispatch(params={"outcome": "failed"}), "step_failed", True),
            "not-allowed": (
                make_dispatch(kind="python", params={"callable": "os:getcwd"}),
                "not_allowed",
                False,
            ),
            "raises": (
                make_dispatch(kind="python", params={"callable": "tests.unit.worker_steps:boom"}),
                "step_failed",
                True,
            ),
            "command-off": (make_dispatch(kind="command", params={"argv": ["true"]}), "not_allowed", False),
        }
        for dispatch, _, _ in cases.values():
            await orch.dispatch(dispatch)
        for label, (dispatch, code, retryable) in cases.items():
            finished = await orch.finished(dispatch)
            assert finished.outcome == "failed", label
            assert finished.error is not None
            assert (finished.error.code, finished.error.retryable) == (code, retryable), label
            assert "Traceback" not in finished.error.message
            assert_lifecycle(orch, dispatch, worker)
        assert cases["raises"][0] and (await orch.finished(cases["raises"][0])).error.message == (  # type: ignore[union-attr]
            "the model diverged"
        )


async def test_python_step_outputs(amqp_url: str, tmp_path: Path) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        dispatch = await orch.dispatch(
            make_dispatch(
                kind="python", params={"callable": "tests.unit.worker_steps:add", "kwargs": {"a": 1, "b": 2}}
            )
        )
        finished = await orch.finished(dispatch)
        assert finished.outcome == "succeeded"
        assert finished.outputs == {"sum": 3, "attempt": 1, "dataset": "iris"}
        assert finished.results_count == 1
        assert_lifecycle(orch, dispatch, worker)


async def test_an_overlong_test_message_is_cut_and_marked(amqp_url: str, tmp_path: Path) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        dispatch = await orch.dispatch(
            make_dispatch(
                kind="python",
                params={"callable": "tests.unit.worker_steps:long_message", "kwargs": {"n": 5_000}},
            )
        )
        assert (await orch.finished(dispatch)).outcome == "succeeded"
        assert_lifecycle(orch, dispatch, worker)
        (result,) = [r for e in orch.of(dispatch) if isinstance(e, WorkerResults) for r in e.results]
        assert result.message is not None
        assert len(result.message) == 10_000
        assert result.message.endswith(" [truncated]")


JUNIT_SCRIPT = """
import os, sys
assert os.getcwd() == os.environ["MODELRUNS_SCRATCH_DIR"]
open("junit.xml", "w").write('''<testsuites><testsuite name="model">
<testcase classname="model" name="accuracy" time="0.25"/>
<testcase classname="model" name="fairness"><failure message="gap 0.2 &gt; 0.1">details</failure></testcase>
<testcase classname="model" name="gpu"><skipped message="no gpu"/></testcase>
</testsuite></testsuites>''')
print("done")
"""


async def test_command_step_when_allowed(amqp_url: str, tmp_path: Path) -> None:
    settings = worker_settings(amqp_url, tmp_path, worker_allow_commands=True)
    async with orchestrator(amqp_url) as orch, running_worker(settings) as worker:
        ok = await orch.dispatch(
            make_dispatch(kind="command", params={"argv": [PY, "-c", JUNIT_SCRIPT], "junit_xml": "junit.xml"})
        )
        failing = await orch.dispatch(
            make_dispatch(kind="command", params={"argv": ["sh", "-c", "echo oops >&2; exit 4"]})
        )
        finished = await orch.finished(ok)
        assert finished.outcome == "succeeded", finished
        assert finished.results_count == 3
        results = [r for e in orch.of(ok) if isinstance(e, WorkerResults) for r in e.results]
        assert [(r.name, r.status.value) for r in results] == [
            ("model.accuracy", "passed"),
            ("model.fairness", "failed"),
            ("model.gpu", "skipped"),
        ]
        assert results[1].message == "gap 0.2 > 0.1\ndetails"
        assert_lifecycle(orch, ok, worker)
        failed = await orch.finished(failing)
        assert failed.outcome == "failed"
        assert failed.error is not None
        assert failed.error.retryable
        assert failed.error.message == "command exited with status 4: oops"


async def test_full_slots_stop_consuming(amqp_url: str, tmp_path: Path) -> None:
    settings = worker_settings(amqp_url, tmp_path, worker_concurrency=1)
    async with orchestrator(amqp_url) as orch, running_worker(settings) as worker:
        first = await orch.dispatch(make_dispatch(params={"duration_seconds": 2.5}, name="first"))
        await orch.started(first)
        second = await orch.dispatch(make_dispatch(params={"duration_seconds": 0}, name="second"))

        async def waiting_in_queue() -> bool:
            stats = await orch.stats()
            return (stats.ready, stats.consumers) == (1, 0)

        await eventually(waiting_in_queue, what="the second dispatch left in the queue")
        assert not worker.consuming
        # Ready for another consumer: anyone can take it now.
        queue = await orch.channel.get_queue(amqp.pool_queue("default"))
        taken = await queue.get(fail=True)
        assert taken is not None
        assert decode(StepDispatch, taken.body).step_id == second.step_id
        await taken.nack(requeue=True)
        assert not [e for e in orch.of(second) if isinstance(e, WorkerStarted)]
        done_first = await orch.finished(first)
        assert done_first.outcome == "succeeded"
        await orch.finished(second)
        order = [
            (type(e).__name__, e.step_id)
            for e in orch.events
            if isinstance(e, WorkerStarted | WorkerFinished)
        ]
        assert order.index(("WorkerFinished", first.step_id)) < order.index(("WorkerStarted", second.step_id))
        await eventually(lambda: _consuming(worker), what="consuming again")


async def test_a_consumer_opened_with_few_free_slots_widens_as_they_free(
    amqp_url: str, tmp_path: Path
) -> None:
    settings = worker_settings(amqp_url, tmp_path, worker_concurrency=4)
    queue = amqp.pool_queue("default")
    async with orchestrator(amqp_url) as orch, running_worker(settings) as worker:
        longs = [
            await orch.dispatch(make_dispatch(params={"duration_seconds": 2.5}, name=f"long-{i}"))
            for i in range(3)
        ]
        short = await orch.dispatch(make_dispatch(params={"duration_seconds": 0.3}, name="short"))
        await orch.finished(short)

        async def opened_narrow() -> bool:
            return worker._prefetch == {queue: 1} and worker.busy == 3

        # The slots filled, and the one the short step freed opened a consumer of prefetch 1.
        await eventually(opened_narrow, interval=0.01, what="a consumer opened with one free slot")
        for dispatch in longs:
            await orch.finished(dispatch)

        async def prefetches() -> list[int]:
            """The prefetch of each consumer of the pool's queue, as the broker has it."""
            out = await asyncio.to_thread(
                rabbitmqctl, "-s", "list_consumers", "-p", vhost_of(amqp_url), "queue_name", "prefetch_count"
            )
            rows = (line.split() for line in out.splitlines())
            return [int(prefetch) for name, prefetch in rows if name == queue]

        async def widened() -> list[int] | None:
            # Opened again each time its share doubled: how far depends on whether the long steps
            # ended together, but once every slot is free it holds more than half of them.
            found = await prefetches()
            return found if worker.busy == 0 and len(found) == 1 and found[0] > 4 / 2 else None

        found = await eventually(widened, timeout=15, what="one consumer with most slots as its prefetch")
        assert found == [worker._prefetch[queue]]


async def _consuming(worker: Worker) -> bool:
    return worker.consuming


async def test_poison_dispatch_is_dead_lettered(amqp_url: str, tmp_path: Path) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        await orch.publish_raw(b"{not json")
        await orch.publish_raw(b'{"v": 1, "run_id": "nope"}')
        dead = await orch.channel.get_queue(amqp.DEAD_QUEUE)

        async def dead_lettered() -> bool:
            return (await orch.stats(amqp.DEAD_QUEUE)).ready == 2

        await eventually(dead_lettered, what="both poison dispatches dead-lettered")
        first = await dead.get(fail=True)
        assert first is not None and first.body == b"{not json"
        await first.ack()
        # And the worker is still working.
        dispatch = await orch.dispatch(make_dispatch())
        assert (await orch.finished(dispatch)).outcome == "succeeded"
        assert worker.dispatches_total["invalid"] == 2


async def test_a_redelivered_dispatch_runs_once(amqp_url: str, tmp_path: Path) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        dispatch = make_dispatch(params={"duration_seconds": 1})
        await orch.dispatch(dispatch)
        await orch.dispatch(dispatch)
        await orch.finished(dispatch)
        await orch.dispatch(dispatch)  # after it finished

        async def settled() -> bool:
            return await orch.unacked() == 0 and (await orch.stats()).ready == 0

        await eventually(lambda: _duplicates(worker), what="the late copy recognised")
        await eventually(settled, timeout=15, what="the copies acknowledged")
        assert_lifecycle(orch, dispatch, worker)


async def _duplicates(worker: Worker) -> bool:
    return worker.dispatches_total["duplicate"] == 1


async def test_shutdown_fails_running_steps_for_a_retry_elsewhere(amqp_url: str, tmp_path: Path) -> None:
    settings = worker_settings(amqp_url, tmp_path, worker_shutdown_grace_seconds=0.5)
    async with orchestrator(amqp_url) as orch:
        worker = Worker(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.ready.wait(), 20)
        quick = await orch.dispatch(make_dispatch(params={"duration_seconds": 0.3}, name="quick"))
        slow = await orch.dispatch(make_dispatch(params={"duration_seconds": 60}, name="slow"))
        await orch.started(quick)
        await orch.started(slow)
        stop.set()
        await asyncio.sleep(0.1)
        later = await orch.dispatch(make_dispatch(name="later"))
        await asyncio.wait_for(task, 10)
        assert (await orch.finished(quick)).outcome == "succeeded"
        finished = await orch.finished(slow)
        assert finished.outcome == "failed"
        assert finished.error is not None
        assert (finished.error.code, finished.error.retryable) == ("worker_shutdown", True)
        assert_lifecycle(orch, slow, worker)
        # Nothing was taken after the stop: the later dispatch waits for another worker.
        stats = await orch.stats()
        assert (stats.ready, stats.consumers) == (1, 0)
        assert not orch.of(later)


async def test_worker_survives_a_lost_connection(amqp_url: str, tmp_path: Path) -> None:
    async with orchestrator(amqp_url) as orch, running_worker(worker_settings(amqp_url, tmp_path)) as worker:
        results = [{"name": f"r{i}", "status": "passed"} for i in range(40)]
        dispatch = await orch.dispatch(make_dispatch(params={"duration_seconds": 3, "results": results}))
        await orch.started(dispatch)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(
            rabbitmqctl, "close_all_connections", "--vhost", vhost_of(amqp_url), "test: broker away"
        )
        finished = await orch.finished(dispatch, timeout=15)
        assert finished.outcome == "succeeded"
        assert_lifecycle(orch, dispatch, worker, resent=True)
        assert finished.results_count == 40
        # The step kept running: it did not start over.
        assert sum(isinstance(e, WorkerStarted) for e in orch.of(dispatch)) == 1
        # Heartbeats and dispatches flow again after the reconnect.
        long = await orch.dispatch(make_dispatch(params={"duration_seconds": 30}))
        await orch.started(long)
        await eventually(lambda: _beats(orch, long), what="heartbeats after the reconnect")
        await orch.stop(worker, long)
        assert (await orch.finished(long, timeout=3)).outcome == "cancelled"


async def _beats(orch: Orchestrator, dispatch: StepDispatch) -> bool:
    return len(orch.heartbeats_with(dispatch)) >= 2


async def test_worker_started_before_the_broker_waits_for_it(amqp_url: str, tmp_path: Path) -> None:
    # A vhost that does not exist yet stands in for a broker that is not up yet.
    vhost = vhost_of(amqp_url) + "-late"
    url = amqp_url.rsplit("/", 1)[0] + "/" + vhost
    worker = Worker(worker_settings(url, tmp_path))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(1.0)
        assert not worker.ready.is_set()
        assert not task.done()
        await asyncio.to_thread(rabbitmqctl, "add_vhost", vhost)
        await asyncio.to_thread(rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        await asyncio.wait_for(worker.ready.wait(), 15)
        async with orchestrator(url) as orch:
            dispatch = await orch.dispatch(make_dispatch())
            assert (await orch.finished(dispatch)).outcome == "succeeded"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await asyncio.to_thread(rabbitmqctl, "delete_vhost", vhost)


async def test_stop_while_waiting_for_the_broker(tmp_path: Path) -> None:
    worker = Worker(worker_settings("amqp://guest:guest@127.0.0.1:5672/modelruns-never", tmp_path))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not worker.ready.is_set()


async def test_ops_endpoint(amqp_url: str, tmp_path: Path) -> None:
    settings = worker_settings(amqp_url, tmp_path, ops_port=0)
    async with orchestrator(amqp_url) as orch, running_worker(settings) as worker:
        dispatch = await orch.dispatch(make_dispatch(params={"duration_seconds": 30}))
        await orch.started(dispatch)
        assert worker.ops_port
        base = f"http://127.0.0.1:{worker.ops_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["rabbitmq"] == "ok"
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
            assert "modelruns_worker_slots_busy 1.0" in text
            assert "modelruns_worker_slots 4.0" in text
            await orch.stop(worker, dispatch)
            await orch.finished(dispatch)

            async def counted() -> bool:
                async with http.get(f"{base}/metrics") as response:
                    return 'modelruns_worker_steps_total{outcome="cancelled"} 1.0' in await response.text()

            await eventually(counted, what="the cancelled step counted")


async def test_many_dispatches_never_exceed_the_slots(amqp_url: str, tmp_path: Path) -> None:
    settings = worker_settings(amqp_url, tmp_path, worker_concurrency=3)
    async with orchestrator(amqp_url) as orch, running_worker(settings) as worker:
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, len(worker.running()))
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        dispatches = [
            await orch.dispatch(
                make_dispatch(
                    params={"duration_seconds": 0.1, "results": [{"name": "t", "status": "passed"}]}
                )
            )
            for _ in range(30)
        ]
        for dispatch in dispatches:
            finished = await orch.finished(dispatch, timeout=20)
            assert finished.outcome == "succeeded"
            assert finished.results_count == 1
            assert_lifecycle(orch, dispatch, worker)
        watcher.cancel()
        assert most == 3
        assert worker.dispatches_total["accepted"] == 30
        # A consumer is opened with as much prefetch as there are free slots, so most dispatches
        # are taken on their first delivery. How many cross a consumer's cancel on their way in
        # depends on timing: 0-6 on a quiet machine, up to 11 seen on a loaded one.
        assert worker.dispatches_total["requeued"] <= 15


async def test_a_command_steps_scratch_is_private_and_removed(amqp_url: str, tmp_path: Path) -> None:
    settings = worker_settings(amqp_url, tmp_path, worker_allow_commands=True)
    probe = tmp_path / "probe.txt"
    script = (
        "import os, sys; open(sys.argv[1], 'w').write(oct(os.stat('.').st_mode & 0o777) + ' ' + os.getcwd())"
    )
    async with orchestrator(amqp_url) as orch, running_worker(settings):
        step = await orch.dispatch(
            make_dispatch(kind="command", params={"argv": [PY, "-c", script, str(probe)]})
        )
        assert (await orch.finished(step)).outcome == "succeeded"
    mode, scratch = probe.read_text().split(" ", 1)
    assert mode == "0o700"
    assert not await asyncio.to_thread(Path(scratch).exists)
