"""The gateway application: `create_app(settings)` builds it, with its resources in cleanup_ctx.

Postgres is needed to serve (the app waits for it at start); RabbitMQ is not: the broker link is
made in the background, and until it is up (or whenever it drops) triggers and cancels still
answer, their messages waiting in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import dashboard, openapi
from gateway.auth import Authenticator, KeyCache, UsageRecorder
from gateway.context import (
    AUTHENTICATOR,
    BROKER,
    CLOSING,
    METRICS,
    OPENAPI,
    PAGE_TOKENS,
    PUBLISHER,
    RATE_LIMITER,
    REPOSITORY,
    SETTINGS,
)
from gateway.metrics import GatewayMetrics
from gateway.middleware import gateway_middleware, on_response_prepare
from gateway.page_tokens import PageTokens
from gateway.ratelimit import Policy, RateLimiter
from gateway.repository import GatewayRepository
from gateway.routes import OPERATIONS
from gateway.views import events, ops, runs, steps
from gateway.views.runs import MAX_BODY_BYTES
from shared import amqp
from shared.amqp import Broker
from shared.db.pool import wait_for_pool
from shared.outbox import OutboxPublisher
from shared.settings import Settings

log = logging.getLogger(__name__)

PAGE_TOKEN_SECRET_NAME = "page_token"

HANDLERS = {
    "listModelRuns": runs.list_runs,
    "triggerModelRun": runs.trigger_run,
    "getModelRun": runs.get_run,
    "cancelModelRun": runs.cancel_run,
    "listModelRunSteps": steps.list_steps,
    "listModelTestResults": steps.list_test_results,
    "streamModelRunEvents": events.stream_events,
}


async def _page_token_secret(settings: Settings, repo: GatewayRepository) -> bytes:
    if settings.page_token_secret is not None:
        return settings.page_token_secret.get_secret_value().encode()
    # Inserted if absent, then read: whichever gateway stored one first, all use it.
    return await repo.shared_secret(PAGE_TOKEN_SECRET_NAME, secrets.token_bytes(32))


async def _stop_task(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await wait_for_pool(settings.database_url, max_size=settings.database_pool_size)
    repo = GatewayRepository(pool)
    app[REPOSITORY] = repo
    app[PAGE_TOKENS] = PageTokens(await _page_token_secret(settings, repo))
    usage = UsageRecorder(repo.touch_keys)
    app[AUTHENTICATOR] = Authenticator(KeyCache(repo.find_key, settings.api_key_cache_seconds), usage)
    flusher: asyncio.Task[object] = asyncio.create_task(usage.run(), name="gateway-key-usage")
    try:
        yield
    finally:
        await _stop_task(flusher)
        await usage.flush()
        await pool.close()


async def _publish(broker: Broker, publisher: OutboxPublisher) -> None:
    await broker.connect(wait=True)
    log.info("broker connected", extra={"action": "gateway.broker_connected"})
    await publisher.run()


async def _messaging(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    broker = Broker(settings.amqp_url, name="modelruns-gateway")
    # Commands only: the orchestrator publishes the rest, the gateway's own events included, so
    # the gateway's broker user needs no write on any other exchange.
    publisher = OutboxPublisher(
        app[REPOSITORY].pool, broker, poll_seconds=settings.outbox_poll_seconds, exchanges={amqp.COMMANDS}
    )
    app[BROKER] = broker
    app[PUBLISHER] = publisher
    task: asyncio.Task[object] = asyncio.create_task(_publish(broker, publisher), name="gateway-outbox")
    try:
        yield
    finally:
        await _stop_task(task)
        with contextlib.suppress(Exception):
            await broker.close()


async def _closing(app: web.Application) -> None:
    app[CLOSING].set()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[gateway_middleware], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[METRICS] = GatewayMetrics()
    app[OPENAPI] = openapi.document()
    app[CLOSING] = asyncio.Event()
    app[RATE_LIMITER] = RateLimiter(
        Policy("default", settings.rate_limit_per_second, settings.rate_limit_burst),
        Policy("trigger", settings.trigger_rate_limit_per_second, settings.trigger_rate_limit_burst),
    )
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_messaging)
    app.on_shutdown.append(_closing)
    app.on_response_prepare.append(on_response_prepare)

    for operation in OPERATIONS:
        app.router.add_route(operation.method, operation.path, HANDLERS[operation.operation_id])
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/openapi.json", ops.openapi)
    dashboard.add_routes(app)
    return app
