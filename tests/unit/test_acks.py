"""The ack ledger against a model of RabbitMQ's channel: a `multiple` ack settles every unacked
delivery up to its tag and needs that tag unacked, a single ack or nack needs its own. Whatever the
order of settling and planning, the broker acks exactly the deliveries asked to be acked, never one
still undecided or nacked, and never hears of a tag twice."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.acks import AlreadySettled, Ledger


class Channel:
    """The broker's side: deliveries 1..n, unacked until a frame settles them."""

    def __init__(self, n: int) -> None:
        self.unacked = set(range(1, n + 1))
        self.acked: set[int] = set()
        self.nacked: set[int] = set()
        self.frames = 0

    def ack(self, tag: int, *, multiple: bool) -> None:
        assert tag in self.unacked, f"unknown delivery tag {tag}"
        taken = {t for t in self.unacked if t <= tag} if multiple else {tag}
        self.unacked -= taken
        self.acked |= taken
        self.frames += 1

    def nack(self, tag: int) -> None:
        assert tag in self.unacked, f"unknown delivery tag {tag}"
        self.unacked.discard(tag)
        self.nacked.add(tag)
        self.frames += 1


def send(ledger: Ledger, channel: Channel) -> None:
    cover, singles = ledger.plan()
    if cover is not None:
        channel.ack(cover, multiple=True)
    for tag in singles:
        channel.ack(tag, multiple=False)


def play(n: int, order: tuple[int, ...], nacks: set[int], plan_after: set[int]) -> Channel:
    """Settle tags in `order` (nacking those in `nacks`), planning after the steps in `plan_after`;
    checks after every frame that nothing undecided was settled."""
    ledger, channel = Ledger(), Channel(n)
    asked: set[int] = set()
    for step, tag in enumerate(order):
        if tag in nacks:
            ledger.settle(tag)
            channel.nack(tag)
        else:
            ledger.ask(tag)
            asked.add(tag)
        if step in plan_after:
            send(ledger, channel)
        assert channel.acked <= asked, "acked a delivery nobody asked to ack"
        assert channel.acked.isdisjoint(channel.nacked)
    send(ledger, channel)
    assert channel.acked == asked and channel.nacked == nacks and not channel.unacked
    assert not ledger.asked and ledger.floor == max(order, default=0) == n and ledger.runs == 0
    return channel


def test_every_order_of_four_deliveries_with_every_mix_and_every_planning_point() -> None:
    n = 4
    for order in itertools.permutations(range(1, n + 1)):
        for nack_mask in range(2**n):
            nacks = {t for t in range(1, n + 1) if nack_mask >> (t - 1) & 1}
            for plan_mask in range(2**n):
                plan_after = {s for s in range(n) if plan_mask >> s & 1}
                play(n, order, nacks, plan_after)


@given(
    st.integers(min_value=1, max_value=60).flatmap(
        lambda n: st.tuples(
            st.permutations(list(range(1, n + 1))),
            st.sets(st.integers(min_value=1, max_value=n)),
            st.sets(st.integers(min_value=0, max_value=n - 1)),
        )
    )
)
def test_any_order_settles_exactly_what_was_asked(case: tuple[list[int], set[int], set[int]]) -> None:
    order, nacks, plan_after = case
    play(len(order), tuple(order), nacks, plan_after)


def test_acks_in_delivery_order_go_as_one_frame() -> None:
    channel = play(50, tuple(range(1, 51)), set(), set())
    assert channel.frames == 1


def test_a_delivery_never_settled_costs_one_run_not_one_entry_a_tag() -> None:
    ledger = Ledger()
    ledger.ask(1)
    for tag in range(3, 10_003):
        if tag % 2:
            ledger.ask(tag)
        else:
            ledger.settle(tag)
        if tag % 100 == 0:
            ledger.plan()
    ledger.plan()
    assert (ledger.floor, ledger.runs) == (1, 1)
    assert not ledger.is_settled(2) and ledger.is_settled(10_002)
    ledger.settle(2)
    assert (ledger.floor, ledger.runs) == (10_002, 0)


def test_an_undecided_delivery_stops_the_cover_and_the_rest_go_alone() -> None:
    ledger = Ledger()
    for tag in (1, 2, 4, 5):
        ledger.ask(tag)
    assert ledger.plan() == (2, [4, 5])
    assert ledger.floor == 2
    ledger.ask(3)
    assert ledger.plan() == (3, [])
    assert ledger.floor == 5


@pytest.mark.parametrize(
    ("asked", "nacked", "plan", "floor"),
    [
        # A cover passes over a nacked delivery, but not past the last one asked.
        ({1, 3}, {2, 4}, (3, []), 4),
        ({2}, {1}, (2, []), 2),
        ({3}, {1}, (None, [3]), 1),
        (set(), {1}, (None, []), 1),
    ],
)
def test_plans_around_nacked_deliveries(
    asked: set[int], nacked: set[int], plan: tuple[int | None, list[int]], floor: int
) -> None:
    ledger = Ledger()
    for tag in sorted(asked | nacked):
        if tag in nacked:
            ledger.settle(tag)
        else:
            ledger.ask(tag)
    assert ledger.plan() == plan
    assert ledger.floor == floor


@pytest.mark.parametrize("first", ["ask", "settle"])
@pytest.mark.parametrize("second", ["ask", "settle"])
def test_a_tag_settled_twice_is_refused(first: str, second: str) -> None:
    ledger = Ledger()
    getattr(ledger, first)(1)
    with pytest.raises(AlreadySettled):
        getattr(ledger, second)(1)
    ledger.plan()
    with pytest.raises(AlreadySettled):
        getattr(ledger, second)(1)


def test_tags_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        Ledger().ask(0)
