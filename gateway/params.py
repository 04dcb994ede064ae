"""Path and query parameters, checked before anything is looked up: bad input is a 400 (or, for an
id, the 404 of a run that does not exist), never a 500."""

from __future__ import annotations

import re
from enum import StrEnum
from uuid import UUID

from aiohttp import web

from gateway.problems import ApiProblem

DEFAULT_MAX_RESULTS = 100
MAX_MAX_RESULTS = 1000
_DIGITS = re.compile(r"^[0-9]{1,7}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def path_id(request: web.Request, name: str, what: str) -> UUID:
    """The UUID in the path; any other shape names nothing, so it is the same 404 as a missing one."""
    text = request.match_info.get(name, "")
    if not _UUID.fullmatch(text):
        raise ApiProblem("not_found", f"no such {what}")
    return UUID(text)


def single(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiProblem(
            "validation_error",
            f"{name} is given more than once",
            errors=[(f"/{name}", "given more than once")],
        )
    return values[0] if values else None


def max_results(request: web.Request) -> int:
    text = single(request, "max_results")
    if text is None:
        return DEFAULT_MAX_RESULTS
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_MAX_RESULTS:
        raise ApiProblem(
            "validation_error",
            f"max_results must be an integer from 1 to {MAX_MAX_RESULTS}",
            errors=[("/max_results", f"expected an integer from 1 to {MAX_MAX_RESULTS}")],
        )
    return int(text)


def status(request: web.Request, allowed: type[StrEnum]) -> str | None:
    text = single(request, "status")
    if text is None:
        return None
    known = [member.value for member in allowed]
    if text not in known:
        raise ApiProblem(
            "validation_error",
            f"status must be one of {', '.join(known)}",
            errors=[("/status", f"expected one of {', '.join(known)}")],
        )
    return text


def page_token(request: web.Request) -> str | None:
    """The page token, if any; an empty one means the first page."""
    return single(request, "page_token") or None
