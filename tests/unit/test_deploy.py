"""deploy/ against the code: every MODELRUNS_* name it sets is a setting, and each RabbitMQ role
may touch what its service declares, consumes and publishes (shared/amqp.py), and no more."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared import amqp
from shared.settings import PREFIX, Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SETTING = re.compile(r"\bMODELRUNS_[A-Z0-9_]+\b")


def deploy_files() -> list[Path]:
    return [p for p in DEPLOY.rglob("*") if p.is_file()]


def test_deploy_sets_only_settings_that_exist() -> None:
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    used: set[str] = set()
    for path in deploy_files():
        used |= set(SETTING.findall(path.read_text()))
    assert used, "no MODELRUNS_* setting found in deploy/"
    assert used <= known, f"unknown settings in deploy/: {sorted(used - known)}"


def permissions() -> dict[str, dict[str, re.Pattern[str]]]:
    definitions = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    return {
        p["user"]: {kind: re.compile(p[kind]) for kind in ("configure", "write", "read")}
        for p in definitions["permissions"]
    }


POOL_QUEUE = amqp.pool_queue("gpu")
CONTROL_QUEUE = f"{amqp.CONTROL}.worker-1.0a1b2c3d"
ORCHESTRATOR_QUEUES = (amqp.COMMANDS_QUEUE, amqp.WORKER_EVENTS_QUEUE, amqp.DEAD_QUEUE)

# What each role's code does on the broker: declaring needs configure; binding a queue needs write
# on the queue and read on the exchange; a dead-letter exchange in a queue's arguments needs write
# on it; consuming needs read; publishing needs write.
ALLOWED = {
    "gateway": {
        "configure": tuple(amqp.EXCHANGES),
        # Its outbox publisher sends command rows only; the orchestrator's sends the rest.
        "write": (amqp.COMMANDS,),
        "read": (),
    },
    "orchestrator": {
        "configure": (*amqp.EXCHANGES, *ORCHESTRATOR_QUEUES, POOL_QUEUE),
        "write": (
            amqp.COMMANDS,
            amqp.STEPS,
            amqp.CONTROL,
            amqp.RESULTS,
            amqp.DEAD,
            *ORCHESTRATOR_QUEUES,
            POOL_QUEUE,
        ),
        "read": (amqp.COMMANDS, amqp.WORKER_EVENTS, amqp.DEAD, amqp.STEPS, *ORCHESTRATOR_QUEUES),
    },
    "worker": {
        "configure": (*amqp.EXCHANGES, POOL_QUEUE, CONTROL_QUEUE),
        "write": (amqp.WORKER_EVENTS, amqp.DEAD, POOL_QUEUE, CONTROL_QUEUE),
        "read": (amqp.STEPS, amqp.CONTROL, POOL_QUEUE, CONTROL_QUEUE),
    },
}
DENIED = {
    "gateway": {
        "read": (*ORCHESTRATOR_QUEUES, POOL_QUEUE),
        "write": (amqp.WORKER_EVENTS, amqp.STEPS, amqp.CONTROL, amqp.RESULTS, amqp.DEAD),
    },
    "worker": {
        "write": (amqp.COMMANDS, amqp.STEPS, amqp.RESULTS, amqp.CONTROL),
        "read": (amqp.COMMANDS_QUEUE, amqp.WORKER_EVENTS_QUEUE, amqp.RESULTS),
    },
    "subscriber": {
        "configure": tuple(amqp.EXCHANGES),
        "write": tuple(amqp.EXCHANGES),
        "read": (amqp.COMMANDS_QUEUE, POOL_QUEUE, amqp.STEPS),
    },
}


@pytest.mark.parametrize("role", sorted(ALLOWED))
def test_each_role_may_do_what_its_service_does(role: str) -> None:
    granted = permissions()[role]
    for kind, names in ALLOWED[role].items():
        missing = [name for name in names if not granted[kind].fullmatch(name)]
        assert not missing, f"{role} lacks {kind} on {missing}"


@pytest.mark.parametrize("role", sorted(DENIED))
def test_each_role_may_not_do_what_others_do(role: str) -> None:
    granted = permissions()[role]
    for kind, names in DENIED[role].items():
        allowed = [name for name in names if granted[kind].fullmatch(name)]
        assert not allowed, f"{role} should not have {kind} on {allowed}"


def test_subscribers_bind_only_their_tenants_keys() -> None:
    definitions = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    (topic,) = definitions["topic_permissions"]
    assert topic["exchange"] == amqp.RESULTS
    read = re.compile(topic["read"])
    assert read.match("acme.#") and read.match("acme.run.succeeded")
    assert not read.match("globex.#") and not read.match("#")
