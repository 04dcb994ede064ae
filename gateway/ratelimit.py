"""Token buckets per API key, in this process only (N gateways allow N times the rate).

Every call draws from the key's `default` bucket and a trigger also from its `trigger` bucket; a
call is let through only when every bucket it draws from has a token, and then takes one from each.
The answer carries the IETF httpapi-ratelimit-headers fields of the bucket that binds.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Buckets idle long enough to be full again carry no state worth keeping.
PRUNE_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Policy:
    name: str
    rate: float  # tokens per second
    capacity: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.capacity < 1:
            raise ValueError("a rate-limit policy needs a positive rate and a capacity of at least 1")

    @property
    def window(self) -> int:
        """Whole seconds to refill from empty (the `w` parameter)."""
        return max(1, math.ceil(self.capacity / self.rate))

    @functools.cached_property
    def policy_header(self) -> str:
        """The `RateLimit-Policy` field, the same on every answer: made once."""
        return f'"{self.name}";q={self.capacity};w={self.window}'


@dataclass
class Bucket:
    policy: Policy
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(
                float(self.policy.capacity), self.tokens + (now - self.updated) * self.policy.rate
            )
            self.updated = now

    def seconds_to_next(self) -> int:
        """Whole seconds until a token is there (0 while one is)."""
        if self.tokens >= 1:
            return 0
        return max(1, math.ceil((1 - self.tokens) / self.policy.rate))

    def full_at(self) -> float:
        return self.updated + (self.policy.capacity - self.tokens) / self.policy.rate


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy: Policy
    remaining: int  # `r`: whole tokens left
    reset: int  # `t`: seconds until the next token, 0 while some are left

    @property
    def retry_after(self) -> int:
        return max(1, self.reset)

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": self.policy.policy_header,
            "RateLimit": f'"{self.policy.name}";r={self.remaining};t={self.reset}',
        }


@dataclass
class _KeyBuckets:
    general: Bucket
    trigger: Bucket | None = None
    touched: float = field(default=0.0)


class RateLimiter:
    def __init__(
        self, general: Policy, trigger: Policy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.general = general
        self.trigger = trigger
        self._clock = clock
        self._keys: dict[str, _KeyBuckets] = {}
        self._last_prune = clock()

    def __len__(self) -> int:
        return len(self._keys)

    def _buckets(self, key: str, now: float, trigger: bool) -> list[Bucket]:
        entry = self._keys.get(key)
        if entry is None:
            entry = _KeyBuckets(Bucket(self.general, float(self.general.capacity), now))
            self._keys[key] = entry
        if trigger and entry.trigger is None:
            entry.trigger = Bucket(self.trigger, float(self.trigger.capacity), now)
        entry.touched = now
        buckets = [entry.general]
        if trigger and entry.trigger is not None:
            buckets.append(entry.trigger)
        return buckets

    def check(self, key: str, *, trigger: bool = False) -> Decision:
        """Take a token for one call of `key` when every bucket it draws from has one."""
        now = self._clock()
        self._maybe_prune(now)
        buckets = self._buckets(key, now, trigger)
        for bucket in buckets:
            bucket.refill(now)
        empty = [b for b in buckets if b.tokens < 1]
        if empty:
            binding = max(empty, key=lambda b: b.seconds_to_next())
            return Decision(False, binding.policy, 0, binding.seconds_to_next())
        for bucket in buckets:
            bucket.tokens -= 1
        # The bucket with fewer tokens left binds; on a tie the narrower (later listed) one.
        binding = min(reversed(buckets), key=lambda b: b.tokens)
        return Decision(True, binding.policy, math.floor(binding.tokens), binding.seconds_to_next())

    def _maybe_prune(self, now: float) -> None:
        if now - self._last_prune < PRUNE_EVERY_SECONDS:
            return
        self._last_prune = now
        for key in [k for k, e in self._keys.items() if self._is_idle(e, now)]:
            del self._keys[key]

    @staticmethod
    def _is_idle(entry: _KeyBuckets, now: float) -> bool:
        buckets = [entry.general] + ([entry.trigger] if entry.trigger is not None else [])
        return all(b.full_at() <= now for b in buckets)
