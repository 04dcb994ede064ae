"""What the client raises: every error is a `ClientError`; an API refusal is an `ApiError` of the
class its status (or its problem `code`) names, carrying the RFC 9457 problem body."""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import ValidationError

from shared.errors import ModelRunsError
from shared.models.api import Problem


class ClientError(ModelRunsError):
    """Root of the errors of the modelruns client."""


class TransportError(ClientError):
    """The API could not be reached: refused, reset, timed out, or a stream went silent."""


class InvalidResponse(ClientError):
    """The API answered with something that is not what it documents."""


class ApiError(ClientError):
    """The API answered with a problem (4xx/5xx)."""

    def __init__(self, status: int, problem: Problem, *, retry_after: float | None = None) -> None:
        self.status = status
        self.problem = problem
        self.retry_after = retry_after
        super().__init__(f"{status} {problem.code}: {self.detail}")

    @property
    def code(self) -> str:
        return self.problem.code

    @property
    def detail(self) -> str:
        text = self.problem.detail or self.problem.title or f"HTTP {self.status}"
        return " ".join(text.split())

    @property
    def request_id(self) -> str | None:
        return self.problem.request_id


class BadRequest(ApiError):
    """400: the request is invalid; `problem.errors` points at what."""


class IdempotencyKeyReused(BadRequest):
    """400 `idempotency_key_reused`: the key was used with a different body."""


class Unauthorized(ApiError):
    """401: the API key is missing, unknown or revoked."""


class Forbidden(ApiError):
    """403: the API key lacks the scope."""


class NotFound(ApiError):
    """404: nothing of the caller's tenant has that id."""


class PayloadTooLarge(ApiError):
    """413: the body is over 1 MiB."""


class RateLimited(ApiError):
    """429: over a rate limit; `retry_after` says when to try again."""


class ServerError(ApiError):
    """5xx."""


class ServiceUnavailable(ServerError):
    """503: the gateway cannot serve right now (its database is away)."""


_BY_CODE: dict[str, type[ApiError]] = {"idempotency_key_reused": IdempotencyKeyReused}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    429: RateLimited,
    503: ServiceUnavailable,
}


def problem_of(status: int, raw: bytes, reason: str | None = None) -> Problem:
    """The problem body; a proxy's HTML page or an empty body becomes a problem of its own."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        defaults = {
            "type": "about:blank",
            "title": reason or f"HTTP {status}",
            "status": status,
            "code": "error",
        }
        # A malformed `errors` list costs the pointers, not the code and detail.
        for fields in (body, {k: v for k, v in body.items() if k != "errors"}):
            try:
                return Problem.model_validate({**defaults, **fields})
            except ValidationError:
                continue
    return Problem(type="about:blank", title=reason or f"HTTP {status}", status=status, code="error")


def api_error(
    status: int, raw: bytes, *, reason: str | None = None, retry_after: float | None = None
) -> ApiError:
    problem = problem_of(status, raw, reason)
    cls = _BY_CODE.get(problem.code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ApiError
    return cls(status, problem, retry_after=retry_after)
