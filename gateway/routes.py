"""The API's operations: path templates, operationIds and the scope each needs.

The app's routes, the scope check and the OpenAPI document are all built from this one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.auth import READ, WRITE

API_PREFIX = "/model-runs"
TRIGGER = "triggerModelRun"
LIST_QUERY = ("max_results", "page_token", "status")


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    scope: str
    summary: str
    # The query parameters it takes; any other is a 400, so that a misspelt filter is not
    # silently ignored.
    query: tuple[str, ...] = ()


OPERATIONS: tuple[Operation, ...] = (
    Operation("listModelRuns", "GET", "/model-runs", READ, "List model runs, newest first", LIST_QUERY),
    Operation(TRIGGER, "POST", "/model-runs", WRITE, "Trigger a model run"),
    Operation("getModelRun", "GET", "/model-runs/{runId}", READ, "Get one model run"),
    Operation("cancelModelRun", "POST", "/model-runs/{runId}/cancel", WRITE, "Request the cancel of a run"),
    Operation("listModelRunSteps", "GET", "/model-runs/{runId}/steps", READ, "List a run's steps"),
    Operation(
        "listModelTestResults",
        "GET",
        "/model-runs/{runId}/steps/{stepId}/test-results",
        READ,
        "List a step's test results",
        LIST_QUERY,
    ),
    Operation(
        "streamModelRunEvents", "GET", "/model-runs/{runId}/events", READ, "Stream a run's events (SSE)"
    ),
)

_BY_ROUTE: dict[tuple[str, str], Operation] = {(op.method, op.path): op for op in OPERATIONS}


def is_api_path(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def operation_of(request: web.Request) -> Operation | None:
    """The operation a request was routed to; None for an unknown route or method."""
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return None
    method = "GET" if route.method == "HEAD" else route.method
    return _BY_ROUTE.get((method, resource.canonical))


def route_template(request: web.Request) -> str:
    """The path template for metrics: never the raw path, whose ids would explode the label set."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical
