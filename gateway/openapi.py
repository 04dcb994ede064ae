"""The OpenAPI 3.1 document, generated from the pydantic models the code uses and the route table."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gateway import problems
from gateway.params import DEFAULT_MAX_RESULTS, MAX_MAX_RESULTS
from gateway.routes import OPERATIONS, Operation
from shared import jsonutil
from shared.events import CloudEvent
from shared.kinds import registry
from shared.models.api import (
    Health,
    Problem,
    Run,
    RunList,
    StepList,
    TestResultList,
    TriggerRequest,
)
from shared.states import RunStatus, TestStatus

REF = "#/components/schemas/{model}"
PROBLEM_JSON = problems.CONTENT_TYPE

_SUCCESS: dict[str, tuple[int, str, str]] = {
    "listModelRuns": (200, "RunList", "A page of runs, newest first."),
    "triggerModelRun": (201, "Run", "The run was created (or an idempotent replay found it)."),
    "getModelRun": (200, "Run", "The run."),
    "cancelModelRun": (200, "Run", "The run, cancelling or as it was."),
    "listModelRunSteps": (200, "StepList", "The run's steps in definition order."),
    "listModelTestResults": (200, "TestResultList", "A page of the step's test results."),
}

_ERRORS: dict[int, str] = {
    400: "The request is invalid (see `code` and `errors`).",
    401: "A valid API key is needed.",
    403: "The API key lacks the scope this operation needs.",
    404: "No such run or step for this tenant.",
    413: "The body is larger than 1 MiB.",
    415: "The body is not application/json.",
    429: "A rate limit was exceeded; see Retry-After.",
    500: "Internal error; quote the request id.",
    503: "The database is unavailable.",
}


def _schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (TriggerRequest, "validation"),
        (Run, "serialization"),
        (RunList, "serialization"),
        (StepList, "serialization"),
        (TestResultList, "serialization"),
        (Problem, "serialization"),
        (Health, "serialization"),
        (CloudEvent, "serialization"),
    ]
    kinds = registry()
    models.extend((kind.params_model, "validation") for kind in kinds.values())
    _, defs = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = defs.get("$defs", {})
    spec = schemas.get("StepSpec")
    if spec is not None:
        names = ", ".join(f"`{name}`: {kind.params_model.__name__}" for name, kind in sorted(kinds.items()))
        spec.setdefault("properties", {}).setdefault("params", {})["description"] = (
            f"Parameters, validated by the step kind ({names})."
        )
    return schemas


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}


def _ratelimit_headers() -> dict[str, Any]:
    return {
        "RateLimit-Policy": {
            "description": 'The binding policy, e.g. `"default";q=200;w=2`.',
            "schema": {"type": "string"},
        },
        "RateLimit": {
            "description": 'What is left of it, e.g. `"default";r=150;t=0`.',
            "schema": {"type": "string"},
        },
        "X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"},
    }


def _error_responses(operation: Operation) -> dict[str, Any]:
    statuses = [400, 401, 403, 429, 500, 503]
    if "{runId}" in operation.path:
        statuses.append(404)
    if operation.operation_id == "triggerModelRun":
        statuses += [413, 415]
    out: dict[str, Any] = {}
    for status in sorted(statuses):
        response: dict[str, Any] = {
            "description": _ERRORS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="Problem")}}},
        }
        headers: dict[str, Any] = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
        if status == 401:
            headers["WWW-Authenticate"] = {"schema": {"type": "string"}, "description": "`Bearer`"}
        elif status == 429:
            headers["Retry-After"] = {"schema": {"type": "integer", "minimum": 1}}
        if status not in (401, 500, 503):
            headers.update(_ratelimit_headers())
        response["headers"] = headers
        out[str(status)] = response
    return out


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if "{runId}" in operation.path:
        found.append({"$ref": "#/components/parameters/runId"})
    if "{stepId}" in operation.path:
        found.append({"$ref": "#/components/parameters/stepId"})
    if operation.query:
        statuses = [s.value for s in (RunStatus if operation.operation_id == "listModelRuns" else TestStatus)]
        found += [
            {
                "name": "max_results",
                "in": "query",
                "required": False,
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_MAX_RESULTS,
                    "default": DEFAULT_MAX_RESULTS,
                },
            },
            {
                "name": "page_token",
                "in": "query",
                "required": False,
                "description": "The `next_page_token` of the previous page, for the same filter.",
                "schema": {"type": "string"},
            },
            {
                "name": "status",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": statuses},
            },
        ]
    if operation.operation_id == "triggerModelRun":
        found.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "The same key and body within 24 h return the original run.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
            }
        )
    if operation.operation_id == "streamModelRunEvents":
        found.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "Resume after this runseq.",
                "schema": {"type": "integer", "minimum": 0},
            }
        )
    return found


def _sse_message() -> dict[str, Any]:
    """One message of the stream as a client's SSE parser sees it: the CloudEvent is the JSON text
    of `data`, the runseq is `id`."""
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event's runseq."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": REF.format(model="CloudEvent")},
            },
            "event": {"type": "string"},
        },
        "required": ["id", "data"],
    }


def _run_links(run_id: str) -> dict[str, Any]:
    return {
        name: {"operationId": operation_id, "parameters": {"runId": run_id}}
        for name, operation_id in (
            ("GetRun", "getModelRun"),
            ("ListSteps", "listModelRunSteps"),
            ("CancelRun", "cancelModelRun"),
        )
    }


# OpenAPI links: how a client (and a stateful fuzzer) goes from one answer to the next call.
_LINKS: dict[str, dict[str, Any]] = {
    "triggerModelRun": _run_links("$response.body#/id"),
    "getModelRun": _run_links("$response.body#/id"),
    "cancelModelRun": {
        "GetRun": {"operationId": "getModelRun", "parameters": {"runId": "$response.body#/id"}}
    },
    "listModelRunSteps": {
        "ListTestResults": {
            "operationId": "listModelTestResults",
            "parameters": {"runId": "$response.body#/steps/0/run_id", "stepId": "$response.body#/steps/0/id"},
        }
    },
}


def _operation(operation: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": ["Model Runs"],
        "security": [{"apiKey": [operation.scope]}],
        "description": f"Needs the scope `{operation.scope}`.",
        "parameters": _parameters(operation),
    }
    if operation.operation_id == "triggerModelRun":
        out["requestBody"] = {"required": True, "content": _json("TriggerRequest")}
    responses: dict[str, Any]
    if operation.operation_id == "streamModelRunEvents":
        responses = {
            "200": {
                "description": (
                    "Server-Sent Events: each event is a CloudEvent as `data:`, with `id:` its runseq; "
                    "keep-alive comments every 15 s; the stream ends after the run's terminal event."
                ),
                "headers": _ratelimit_headers(),
                "content": {"text/event-stream": {"schema": _sse_message()}},
            }
        }
    else:
        status, schema, description = _SUCCESS[operation.operation_id]
        headers = _ratelimit_headers()
        if status == 201:
            headers["Location"] = {"schema": {"type": "string"}, "description": "/model-runs/{id}"}
        responses = {str(status): {"description": description, "headers": headers, "content": _json(schema)}}
        links = _LINKS.get(operation.operation_id)
        if links:
            responses[str(status)]["links"] = links
    responses.update(_error_responses(operation))
    out["responses"] = responses
    return out


def _service_paths() -> dict[str, Any]:
    def plain(
        operation_id: str, summary: str, content: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
        responses.update(extra or {})
        return {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "tags": ["Service"],
                "security": [],
                "responses": responses,
            }
        }

    health = _json("Health")
    return {
        "/healthz": plain("healthz", "The process is alive", health),
        "/readyz": plain(
            "readyz",
            "The gateway can take requests (Postgres is reachable)",
            health,
            {"503": {"description": "Postgres is unreachable", "content": health}},
        ),
        "/metrics": plain("metrics", "Prometheus metrics", {"text/plain": {"schema": {"type": "string"}}}),
        "/openapi.json": plain(
            "openapi", "This document", {"application/json": {"schema": {"type": "object"}}}
        ),
    }


def build_spec() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation)
    paths.update(_service_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Model Runs API",
            "version": "1.0.0",
            "description": (
                "Trigger model runs through pipelines of steps, follow them, and read their test results. "
                "Errors are RFC 9457 problem details with a stable `code`."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": "Model Runs"}, {"name": "Service"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <api key>",
                }
            },
            "parameters": {
                "runId": {"name": "runId", "in": "path", "required": True, "schema": {"type": "string"}},
                "stepId": {"name": "stepId", "in": "path", "required": True, "schema": {"type": "string"}},
            },
            "headers": {
                "X-Request-Id": {
                    "description": "The request's id (the caller's own when it sent a sane one).",
                    "schema": {"type": "string"},
                }
            },
        },
    }


def document() -> bytes:
    return jsonutil.dumps(build_spec())
