"""What every request goes through: a request id, problem details for every error, and on the API
paths the checks in their contract order: authentication (401), rate limit (429), scope (403).
The handler then answers 400/404 itself."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway import problems
from gateway.auth import Unauthenticated
from gateway.context import (
    AUTHENTICATOR,
    METRICS,
    PRINCIPAL,
    RATE_DECISION,
    RATE_LIMITER,
    REQUEST_ID,
    ROUTE,
    STARTED,
)
from gateway.problems import ApiProblem
from gateway.routes import TRIGGER, is_api_path, operation_of, route_template
from shared import tracing
from shared.errors import DatabaseUnavailable
from shared.models.validation import pointer

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# Any visible ASCII is echoed (a caller's trace ids come in many shapes); nothing that could
# split a header or a log line.
_SANE_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
# Probes and scrapes arrive every few seconds from every prober: neither traced nor in flight.
UNTRACED_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
TRACEPARENT = "traceparent"

_DETAILS: dict[int, str] = {
    404: "no such resource",
    413: "the request body is larger than 1 MiB",
}


def request_id_of(request: web.Request) -> str:
    found = request.get(REQUEST_ID)
    if found is None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        # As random as uuid4().hex, without building a UUID on every request.
        found = offered if _SANE_REQUEST_ID.fullmatch(offered) else os.urandom(16).hex()
        request[REQUEST_ID] = found
    return found


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    code = problems.code_for_status(exc.status)
    headers: dict[str, str] = {}
    if exc.status == 405:
        allow = exc.headers.get(hdrs.ALLOW)
        if allow:
            headers[hdrs.ALLOW] = allow
        detail = f"{request.method} is not allowed here"
    else:
        detail = _DETAILS.get(exc.status, exc.reason)
    return problems.response(
        code, detail, status=exc.status, request_id=request_id_of(request), headers=headers
    )


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's one layer (each aiohttp middleware is a call more on every request): the
    in-flight count, a SERVER span, problem details for every error, and the API checks.

    The span continues the caller's W3C trace context when it sent one (what the request writes
    to the outbox carries it on to the orchestrator); with tracing off and no context to carry on,
    there is no span at all. Counts and latencies are taken as the headers go out
    (on_response_prepare), so that an event stream counts until its headers are sent."""
    request[STARTED] = time.perf_counter()
    route = route_template(request)
    request[ROUTE] = route
    if route in UNTRACED_ROUTES:
        return await _answer(request, handler)
    metrics = request.app[METRICS]
    metrics.in_flight += 1
    try:
        if not tracing.enabled() and TRACEPARENT not in request.headers:
            return await _answer(request, handler)
        with tracing.span(
            f"{request.method} {route}",
            kind=SpanKind.SERVER,
            parent=request.headers,
            attributes={
                "http.request.method": request.method,
                "http.route": route,
                "url.path": request.path,
                "url.scheme": request.scheme,
            },
        ) as span:
            response = await _answer(request, handler)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response
    finally:
        metrics.in_flight -= 1


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer, with every error turned into problem details."""
    try:
        if is_api_path(request.path):
            await _admit(request)
        return await handler(request)
    except ApiProblem as problem:
        return problems.response(
            problem.code,
            problem.detail,
            request_id=request_id_of(request),
            errors=problem.errors,
            headers=problem.headers,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(request, exc)
    except DatabaseUnavailable as exc:
        request_id = request_id_of(request)
        log.warning(
            "postgres unavailable",
            extra={
                "action": "http.unavailable",
                "request_id": request_id,
                "path": request.path,
                "error": repr(exc),
            },
        )
        return problems.response(
            "unavailable",
            "the database is unavailable; try again shortly",
            request_id=request_id,
            headers={hdrs.RETRY_AFTER: "1"},
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        request_id = request_id_of(request)
        log.exception(
            "request failed",
            extra={"action": "http.internal", "request_id": request_id, "path": request.path},
        )
        return problems.response(
            "internal", "an internal error occurred; quote the request id", request_id=request_id
        )


async def _admit(request: web.Request) -> None:
    """An API call's checks, in the contract's order: authentication (401), the rate limit (429),
    the scope (403), then unknown query parameters (400)."""
    app = request.app
    try:
        principal = await app[AUTHENTICATOR].authenticate(request.headers.get(hdrs.AUTHORIZATION))
    except Unauthenticated as exc:
        app[METRICS].auth_failures.inc()
        raise ApiProblem(
            "unauthorized",
            "a valid API key is needed: Authorization: Bearer <api key>",
            headers={hdrs.WWW_AUTHENTICATE: "Bearer"},
        ) from exc
    request[PRINCIPAL] = principal
    operation = operation_of(request)
    decision = app[RATE_LIMITER].check(
        principal.key_prefix, trigger=operation is not None and operation.operation_id == TRIGGER
    )
    request[RATE_DECISION] = decision
    if not decision.allowed:
        app[METRICS].rate_limited.labels(decision.policy.name).inc()
        raise ApiProblem(
            "rate_limited",
            f"rate limit {decision.policy.name!r} exceeded; retry in {decision.retry_after} s",
            headers={hdrs.RETRY_AFTER: str(decision.retry_after)},
        )
    if operation is None:
        return
    if operation.scope not in principal.scopes:
        raise ApiProblem("forbidden", f"this API key lacks the scope {operation.scope!r}")
    if request.query_string:
        unknown = sorted(set(request.query) - set(operation.query))
        if unknown:
            known = ", ".join(operation.query) or "none"
            raise ApiProblem(
                "validation_error",
                f"unknown query parameter {unknown[0]!r} (this operation takes: {known})",
                errors=[(pointer((name,)), "unknown query parameter") for name in unknown],
            )


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every answer carries, set as its headers go out (event streams included)."""
    headers = response.headers
    headers[REQUEST_ID_HEADER] = request_id_of(request)
    headers.setdefault(hdrs.CACHE_CONTROL, "no-store")
    # aiohttp would announce "Python/3.x aiohttp/3.x": no versions for a caller to match to a CVE.
    headers[hdrs.SERVER] = "modelruns"
    decision = request.get(RATE_DECISION)
    if decision is not None:
        headers.update(decision.headers())
    metrics = request.app.get(METRICS)
    if metrics is not None:
        started = request.get(STARTED)
        metrics.answered(
            request.method,
            request.get(ROUTE) or route_template(request),
            response.status,
            None if started is None else time.perf_counter() - started,
        )
