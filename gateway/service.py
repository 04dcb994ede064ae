"""`serve(settings, stop)`: the gateway as a service, on settings.http_host:http_port until `stop`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from gateway.app import create_app
from shared.settings import Settings

log = logging.getLogger(__name__)

# Event streams end when the app shuts down; this bounds whatever else is still being answered.
SHUTDOWN_TIMEOUT = 5.0


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    runner = web.AppRunner(create_app(settings), shutdown_timeout=SHUTDOWN_TIMEOUT)
    # Startup waits for Postgres; a stop meanwhile must not wait for it too.
    setup = asyncio.ensure_future(runner.setup())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({setup, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not setup.done():
        setup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await setup
        return
    setup.result()
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        log.info(
            "gateway listening",
            extra={"action": "gateway.listening", "addresses": [str(a) for a in runner.addresses]},
        )
        await stop.wait()
    finally:
        log.info("gateway stopping", extra={"action": "gateway.stopping"})
        await runner.cleanup()
