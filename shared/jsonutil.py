"""JSON as the API writes it: RFC 3339 times in UTC with a `Z`."""

from __future__ import annotations

import json
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


# orjson reads an integer beyond 64 bits as a float, silently changing the value; such a number
# can neither be stored in jsonb as given nor written back by orjson.
_INT_LIMIT = 2**63


class InexactNumber(ValueError):
    """A JSON integer outside the 64-bit range."""


def _has_huge_float(value: Any) -> bool:
    # Iterative: orjson accepts nesting deeper than Python's recursion limit.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if abs(item) >= _INT_LIMIT:
                return True
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _checked_int(text: str) -> int:
    number = int(text)
    if not -_INT_LIMIT <= number < 2**64:
        raise InexactNumber(f"the integer {text[:40]}{'…' if len(text) > 40 else ''} does not fit in 64 bits")
    return number


def loads_exact(raw: bytes) -> Any:
    """`loads`, refusing integers that would not survive the round trip (orjson.JSONDecodeError
    for malformed JSON, InexactNumber for such an integer)."""
    value = orjson.loads(raw)
    if _has_huge_float(value):
        # Rare: only then is the body read again, slowly, to tell a huge integer from a float.
        try:
            json.loads(raw, parse_int=_checked_int)
        except RecursionError:
            raise InexactNumber("a body nested this deep cannot hold numbers this large") from None
    return value
