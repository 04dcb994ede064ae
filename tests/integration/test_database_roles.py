"""Least privilege in Postgres: migrations run as the owner, the services as a role that owns
nothing and may only read and write rows. Roles are cluster-wide: unique names, dropped after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from shared import apikeys
from shared.db import migrate
from shared.db.pool import create_pool
from shared.settings import Settings
from tests.conftest import ADMIN_URL, _with_db
from tests.integration.gateway_helpers import broker_down_settings, running_gateway
from tests.integration.services_helpers import orchestrator_and_worker, run_and_cancel


@dataclass
class Roles:
    owner_url: str
    service_url: str
    service: str


def _as(url: str, user: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}"))


@pytest.fixture
async def roles() -> AsyncIterator[Roles]:
    tag = uuid.uuid4().hex[:10]
    owner, service, database = f"mr_owner_{tag}", f"mr_service_{tag}", f"modelruns_roles_{tag}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE ROLE "{owner}" LOGIN')
        await admin.execute(f'CREATE ROLE "{service}" LOGIN')
        await admin.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"')
        url = _with_db(ADMIN_URL, database)
        yield Roles(_as(url, owner), _as(url, service), service)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{service}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{owner}"')
        await admin.close()


async def test_services_run_as_a_role_that_owns_nothing(roles: Roles) -> None:
    await migrate.upgrade(roles.owner_url, roles.service_url)
    pool = await create_pool(roles.service_url, max_size=2)
    try:
        owned = await pool.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1",
            roles.service,
        )
        assert owned == 0
        for statement in (
            "CREATE TABLE intruder (id int)",
            "DROP TABLE runs",
            "ALTER TABLE runs ADD COLUMN x int",
            "TRUNCATE outbox",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await pool.execute(statement)
        # The gateway does all its work with these grants: keys, a trigger, its reads, a cancel.
        async with running_gateway(broker_down_settings(roles.service_url), pool) as gw:
            run = await gw.trigger()
            assert (await gw.get(f"/model-runs/{run['id']}/steps")).status == 200
            assert (await gw.post(f"/model-runs/{run['id']}/cancel")).status == 200
            assert (await gw.get("/model-runs")).status == 200
        assert await apikeys.list_keys(pool)
    finally:
        await pool.close()
    # A second upgrade (nothing to apply) still grants, and is harmless.
    assert await migrate.upgrade(roles.owner_url, roles.service_url) == []


async def test_a_whole_run_goes_through_under_the_service_role(roles: Roles, settings: Settings) -> None:
    await migrate.upgrade(roles.owner_url, roles.service_url)
    settings = settings.model_copy(update={"database_url": roles.service_url})
    pool = await create_pool(roles.service_url, max_size=5)
    try:
        # Orchestrator, worker and gateway all on the service role: an insufficient grant would
        # fail a transaction and the run would never end.
        async with orchestrator_and_worker(settings), running_gateway(settings, pool) as gw:
            await run_and_cancel(gw, pool)
    finally:
        await pool.close()
