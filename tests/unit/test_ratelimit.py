"""Token buckets and the RateLimit header fields they produce."""

from __future__ import annotations

import pytest

from gateway.ratelimit import PRUNE_EVERY_SECONDS, Policy, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(
    clock: Clock, *, rate: float = 100, burst: int = 200, trate: float = 20, tburst: int = 40
) -> RateLimiter:
    return RateLimiter(Policy("default", rate, burst), Policy("trigger", trate, tburst), clock=clock)


def test_policy_window_is_whole_seconds_to_refill() -> None:
    assert Policy("default", 100, 200).window == 2
    assert Policy("trigger", 20, 40).window == 2
    assert Policy("x", 3, 10).window == 4
    assert Policy("x", 1000, 10).window == 1


@pytest.mark.parametrize(("rate", "capacity"), [(0, 10), (-1, 10), (1, 0)])
def test_policy_needs_positive_numbers(rate: float, capacity: int) -> None:
    with pytest.raises(ValueError):
        Policy("x", rate, capacity)


def test_headers_match_the_contract() -> None:
    rl = limiter(Clock())
    decision = rl.check("k")
    assert decision.allowed
    assert decision.headers() == {
        "RateLimit-Policy": '"default";q=200;w=2',
        "RateLimit": '"default";r=199;t=0',
    }


def test_burst_then_refused_then_refilled() -> None:
    clock = Clock()
    rl = limiter(clock, rate=2, burst=3)
    assert [rl.check("k").remaining for _ in range(3)] == [2, 1, 0]
    refused = rl.check("k")
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.reset == 1 and refused.retry_after == 1
    assert refused.headers()["RateLimit"] == '"default";r=0;t=1'
    clock.advance(0.5)  # one token at 2/s
    assert rl.check("k").allowed
    assert not rl.check("k").allowed


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    clock = Clock()
    rl = limiter(clock, rate=0.25, burst=1)
    assert rl.check("k").allowed
    refused = rl.check("k")
    assert refused.retry_after == 4
    clock.advance(3.5)
    assert rl.check("k").retry_after == 1  # 0.5 s left rounds up to 1
    fast = limiter(clock, rate=1000, burst=1)
    assert fast.check("f").allowed
    assert fast.check("f").retry_after == 1


def test_refused_calls_take_nothing() -> None:
    clock = Clock()
    rl = limiter(clock, rate=1, burst=1)
    assert rl.check("k").allowed
    for _ in range(10):
        assert not rl.check("k").allowed
    clock.advance(1.0)
    assert rl.check("k").allowed


def test_keys_have_buckets_of_their_own() -> None:
    rl = limiter(Clock(), rate=1, burst=1)
    assert rl.check("a").allowed
    assert not rl.check("a").allowed
    assert rl.check("b").allowed


def test_bucket_never_exceeds_capacity() -> None:
    clock = Clock()
    rl = limiter(clock, rate=10, burst=5)
    rl.check("k")
    clock.advance(3600)
    assert rl.check("k").remaining == 4


def test_trigger_draws_from_both_and_reports_the_tighter() -> None:
    clock = Clock()
    rl = limiter(clock, rate=100, burst=200, trate=20, tburst=40)
    decision = rl.check("k", trigger=True)
    assert decision.policy.name == "trigger"
    assert decision.headers() == {"RateLimit-Policy": '"trigger";q=40;w=2', "RateLimit": '"trigger";r=39;t=0'}
    # The general bucket paid too.
    assert rl.check("k").remaining == 198


def test_general_binds_a_trigger_when_it_has_fewer_left() -> None:
    clock = Clock()
    rl = limiter(clock, rate=0.001, burst=5, trate=0.001, tburst=40)
    for _ in range(3):
        rl.check("k")
    decision = rl.check("k", trigger=True)
    assert decision.policy.name == "default" and decision.remaining == 1


def test_trigger_refused_by_its_own_bucket_leaves_general_untouched() -> None:
    clock = Clock()
    rl = limiter(clock, rate=0.001, burst=100, trate=0.001, tburst=2)
    assert rl.check("k", trigger=True).allowed
    assert rl.check("k", trigger=True).allowed
    refused = rl.check("k", trigger=True)
    assert not refused.allowed and refused.policy.name == "trigger"
    assert refused.retry_after >= 1
    # Reads still pass, and the refused trigger cost the general bucket nothing.
    assert rl.check("k").remaining == 97


def test_trigger_refused_by_the_general_bucket() -> None:
    rl = limiter(Clock(), rate=0.001, burst=1, trate=0.001, tburst=40)
    assert rl.check("k").allowed
    refused = rl.check("k", trigger=True)
    assert not refused.allowed and refused.policy.name == "default"


def test_idle_full_buckets_are_pruned() -> None:
    clock = Clock()
    rl = limiter(clock, rate=10, burst=10)
    for i in range(50):
        rl.check(f"key-{i}", trigger=i % 2 == 0)
    assert len(rl) == 50
    clock.advance(PRUNE_EVERY_SECONDS + 1)
    rl.check("fresh")
    assert len(rl) == 1


def test_buckets_still_refilling_are_kept() -> None:
    clock = Clock()
    rl = limiter(clock, rate=0.001, burst=10)
    rl.check("slow")
    clock.advance(PRUNE_EVERY_SECONDS + 1)
    rl.check("other")
    assert len(rl) == 2
