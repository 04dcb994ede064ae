"""The ops port of the orchestrator and the worker: /healthz, /readyz and /metrics on
MODELRUNS_OPS_PORT when it is set (the gateway serves these on its own port)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)
Readiness = Callable[[], Awaitable[dict[str, str]]]


class OpsServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, readiness: Readiness) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.readiness = readiness
        self.runner: web.AppRunner | None = None
        self.bound_port: int | None = None  # the port bound, which differs from `port` when it is 0

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        checks = await self.readiness()
        ok = all(value == "ok" for value in checks.values())
        return web.json_response(
            {"status": "ok" if ok else "unavailable", **checks}, status=200 if ok else 503
        )

    async def metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        self.bound_port = int(self.runner.addresses[0][1]) if self.runner.addresses else self.port
        log.info("ops endpoints serving", extra={"action": "ops.ready", "port": self.bound_port})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
