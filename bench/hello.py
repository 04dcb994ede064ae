"""The ceilings for one gateway process, each one aiohttp process on uvloop:

- `hello.py PORT`: a hello-world handler at `/`;
- `hello.py PORT DATABASE_URL RUN_ID TENANT`: a bare GET run at `/run`, the gateway's own
  statement on the gateway's own pool, rendered as the gateway renders it, with none of the
  gateway's layers (authentication, limits, metrics, tracing, problem details). The gateway's
  share of it is what those layers cost.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import uvloop
from aiohttp import web

from gateway.repository import Q
from gateway.responses import json_response
from shared.db.pool import create_pool
from shared.models.resources import run_resource

POOL = web.AppKey("pool", asyncpg.Pool)


async def hello(_: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


def bare_run(database_url: str, run_id: UUID, tenant: str) -> web.Application:
    app = web.Application()

    async def pool(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = await create_pool(database_url)
        yield
        await app[POOL].close()

    async def get_run(_: web.Request) -> web.Response:
        row = await app[POOL].fetchrow(Q.get_run, run_id, tenant)
        if row is None:
            raise web.HTTPNotFound()
        return json_response(run_resource(row))

    app.cleanup_ctx.append(pool)
    app.router.add_get("/run", get_run)
    return app


def main() -> None:
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        app = bare_run(sys.argv[2], UUID(sys.argv[3]), sys.argv[4])
    else:
        app = web.Application()
        app.router.add_get("/", hello)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
