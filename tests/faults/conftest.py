"""The fault suite's fixtures: private broker and database, the services as processes, and a case
object that remembers every run acknowledged so that the invariants can be checked over them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest

from shared.db import migrate
from tests.e2e.conftest import Api, create_key
from tests.faults import invariants
from tests.faults.cluster import Cluster, base_env
from tests.faults.instances import PrivatePostgres, PrivateRabbitMQ, private_root

ORCHESTRATORS = ("o1", "o2", "o3")
WORKERS = ("w1", "w2", "w3")


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[PrivateRabbitMQ]:
    node = PrivateRabbitMQ(private_root("rabbitmq"))
    try:
        node.create()
        yield node
    finally:
        node.remove()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres(private_root("postgres"))
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def cluster(
    rabbitmq: PrivateRabbitMQ, postgres: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    db_url = postgres.admin_url.rsplit("/", 1)[0] + "/modelruns_faults"
    asyncio.run(migrate.upgrade(db_url))
    amqp_url = rabbitmq.add_vhost()
    asyncio.run(invariants.bind_subscriber(amqp_url))
    env = base_env(db_url, amqp_url)
    cluster = Cluster(db_url, amqp_url, tmp_path_factory.mktemp("faults"), env)
    cluster.add_gateway()
    for name in ORCHESTRATORS:
        cluster.add_orchestrator(name)
    for name in WORKERS:
        cluster.add_worker(name)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def api_key(cluster: Cluster) -> str:
    return create_key(cluster.env, "acme", "runs:read", "runs:write")


@pytest.fixture(scope="session")
def subscriber(cluster: Cluster) -> invariants.Subscriber:
    return invariants.Subscriber(cluster.amqp_url)


@dataclass
class Case:
    api: Api
    cluster: Cluster
    subscriber: invariants.Subscriber
    rabbitmq: PrivateRabbitMQ
    postgres: PrivatePostgres
    runs: list[str] = field(default_factory=list)

    async def trigger(self, body: dict[str, Any]) -> dict[str, Any]:
        run = await self.api.trigger(body)
        self.runs.append(run["id"])
        return run

    async def verify(self, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        return await invariants.check(
            self.api, self.cluster.db_url, self.subscriber, self.runs, timeout=timeout
        )

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.cluster.db_url)


@pytest.fixture
async def case(
    cluster: Cluster,
    api_key: str,
    subscriber: invariants.Subscriber,
    rabbitmq: PrivateRabbitMQ,
    postgres: PrivatePostgres,
) -> AsyncIterator[Case]:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            yield Case(Api(session, cluster.url, api_key), cluster, subscriber, rabbitmq, postgres)
        finally:
            # Whatever the case did or wherever it failed, the next one finds everything up.
            await asyncio.to_thread(restore, cluster, rabbitmq, postgres)


def restore(cluster: Cluster, rabbitmq: PrivateRabbitMQ, postgres: PrivatePostgres) -> None:
    if not postgres.is_up():
        postgres.start()
    rabbitmq.start_app()
    cluster.ensure()
