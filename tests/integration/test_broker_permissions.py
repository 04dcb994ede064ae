"""deploy/rabbitmq/definitions.json enforced by the broker itself: in a vhost of its own, with
users made for the test and deleted after it, the gateway can publish commands only, a worker
cannot publish commands or results, and a tenant's subscriber
cannot bind to another tenant's routing keys."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
from aiormq.exceptions import ChannelAccessRefused

from shared import amqp
from shared.settings import Settings
from tests.conftest import rabbitmqctl
from tests.integration.gateway_helpers import running_gateway
from tests.integration.services_helpers import orchestrator_and_worker, run_and_cancel

DEFINITIONS = Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "definitions.json"


def granted(role: str) -> tuple[dict[str, str], dict[str, str] | None]:
    definitions = json.loads(DEFINITIONS.read_text())
    (perms,) = [p for p in definitions["permissions"] if p["user"] == role]
    topics = [t for t in definitions["topic_permissions"] if t["user"] == role]
    return perms, (topics[0] if topics else None)


@pytest.fixture
def users(amqp_url: str) -> Iterator[dict[str, str]]:
    """A URL per role, as that role's user, in the test's vhost."""
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/"))
    made: dict[str, str] = {}
    try:
        for role in ("gateway", "orchestrator", "worker", "subscriber"):
            name, password = f"test-{role}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
            _PASSWORDS[name] = password
            rabbitmqctl("add_user", name, password)
            made[role] = name
            perms, topic = granted(role)
            rabbitmqctl(
                "set_permissions", "-p", vhost, name, perms["configure"], perms["write"], perms["read"]
            )
            if topic is not None:
                rabbitmqctl(
                    "set_topic_permissions",
                    "-p",
                    vhost,
                    name,
                    topic["exchange"],
                    topic["write"],
                    topic["read"],
                )
        parts = urlsplit(amqp_url)
        yield {
            role: urlunsplit(
                parts._replace(netloc=f"{name}:{password_of(name)}@{parts.hostname}:{parts.port}")
            )
            for role, name in made.items()
        }
    finally:
        for name in made.values():
            rabbitmqctl("delete_user", name)


_PASSWORDS: dict[str, str] = {}


def password_of(name: str) -> str:
    return _PASSWORDS[name]


async def refused(url: str, exchange: str, key: str) -> bool:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        try:
            await target.publish(aio_pika.Message(b"{}"), key, timeout=10)
        except ChannelAccessRefused:
            return True
        return False
    finally:
        await connection.close()


async def test_worker_and_subscriber_stay_in_their_lanes(amqp_url: str, users: dict[str, str]) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        await amqp.declare_exchanges(await connection.channel())
    finally:
        await connection.close()
    worker = users["worker"]
    assert await refused(worker, amqp.RESULTS, "acme.run.succeeded")
    assert await refused(worker, amqp.COMMANDS, "run.trigger")
    assert not await refused(worker, amqp.WORKER_EVENTS, amqp.WORKER_EVENT_KEY)
    gateway = users["gateway"]
    assert not await refused(gateway, amqp.COMMANDS, "run.trigger")
    assert await refused(gateway, amqp.RESULTS, "acme.run.queued")
    assert await refused(gateway, amqp.STEPS, "default")
    assert await refused(gateway, amqp.CONTROL, "worker-1")

    connection = await aio_pika.connect(users["subscriber"])
    try:
        channel = await connection.channel()
        name = f"subscriber.{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(name, exclusive=True)
        await queue.bind(amqp.RESULTS, "acme.#")  # its own tenant's keys
        with pytest.raises(ChannelAccessRefused):
            await queue.bind(amqp.RESULTS, "acme-corp.#")
        # A refusal closes the channel; the queue belongs to the connection and stays.
        queue = await (await connection.channel()).declare_queue(name, exclusive=True)
        with pytest.raises(ChannelAccessRefused):
            await queue.bind(amqp.RESULTS, "#")
    finally:
        await connection.close()


async def test_a_run_goes_all_the_way_with_each_service_as_its_own_user(
    settings: Settings, pool: asyncpg.Pool, users: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Each service under the rights definitions.json gives it: if one needed more, a channel
    # would be closed with ACCESS_REFUSED and the run (or the outbox) would never finish.
    as_role = {
        role: settings.model_copy(update={"amqp_url": url, "ops_port": 0}) for role, url in users.items()
    }
    async with (
        orchestrator_and_worker(as_role["orchestrator"], as_role["worker"]),
        running_gateway(as_role["gateway"], pool) as gateway,
    ):
        # The gateway's own events (run.queued, run.cancelling) are sent by the orchestrator.
        await run_and_cancel(gateway, pool)
    refusals = [
        r for r in caplog.records if "ACCESS_REFUSED" in f"{r.getMessage()} {r.__dict__.get('error', '')}"
    ]
    assert not refusals, [r.getMessage() for r in refusals]
