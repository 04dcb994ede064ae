"""The AsyncAPI 3 document of the results exchange, generated from the event models: the CloudEvent
envelope, the public event names and the resources each event carries.

`python -m shared.asyncapi > docs/asyncapi.json` writes it; a test fails when the committed copy
differs from what the models say, and validates real events of a run against it."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared import amqp
from shared.events import (
    CONTENT_TYPE,
    RUN_EVENTS,
    SOURCE_ORCHESTRATOR,
    STEP_EVENTS,
    TEST_RESULT_EVENTS,
    CloudEvent,
    Entity,
)
from shared.models.api import Run, Step, TestResult

REF = "#/components/schemas/{model}"
# The version of this contract (the events' shape), not of the package: it changes with the events.
CONTRACT_VERSION = "1.0.0"
ENTITIES: dict[Entity, tuple[tuple[str, ...], type[BaseModel], str]] = {
    "run": (RUN_EVENTS, Run, "A run changed status."),
    "step": (STEP_EVENTS, Step, "A step changed status."),
    "test_result": (TEST_RESULT_EVENTS, TestResult, "A step reported a test result."),
}
TENANT = {
    "description": "The tenant the run belongs to; bind `{tenant}.#` for all of a tenant's events.",
}


def message_name(entity: str, event: str) -> str:
    head, *rest = f"{entity}_{event}".split("_")
    return head + "".join(part.capitalize() for part in rest)


def _message(entity: Entity, event: str, resource: str) -> dict[str, Any]:
    kind = f"modelruns.{entity}.{event}"
    return {
        "name": kind,
        "title": f"{entity}.{event}",
        "contentType": CONTENT_TYPE,
        "payload": {
            "allOf": [
                {"$ref": REF.format(model="CloudEvent")},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": kind},
                        "subject": {"type": "string", "pattern": "^model-runs/[0-9a-f-]{36}$"},
                        "data": {"$ref": REF.format(model=resource)},
                    },
                },
            ]
        },
        "bindings": {"amqp": {"messageType": kind, "bindingVersion": "0.3.0"}},
    }


def build() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(CloudEvent, "serialization"), *((model, "serialization") for _, model, _ in ENTITIES.values())],
        ref_template=REF,
    )
    schemas: dict[str, Any] = defs["$defs"]
    runseq = schemas["CloudEvent"]["properties"]["runseq"]
    runseq["description"] = (
        "1 for the run's first event, rising by one with each event of the run: order and gaps."
    )
    runseq["minimum"] = 1
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for entity, (events, model, description) in ENTITIES.items():
        names = [message_name(entity, event) for event in events]
        for event, name in zip(events, names, strict=True):
            messages[name] = _message(entity, event, model.__name__)
        channel = f"{message_name(entity, 'events')}"
        channels[channel] = {
            "address": f"{{tenant}}.{entity}.{{event}}",
            "title": f"{entity} events",
            "description": description,
            "parameters": {
                "tenant": TENANT,
                "event": {"enum": list(events), "description": f"What happened to the {entity}."},
            },
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": amqp.RESULTS,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[f"publish{channel[0].upper()}{channel[1:]}"] = {
            "action": "send",
            "title": f"Publish {entity} events",
            "description": (
                f"The orchestrator ({SOURCE_ORCHESTRATOR}; `run.queued` and `run.cancelling` come from "
                "the gateway) publishes each fact once it is committed, at least once, persistent, "
                "not mandatory. Subscribers dedupe on `id` and order by `runseq`."
            ),
            "channel": {"$ref": f"#/channels/{channel}"},
            # Persistent, and not mandatory: nobody has to listen.
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": False, "bindingVersion": "0.3.0"}},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in names],
        }
    return {
        "asyncapi": "3.0.0",
        "id": "urn:modelruns:results",
        "info": {
            "title": "modelruns results exchange",
            "version": CONTRACT_VERSION,
            "description": (
                f"Every public fact of a run, published to the durable topic exchange `{amqp.RESULTS}` "
                "with the routing key `{tenant}.{entity}.{event}`. Bodies are CloudEvents 1.0 (JSON) "
                "whose `data` is the resource as the HTTP API shows it. Messages carry the W3C trace "
                "context (`traceparent`, `tracestate`) in their AMQP headers. The same events, numbered "
                "the same way, are served by `GET /model-runs/{runId}/events`."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "rabbitmq": {
                "host": "rabbitmq:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "The RabbitMQ the services use (MODELRUNS_AMQP_URL).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def document() -> bytes:
    return orjson.dumps(build(), option=orjson.OPT_INDENT_2) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(document())
