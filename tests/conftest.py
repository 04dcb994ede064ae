"""Shared fixtures: real Postgres and RabbitMQ, isolated cheaply.

A template database is migrated once per session and cloned per test; each test that needs the
broker gets a vhost of its own. When a service is missing the tests fail (never skip): CI must
not pass without having tested.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import pytest

from shared.db import migrate
from shared.db.pool import create_pool
from shared.settings import Settings
from tests import sigterm

pytest_configure = sigterm.pytest_configure

ADMIN_URL = os.environ.get("MODELRUNS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("MODELRUNS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# One template per test session, so that two checkouts can run the suite side by side.
TEMPLATE = f"modelruns_test_template_{uuid.uuid4().hex[:8]}"


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    url = _with_db(ADMIN_URL, TEMPLATE)
    try:
        asyncio.run(migrate.upgrade(url))
    except OSError as exc:
        pytest.fail(f"Postgres is not reachable at {ADMIN_URL}: {exc} (make test starts it)")
    yield url
    asyncio.run(drop_database(url))


async def create_database() -> str:
    """A fresh database cloned from the migrated template; returns its URL."""
    name = f"modelruns_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    finally:
        await conn.close()
    return _with_db(ADMIN_URL, name)


async def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def create_vhost() -> str:
    """A fresh RabbitMQ vhost; returns the AMQP URL that selects it."""
    vhost = f"modelruns-test-{uuid.uuid4().hex[:12]}"
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (OSError, RuntimeError) as exc:
        pytest.fail(f"RabbitMQ is not usable: {exc} (make test starts it)")
    return AMQP_BASE.rstrip("/") + "/" + quote(vhost, safe="")


# Vhosts are deleted in the background; the processes are kept and reaped so that none is
# collected while still running (a ResourceWarning, an error under filterwarnings=error).
_DELETING: list[subprocess.Popen[bytes]] = []


def drop_vhost(url: str) -> None:
    vhost = unquote(urlsplit(url).path.lstrip("/"))
    _DELETING[:] = [p for p in _DELETING if p.poll() is None]
    _DELETING.append(
        subprocess.Popen(
            ["rabbitmqctl", "-q", "delete_vhost", vhost], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    )


@pytest.fixture(scope="session", autouse=True)
def _reap_vhost_deletions() -> Iterator[None]:
    yield
    for process in _DELETING:
        process.wait(timeout=60)
    _DELETING.clear()


@pytest.fixture
async def db_url(template_db: str) -> AsyncIterator[str]:
    url = await create_database()
    yield url
    await drop_database(url)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_url, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
def amqp_url() -> Iterator[str]:
    url = create_vhost()
    yield url
    drop_vhost(url)


@pytest.fixture
def settings(db_url: str, amqp_url: str) -> Settings:
    """Settings for in-process services: short intervals so that tests wait seconds, not minutes."""
    return Settings(
        database_url=db_url,
        amqp_url=amqp_url,
        http_port=0,
        step_lease_seconds=3,
        heartbeat_seconds=0.5,
        reconcile_seconds=0.5,
        outbox_poll_seconds=0.2,
        page_token_secret="test-secret",
    )
