"""/model-runs/{runId}/steps and a step's test results."""

from __future__ import annotations

from aiohttp import web

from gateway import params
from gateway.context import PAGE_TOKENS, REPOSITORY, principal
from gateway.page_tokens import InvalidPageToken, results_binding
from gateway.problems import ApiProblem
from gateway.responses import json_response
from shared.models.resources import result_resource, step_resource
from shared.states import TestStatus


async def list_steps(request: web.Request) -> web.StreamResponse:
    run_id = params.path_id(request, "runId", "run")
    rows = await request.app[REPOSITORY].list_steps(run_id, principal(request).tenant_id)
    if rows is None:
        raise ApiProblem("not_found", "no such run")
    return json_response({"steps": [step_resource(r) for r in rows]})


async def list_test_results(request: web.Request) -> web.StreamResponse:
    who = principal(request)
    run_id = params.path_id(request, "runId", "run")
    step_id = params.path_id(request, "stepId", "step")
    limit = params.max_results(request)
    status = params.status(request, TestStatus)
    token = params.page_token(request)
    repo = request.app[REPOSITORY]
    if not await repo.step_in_run(step_id, run_id, who.tenant_id):
        raise ApiProblem("not_found", "no such step in this run")
    tokens = request.app[PAGE_TOKENS]
    binding = results_binding(who.tenant_id, run_id, step_id, status)
    after = None
    if token is not None:
        try:
            after = tokens.read_result_position(token, binding)
        except InvalidPageToken as exc:
            raise ApiProblem("invalid_page_token", str(exc)) from None
    rows = await repo.list_results(step_id, limit + 1, status, after)
    page = rows[:limit]
    next_token = None
    if len(rows) > limit:
        last = page[-1]
        next_token = tokens.issue_result_position(binding, last["attempt"], last["seq"])
    return json_response({"test_results": [result_resource(r) for r in page], "next_page_token": next_token})
