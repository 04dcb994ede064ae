"""/model-runs and /model-runs/{runId}: list, trigger, get, cancel."""

from __future__ import annotations

import re

import orjson
from aiohttp import hdrs, web

from gateway import params, writes
from gateway.context import METRICS, PAGE_TOKENS, PUBLISHER, REPOSITORY, principal
from gateway.page_tokens import InvalidPageToken, runs_binding
from gateway.problems import ApiProblem
from gateway.responses import json_response
from shared import jsonutil
from shared.models.resources import run_resource
from shared.models.validation import RequestInvalid, validate_trigger
from shared.states import RunStatus

MAX_BODY_BYTES = 1024 * 1024
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def list_runs(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    limit = params.max_results(request)
    status = params.status(request, RunStatus)
    token = params.page_token(request)
    tokens = request.app[PAGE_TOKENS]
    binding = runs_binding(who.tenant_id, status)
    after = None
    if token is not None:
        try:
            after = tokens.read_run_position(token, binding)
        except InvalidPageToken as exc:
            raise ApiProblem("invalid_page_token", str(exc)) from None
    rows = await request.app[REPOSITORY].list_runs(who.tenant_id, limit + 1, status, after)
    page = rows[:limit]
    next_token = None
    if len(rows) > limit:
        last = page[-1]
        next_token = tokens.issue_run_position(binding, last["created_at"], last["id"])
    return json_response({"model_runs": [run_resource(r) for r in page], "next_page_token": next_token})


async def _read_json(request: web.Request) -> object:
    if hdrs.CONTENT_TYPE in request.headers and not _is_json(request.content_type):
        raise ApiProblem("unsupported_media_type", "the request body must be application/json")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiProblem("payload_too_large", "the request body is larger than 1 MiB")
    raw = await request.read()
    try:
        return jsonutil.loads_exact(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiProblem("invalid_json", f"the body is not valid JSON: {exc}") from None
    except jsonutil.InexactNumber as exc:
        raise ApiProblem("validation_error", str(exc)) from None


def _idempotency_key(request: web.Request) -> str | None:
    values = request.headers.getall(IDEMPOTENCY_HEADER, [])
    if not values:
        return None
    if len(values) > 1 or not _IDEMPOTENCY_KEY.fullmatch(values[0]):
        raise ApiProblem(
            "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters, given once"
        )
    return values[0]


async def trigger_run(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    idempotency_key = _idempotency_key(request)
    body = await _read_json(request)
    try:
        trigger = validate_trigger(body)
    except RequestInvalid as exc:
        raise ApiProblem("validation_error", exc.detail, errors=exc.errors) from None
    try:
        done = await writes.trigger(
            request.app[REPOSITORY],
            request.app[PUBLISHER],
            tenant_id=who.tenant_id,
            request=trigger,
            idempotency_key=idempotency_key,
            request_hash=writes.body_hash(body),
        )
    except writes.IdempotencyKeyReused:
        raise ApiProblem(
            "idempotency_key_reused", "this Idempotency-Key was used with a different body in the last 24 h"
        ) from None
    metrics = request.app[METRICS]
    (metrics.runs_triggered if done.created else metrics.idempotent_replays).inc()
    resource = run_resource(done.run)
    return json_response(resource, status=201, headers={hdrs.LOCATION: f"/model-runs/{resource['id']}"})


async def get_run(request: web.Request) -> web.StreamResponse:
    run_id = params.path_id(request, "runId", "run")
    row = await request.app[REPOSITORY].get_run(run_id, principal(request).tenant_id)
    if row is None:
        raise ApiProblem("not_found", "no such run")
    return json_response(run_resource(row))


async def cancel_run(request: web.Request) -> web.StreamResponse:
    run_id = params.path_id(request, "runId", "run")
    done = await writes.cancel(
        request.app[REPOSITORY], request.app[PUBLISHER], tenant_id=principal(request).tenant_id, run_id=run_id
    )
    if done is None:
        raise ApiProblem("not_found", "no such run")
    if done.requested:
        request.app[METRICS].cancels.inc()
    return json_response(run_resource(done.run))
