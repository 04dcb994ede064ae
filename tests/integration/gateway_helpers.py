"""A gateway on the test database, its client, and keys of each kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application

from gateway.app import create_app
from shared import apikeys
from shared.db import queries
from shared.settings import Settings

SQL = queries.load("tests.integration", "gateway_fixtures.sql")
# Nothing listens on port 1: a broker that is down for the whole test.
CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1/"
TENANT = "acme"
OTHER_TENANT = "globex"


def synthetic_step(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "synthetic", "params": {}, **extra}


def trigger_body(*names: str, **extra: Any) -> dict[str, Any]:
    steps = [synthetic_step(n) for n in (names or ("train",))]
    return {"model": {"name": "iris-classifier", "version": "1.4.0"}, "steps": steps, **extra}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Gateway:
    app: Application
    client: TestClient[Any, Application]
    pool: asyncpg.Pool
    key: str  # acme, runs:read + runs:write
    reader: str  # acme, runs:read
    writer: str  # acme, runs:write
    other: str  # globex, both scopes

    async def get(self, path: str, *, key: str | None = None, **kw: Any) -> ClientResponse:
        return await self.client.get(path, headers=self._headers(key, kw.pop("headers", None)), **kw)

    async def post(self, path: str, *, key: str | None = None, **kw: Any) -> ClientResponse:
        return await self.client.post(path, headers=self._headers(key, kw.pop("headers", None)), **kw)

    def _headers(self, key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = bearer(key or self.key)
        headers.update(extra or {})
        return headers

    async def trigger(self, body: Any = None, *, key: str | None = None, **kw: Any) -> dict[str, Any]:
        resp = await self.post("/model-runs", key=key, json=body or trigger_body(), **kw)
        assert resp.status == 201, await resp.text()
        run: dict[str, Any] = await resp.json()
        return run


def without_broker(settings: Settings, **overrides: Any) -> Settings:
    """The same settings with the broker down: the gateway must serve anyway."""
    return settings.model_copy(update={"amqp_url": CLOSED_BROKER, **overrides})


def broker_down_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings on the test database with no broker at all, for tests about HTTP behaviour only
    (a vhost per test costs seconds of rabbitmqctl)."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "amqp_url": CLOSED_BROKER,
        "http_port": 0,
        "outbox_poll_seconds": 0.2,
        "page_token_secret": "test-secret",
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_gateway(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    keys = {
        "key": await apikeys.create_key(pool, TENANT, ["runs:read", "runs:write"]),
        "reader": await apikeys.create_key(pool, TENANT, ["runs:read"]),
        "writer": await apikeys.create_key(pool, TENANT, ["runs:write"]),
        "other": await apikeys.create_key(pool, OTHER_TENANT, ["runs:read", "runs:write"]),
    }
    app = create_app(settings)
    client: TestClient[Any, Application] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Gateway(app=app, client=client, pool=pool, **keys)
    finally:
        await client.close()
