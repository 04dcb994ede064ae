"""The orchestrator's batcher: what goes into one transaction, in what order, and who hears of a
failure. Pure asyncio, no services: `apply` is a recorder the tests hold open or fail at will."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from uuid import UUID, uuid4

import pytest

from orchestrator.batching import Batcher

Batch = dict[UUID, list[str]]


class Recorder:
    """An `apply` that records each batch and waits for the test to let it commit."""

    def __init__(self, *, hold: bool = False, fail: set[str] | None = None) -> None:
        self.batches: list[Batch] = []
        self.open = 0
        self.most_open = 0
        self.hold = hold
        self.fail = fail or set()
        self.gate = asyncio.Event()
        self.entered = asyncio.Condition()
        self.runs_open: list[set[UUID]] = []

    async def __call__(self, batch: Mapping[UUID, Sequence[str]]) -> None:
        copy = {run: list(items) for run, items in batch.items()}
        mine = set(copy)
        for other in self.runs_open:
            assert not other & mine, "a run was in two open transactions"
        self.runs_open.append(mine)
        self.batches.append(copy)
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        async with self.entered:
            self.entered.notify_all()
        try:
            if self.hold:
                await self.gate.wait()
            await asyncio.sleep(0)
            bad = sorted(self.fail.intersection(itertools.chain(*copy.values())))
            if bad:
                raise ValueError(f"bad item {bad[0]}")
        finally:
            self.open -= 1
            self.runs_open.remove(mine)

    async def until_batches(self, n: int) -> None:
        async with self.entered:
            await asyncio.wait_for(self.entered.wait_for(lambda: len(self.batches) >= n), 5)


async def test_a_quiet_batcher_sends_the_first_item_at_once_and_alone() -> None:
    recorder = Recorder()
    batcher: Batcher[str] = Batcher(recorder)
    run = uuid4()
    await asyncio.wait_for(batcher.submit(run, "a"), 5)
    assert recorder.batches == [{run: ["a"]}]


async def test_items_that_arrive_meanwhile_go_together_in_the_next_batch() -> None:
    recorder = Recorder(hold=True)
    batcher: Batcher[str] = Batcher(recorder, in_flight=1)
    runs = [uuid4() for _ in range(3)]
    first = asyncio.create_task(batcher.submit(runs[0], "a0"))
    await recorder.until_batches(1)
    rest = [
        asyncio.create_task(batcher.submit(run, f"{name}{i}"))
        for i, run in enumerate(runs)
        for name in ("b", "c")
    ]
    await asyncio.sleep(0)
    assert batcher.waiting == 6
    recorder.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert recorder.batches == [
        {runs[0]: ["a0"]},
        {runs[0]: ["b0", "c0"], runs[1]: ["b1", "c1"], runs[2]: ["b2", "c2"]},
    ]


async def test_a_run_is_never_in_two_open_transactions_and_keeps_its_order() -> None:
    recorder = Recorder(hold=True)
    batcher: Batcher[str] = Batcher(recorder, in_flight=4)
    run, other = uuid4(), uuid4()
    tasks = [asyncio.create_task(batcher.submit(run, "1"))]
    await recorder.until_batches(1)
    tasks += [asyncio.create_task(batcher.submit(run, str(i))) for i in range(2, 5)]
    tasks.append(asyncio.create_task(batcher.submit(other, "x")))
    # The other run goes at once, beside the open transaction; the first run's items wait.
    await recorder.until_batches(2)
    assert recorder.batches[1] == {other: ["x"]}
    recorder.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert recorder.batches[2] == {run: ["2", "3", "4"]}
    seen = [item for batch in recorder.batches for item in batch.get(run, [])]
    assert seen == ["1", "2", "3", "4"]


@pytest.mark.parametrize("in_flight", [1, 2, 3])
async def test_no_more_than_in_flight_transactions_are_open(in_flight: int) -> None:
    recorder = Recorder()
    batcher: Batcher[str] = Batcher(recorder, in_flight=in_flight, max_batch=3)
    runs = [uuid4() for _ in range(10)]
    await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(run, f"{n}-{i}") for n in range(5) for i, run in enumerate(runs))), 5
    )
    assert recorder.most_open <= in_flight
    assert all(sum(map(len, b.values())) <= 3 for b in recorder.batches)
    for i, run in enumerate(runs):
        seen = [item for batch in recorder.batches for item in batch.get(run, [])]
        assert seen == [f"{n}-{i}" for n in range(5)]


async def test_a_run_with_more_waiting_than_a_batch_holds_goes_in_several() -> None:
    recorder = Recorder(hold=True)
    batcher: Batcher[str] = Batcher(recorder, in_flight=1, max_batch=4)
    run, other = uuid4(), uuid4()
    tasks = [asyncio.create_task(batcher.submit(other, "o"))]
    await recorder.until_batches(1)
    tasks += [asyncio.create_task(batcher.submit(run, str(i))) for i in range(10)]
    await asyncio.sleep(0)
    recorder.gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert [b.get(run) for b in recorder.batches[1:]] == [
        ["0", "1", "2", "3"],
        ["4", "5", "6", "7"],
        ["8", "9"],
    ]


async def test_one_bad_item_fails_only_its_own_caller() -> None:
    recorder = Recorder(hold=True, fail={"bad"})
    batcher: Batcher[str] = Batcher(recorder, in_flight=1)
    run, other = uuid4(), uuid4()
    first = asyncio.create_task(batcher.submit(other, "first"))
    await recorder.until_batches(1)
    good = [
        asyncio.create_task(batcher.submit(run, "r1")),
        asyncio.create_task(batcher.submit(other, "o1")),
    ]
    bad = asyncio.create_task(batcher.submit(run, "bad"))
    after = asyncio.create_task(batcher.submit(run, "r2"))
    await asyncio.sleep(0)
    recorder.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *good, after), 5)
    with pytest.raises(ValueError, match="bad item bad"):
        await bad
    # The whole batch, then each run alone (the other run commits), then the failing run's items.
    assert recorder.batches[1] == {run: ["r1", "bad", "r2"], other: ["o1"]}
    assert recorder.batches[2:] == [
        {run: ["r1", "bad", "r2"]},
        {run: ["r1"]},
        {run: ["bad"]},
        {run: ["r2"]},
        {other: ["o1"]},
    ]


class DatabaseAway(Exception):
    pass


async def test_an_error_that_is_no_items_fault_fails_the_batch_at_once() -> None:
    calls: list[Batch] = []
    release = asyncio.Event()

    async def apply(batch: Mapping[UUID, Sequence[str]]) -> None:
        calls.append({run: list(items) for run, items in batch.items()})
        if len(calls) == 1:
            await release.wait()
            return
        raise DatabaseAway("connection refused")

    batcher: Batcher[str] = Batcher(apply, in_flight=1, whole=(DatabaseAway,))
    runs = [uuid4() for _ in range(3)]
    first = asyncio.create_task(batcher.submit(uuid4(), "first"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.submit(run, "x")) for run in runs]
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(first, 5)
    outcomes = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    assert all(isinstance(o, DatabaseAway) for o in outcomes)
    assert len(calls) == 2, "the batch was not tried again item by item"


async def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    recorder = Recorder(hold=True)
    batcher: Batcher[str] = Batcher(recorder, in_flight=1)
    run = uuid4()
    first = asyncio.create_task(batcher.submit(run, "a"))
    await recorder.until_batches(1)
    second = asyncio.create_task(batcher.submit(run, "b"))
    third = asyncio.create_task(batcher.submit(run, "c"))
    await asyncio.sleep(0)
    second.cancel()
    recorder.gate.set()
    await asyncio.wait_for(asyncio.gather(first, third), 5)
    assert second.cancelled()
    assert recorder.batches[1] == {run: ["b", "c"]}


def test_sizes_below_one_are_refused() -> None:
    async def apply(_: Mapping[UUID, Sequence[str]]) -> None:
        return None

    with pytest.raises(ValueError):
        Batcher(apply, max_batch=0)
    with pytest.raises(ValueError):
        Batcher(apply, in_flight=0)
