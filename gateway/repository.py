"""The gateway's one repository: every statement it runs, named in queries.sql, on an injected pool.

Connection trouble is turned into DatabaseUnavailable here, at the boundary, so that views answer a
fast 503 instead of hanging or leaking a driver error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared import apikeys
from shared.db import queries
from shared.db.pool import CONNECTION_ERRORS, Conn
from shared.errors import DatabaseUnavailable

Q = queries.load("gateway", "queries.sql")

# Waiting longer for a connection than a client waits for an answer helps nobody.
ACQUIRE_TIMEOUT = 5.0
PING_TIMEOUT = 2.0

Record = asyncpg.Record


class GatewayRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        try:
            # asyncio.timeout rather than acquire(timeout=): asyncpg's own runs the acquire in a
            # task of its own (asyncio.wait_for), a cost on every request.
            async with asyncio.timeout(ACQUIRE_TIMEOUT):
                conn = await self.pool.acquire()
            try:
                yield conn
            finally:
                await self.pool.release(conn)
        except CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"postgres unavailable: {exc!r}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    # Service

    async def ping(self) -> None:
        async with self.connection() as conn:
            await conn.fetchval(Q.ping, timeout=PING_TIMEOUT)

    async def shared_secret(self, name: str, candidate: bytes) -> bytes:
        """The secret every gateway shares: the first one stored wins."""
        async with self.connection() as conn:
            await conn.execute(Q.ensure_secret, name, candidate)
            value = await conn.fetchval(Q.get_secret, name)
        return bytes(value)

    async def find_key(self, prefix: str) -> apikeys.StoredKey | None:
        async with self.connection() as conn:
            return await apikeys.find_key(conn, prefix)

    async def touch_keys(self, used: Mapping[str, datetime]) -> None:
        async with self.connection() as conn:
            await apikeys.touch_keys(conn, used)

    # Reads

    async def get_run(self, run_id: UUID, tenant_id: str) -> Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(Q.get_run, run_id, tenant_id)

    async def list_runs(
        self, tenant_id: str, limit: int, status: str | None, after: tuple[datetime, UUID] | None
    ) -> list[Record]:
        async with self.connection() as conn:
            if status is None:
                if after is None:
                    return await conn.fetch(Q.list_runs_first, tenant_id, limit)
                return await conn.fetch(Q.list_runs_after, tenant_id, limit, *after)
            if after is None:
                return await conn.fetch(Q.list_runs_status_first, tenant_id, limit, status)
            return await conn.fetch(Q.list_runs_status_after, tenant_id, limit, status, *after)

    async def list_steps(self, run_id: UUID, tenant_id: str) -> list[Record] | None:
        """The run's steps in definition order; None when the tenant has no such run."""
        async with self.connection() as conn:
            if not await conn.fetchval(Q.run_exists, run_id, tenant_id):
                return None
            return await conn.fetch(Q.list_steps, run_id)

    async def step_in_run(self, step_id: UUID, run_id: UUID, tenant_id: str) -> bool:
        async with self.connection() as conn:
            return bool(await conn.fetchval(Q.step_in_run, step_id, run_id, tenant_id))

    async def list_results(
        self, step_id: UUID, limit: int, status: str | None, after: tuple[int, int] | None
    ) -> list[Record]:
        async with self.connection() as conn:
            if status is None:
                if after is None:
                    return await conn.fetch(Q.list_results_first, step_id, limit)
                return await conn.fetch(Q.list_results_after, step_id, limit, *after)
            if after is None:
                return await conn.fetch(Q.list_results_status_first, step_id, limit, status)
            return await conn.fetch(Q.list_results_status_after, step_id, limit, status, *after)

    async def events_after(self, run_id: UUID, runseq: int, limit: int) -> list[Record]:
        async with self.connection() as conn:
            return await conn.fetch(Q.events_after, run_id, runseq, limit)

    async def run_progress(self, run_id: UUID) -> Record | None:
        async with self.connection() as conn:
            return await conn.fetchrow(Q.run_progress, run_id)

    # Writes, inside a transaction the caller holds

    @staticmethod
    async def find_idempotency_key(conn: Conn, tenant_id: str, key: str) -> Record | None:
        return await conn.fetchrow(Q.find_idempotency_key, tenant_id, key)

    @staticmethod
    async def claim_idempotency_key(
        conn: Conn, tenant_id: str, key: str, body_hash: bytes, run_id: UUID
    ) -> bool:
        """True when the key is now this run's; False when a live claim of another run holds it."""
        return await conn.fetchval(Q.claim_idempotency_key, tenant_id, key, body_hash, run_id) is not None

    @staticmethod
    async def insert_run(
        conn: Conn,
        *,
        run_id: UUID,
        tenant_id: str,
        model: dict[str, Any],
        labels: dict[str, str],
        parameters: dict[str, Any],
        fail_fast: bool,
        step_counts: dict[str, int],
        test_counts: dict[str, int],
    ) -> Record:
        row = await conn.fetchrow(
            Q.insert_run, run_id, tenant_id, model, labels, parameters, fail_fast, step_counts, test_counts
        )
        assert row is not None
        return row

    @staticmethod
    async def insert_steps(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> None:
        await conn.executemany(Q.insert_step, rows)

    @staticmethod
    async def insert_run_event(conn: Conn, run_id: UUID, event: dict[str, Any]) -> None:
        await conn.execute(
            Q.insert_run_event, run_id, event["runseq"], UUID(event["id"]), event["type"], event
        )

    @staticmethod
    async def lock_run(conn: Conn, run_id: UUID, tenant_id: str) -> Record | None:
        return await conn.fetchrow(Q.lock_run, run_id, tenant_id)

    @staticmethod
    async def request_cancel(conn: Conn, run_id: UUID, status: str, sources: Sequence[str]) -> Record | None:
        return await conn.fetchrow(Q.request_cancel, run_id, status, list(sources))
