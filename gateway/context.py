"""Typed keys for what the app and each request carry."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.auth import Authenticator, Principal
from gateway.metrics import GatewayMetrics
from gateway.page_tokens import PageTokens
from gateway.ratelimit import Decision, RateLimiter
from gateway.repository import GatewayRepository
from shared.amqp import Broker
from shared.outbox import OutboxPublisher
from shared.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
REPOSITORY = web.AppKey("repository", GatewayRepository)
BROKER = web.AppKey("broker", Broker)
PUBLISHER = web.AppKey("publisher", OutboxPublisher)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
PAGE_TOKENS = web.AppKey("page_tokens", PageTokens)
METRICS = web.AppKey("metrics", GatewayMetrics)
OPENAPI = web.AppKey("openapi", bytes)
# Set when the app shuts down, so that event streams end instead of holding the shutdown.
CLOSING = web.AppKey("closing", asyncio.Event)
BACKGROUND = web.AppKey("background", dict[str, "asyncio.Task[Any]"])

REQUEST_ID = web.RequestKey("request_id", str)
STARTED = web.RequestKey("started", float)
# The matched route's template, found once for the span and the metrics.
ROUTE = web.RequestKey("route", str)
PRINCIPAL = web.RequestKey("principal", Principal)
RATE_DECISION = web.RequestKey("rate_decision", Decision)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]
