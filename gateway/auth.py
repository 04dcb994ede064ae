"""Bearer API keys: parsing, a short-lived cache of the stored keys, and batched last-used times.

The cache keeps an answer (a key or its absence) at most `api_key_cache_seconds` (<= 1 s), so a
revoke reaches every gateway within 2 s. Last-used times are gathered in memory and written in one
UPDATE every few seconds, never per request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import apikeys
from shared.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

READ = "runs:read"
WRITE = "runs:write"
_BEARER = re.compile(r"^Bearer +(\S+) *$", re.IGNORECASE)
FLUSH_SECONDS = 3.0


class Unauthenticated(Exception):
    """Missing, malformed, unknown or revoked key; the message says which, for the logs."""


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_prefix: str
    scopes: frozenset[str]


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthenticated("no Authorization header")
    match = _BEARER.fullmatch(header)
    if match is None:
        raise Unauthenticated("the Authorization header is not 'Bearer <api key>'")
    return match[1]


class KeyCache:
    """Stored keys by prefix, each answer kept `ttl` seconds; concurrent misses share one lookup."""

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[apikeys.StoredKey | None]],
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, apikeys.StoredKey | None]] = {}
        self._pending: dict[str, asyncio.Future[apikeys.StoredKey | None]] = {}

    async def get(self, prefix: str) -> apikeys.StoredKey | None:
        now = self._clock()
        entry = self._entries.get(prefix)
        if entry is not None and entry[0] > now:
            return entry[1]
        pending = self._pending.get(prefix)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[apikeys.StoredKey | None] = asyncio.get_running_loop().create_future()
        self._pending[prefix] = future
        try:
            found = await self._lookup(prefix)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Nobody else may be waiting; do not let the loop report an unretrieved exception.
            future.exception()
            raise
        else:
            future.set_result(found)
        finally:
            del self._pending[prefix]
        if self._ttl > 0:
            if len(self._entries) >= self._max_entries:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()
            self._entries[prefix] = (now + self._ttl, found)
        return found


class UsageRecorder:
    """Last-used times, written in batches."""

    def __init__(self, write: Callable[[Mapping[str, datetime]], Awaitable[None]]) -> None:
        self._write = write
        self._used: dict[str, datetime] = {}

    def record(self, prefix: str) -> None:
        self._used[prefix] = datetime.now(UTC)

    async def flush(self) -> int:
        if not self._used:
            return 0
        batch, self._used = self._used, {}
        try:
            await self._write(batch)
        except DatabaseUnavailable as exc:
            # Kept for the next flush, unless newer times arrived meanwhile.
            for prefix, when in batch.items():
                self._used.setdefault(prefix, when)
            log.warning("cannot write key usage", extra={"action": "auth.usage_deferred", "error": repr(exc)})
            return 0
        return len(batch)

    async def run(self, interval: float = FLUSH_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.flush()


class Authenticator:
    def __init__(self, cache: KeyCache, usage: UsageRecorder) -> None:
        self.cache = cache
        self.usage = usage

    async def authenticate(self, header: str | None) -> Principal:
        key = bearer_token(header)
        prefix = apikeys.parse_key(key)
        if prefix is None:
            raise Unauthenticated("malformed api key")
        stored = await self.cache.get(prefix)
        if stored is None or not apikeys.matches(stored, key):
            raise Unauthenticated("unknown api key")
        if stored.revoked:
            raise Unauthenticated("revoked api key")
        self.usage.record(prefix)
        return Principal(stored.tenant_id, prefix, stored.scopes)
