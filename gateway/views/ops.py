"""The unauthenticated service endpoints: /healthz, /readyz, /metrics, /openapi.json."""

from __future__ import annotations

from aiohttp import web

from gateway.context import BROKER, METRICS, OPENAPI, REPOSITORY
from gateway.responses import json_response
from shared.errors import DatabaseUnavailable


async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """Ready means Postgres answers; the broker is reported but not required, since triggers wait
    in the outbox while it is away."""
    try:
        await request.app[REPOSITORY].ping()
        postgres = "ok"
    except DatabaseUnavailable:
        postgres = "down"
    rabbitmq = "ok" if request.app[BROKER].up_for() > 0 else "down"
    ready = postgres == "ok"
    return json_response(
        {"status": "ok" if ready else "unavailable", "postgres": postgres, "rabbitmq": rabbitmq},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.StreamResponse:
    registry = request.app[METRICS]
    return web.Response(body=registry.render(), headers={"Content-Type": registry.content_type})


async def openapi(request: web.Request) -> web.StreamResponse:
    response = web.Response(body=request.app[OPENAPI])
    response.content_type = "application/json"
    return response
