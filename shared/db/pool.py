"""Connection pools with the codecs every service needs (jsonb as Python values, via orjson)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import orjson

from shared import jsonutil, tracing
from shared.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# A plain connection or one borrowed from a pool: every query helper takes either.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# What a dropped or refused connection looks like from asyncpg: turned into DatabaseUnavailable.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
)


def _dumps(value: Any) -> str:
    return jsonutil.dumps_str(value)


async def _init(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    if tracing.enabled():
        # Only when tracing: with a logger, asyncpg times every query.
        conn.add_query_logger(tracing.record_query)


async def _keep_session(_: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query: no service keeps session state on a pooled
    connection (no LISTEN, SET, cursors or advisory locks; migrations use their own connection),
    and the query would cost a round trip on every release. An open transaction is still rolled
    back by asyncpg before this is called."""


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init,
            reset=_keep_session,
            command_timeout=30,
        )
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
    assert pool is not None
    return pool


async def wait_for_pool(url: str, *, max_size: int = 10, stop: asyncio.Event | None = None) -> asyncpg.Pool:
    """Connect, waiting for Postgres to come up: a service started before its database waits for it."""
    delay = 0.2
    while True:
        try:
            return await create_pool(url, max_size=max_size)
        except DatabaseUnavailable as exc:
            log.warning("postgres not reachable, retrying", extra={"action": "db.wait", "error": str(exc)})
            if stop is not None and stop.is_set():
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
