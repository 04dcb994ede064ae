"""JSON as the API writes it: RFC 3339 times in UTC with a `Z`."""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS, default=_default)


def dumps_str(value: Any) -> str:
    return dumps(value).decode()


loads = orjson.loads
