"""JSON answers as the API writes them (RFC 3339 UTC times with a Z)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from shared import jsonutil


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(body=jsonutil.dumps(data), status=status, headers=dict(headers or {}))
    response.content_type = "application/json"
    return response
