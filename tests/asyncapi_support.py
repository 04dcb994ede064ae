"""Checking an event against docs/asyncapi.json: the payload schema of the message its type names."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.json"


@cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text())
    return loaded


@cache
def payload_validator(event_type: str) -> jsonschema.Draft202012Validator:
    """The message's payload as a schema whose `#/components/...` references resolve in the document."""
    components = document()["components"]
    (name,) = [key for key, message in components["messages"].items() if message["name"] == event_type]
    schema = {"$ref": f"#/components/messages/{name}/payload", "components": components}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate_event(event: dict[str, Any]) -> None:
    payload_validator(str(event["type"])).validate(event)
