"""The ops port of the orchestrator and the worker: /healthz, /readyz and /metrics on
MODELRUNS_OPS_PORT when it is set (the gateway serves these on its own port)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)
Readiness = Callable[[], Awaitable[dict[str, str]]]
Refresh = Callable[[], Awaitable[None]]
# Seconds from a message's publish to the start of its handling: sub-second when consumers keep
# up, minutes when a backlog builds.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


def lag_histogram(registry: CollectorRegistry | None = None) -> Histogram:
    """Consumer lag, one series per queue; the same name in the orchestrator and the worker."""
    return Histogram(
        "modelruns_consumer_lag_seconds",
        "Time from a message being published to its consumer starting on it, by queue.",
        ["queue"],
        buckets=LAG_BUCKETS,
        registry=registry,
    )


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: Readiness,
        refresh: Refresh | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.readiness = readiness
        # Gauges that cost a query (the outbox depth) are read at scrape time, not in the background.
        self.refresh = refresh
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
        if self.refresh is not None:
            try:
                await self.refresh()
            except Exception as exc:
                # A scrape still answers: the gauges keep their last values.
                log.warning(
                    "metrics refresh failed", extra={"action": "ops.refresh_failed", "error": repr(exc)}
                )
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
