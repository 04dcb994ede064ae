"""deploy/rabbitmq/definitions.json enforced by the broker itself: in a vhost of its own, with
users made for the test and deleted after it, a worker cannot publish commands or results, and a
tenant's subscriber cannot bind to another tenant's routing keys."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from shared import amqp
from tests.conftest import rabbitmqctl

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
        for role in ("worker", "subscriber"):
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
