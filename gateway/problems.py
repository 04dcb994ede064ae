"""RFC 9457 problem details: every 4xx/5xx body, with a stable machine `code`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from shared import jsonutil

CONTENT_TYPE = "application/problem+json"

# code -> (status, title); the codes are part of the contract (API.md).
CODES: dict[str, tuple[int, str]] = {
    "validation_error": (400, "Invalid request"),
    "invalid_json": (400, "Malformed JSON"),
    "invalid_page_token": (400, "Invalid page token"),
    "invalid_idempotency_key": (400, "Invalid idempotency key"),
    "idempotency_key_reused": (400, "Idempotency key reused"),
    "bad_request": (400, "Bad request"),
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "payload_too_large": (413, "Payload too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "rate_limited": (429, "Too many requests"),
    "internal": (500, "Internal error"),
    "unavailable": (503, "Service unavailable"),
}

# What aiohttp's own HTTP exceptions become.
_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}


class ApiProblem(Exception):
    """Raised by views and middlewares; the problem middleware turns it into the response."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        errors: Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.status = CODES[code][0]
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})


def code_for_status(status: int) -> str:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return "bad_request" if status < 500 else "internal"


def problem_type(code: str) -> str:
    return "/problems/" + code.replace("_", "-")


def body(
    code: str,
    detail: str | None,
    *,
    status: int | None = None,
    request_id: str | None = None,
    errors: Sequence[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    known_status, title = CODES.get(code, (status or 500, code.replace("_", " ").capitalize()))
    out: dict[str, Any] = {
        "type": problem_type(code),
        "title": title,
        "status": status or known_status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if errors is not None:
        out["errors"] = [{"pointer": pointer, "detail": text} for pointer, text in errors]
    return out


def response(
    code: str,
    detail: str | None,
    *,
    status: int | None = None,
    request_id: str | None = None,
    errors: Sequence[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    payload = body(code, detail, status=status, request_id=request_id, errors=errors)
    resp = web.Response(body=jsonutil.dumps(payload), status=payload["status"], headers=dict(headers or {}))
    resp.content_type = CONTENT_TYPE
    return resp
