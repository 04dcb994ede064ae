"""/model-runs/{runId}/events: the run's stored events as Server-Sent Events, then live ones.

The event log (`run_events`) is the source: stored events are sent in runseq order, then the table
is polled for newer ones. `id:` is the runseq, so a client's Last-Event-ID resumes after it. There
is no `event:` field: a browser's onmessage sees every event, and the type is inside the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from uuid import UUID

from aiohttp import web
from aiohttp.client_exceptions import ClientConnectionResetError

from gateway import params
from gateway.context import CLOSING, METRICS, REPOSITORY, principal
from gateway.problems import ApiProblem
from gateway.repository import GatewayRepository
from shared import jsonutil
from shared.errors import DatabaseUnavailable
from shared.events import TERMINAL_RUN_EVENTS
from shared.states import TERMINAL_RUN, RunStatus

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
# How often an idle stream checks whether its run finished behind the cursor (a Last-Event-ID
# beyond the terminal event), so that such a stream ends too.
FINISHED_CHECK_SECONDS = 5.0
BATCH = 500
_INTEGER = re.compile(r"^-?[0-9]{1,30}$")
MAX_RUNSEQ = 2**62


def last_event_id(request: web.Request) -> int:
    text = request.headers.get("Last-Event-ID")
    if text is None or text.strip() == "":
        return 0
    text = text.strip()
    if not _INTEGER.fullmatch(text):
        raise ApiProblem(
            "validation_error",
            "Last-Event-ID must be an integer (the runseq of the last event seen)",
            errors=[("/Last-Event-ID", "expected an integer")],
        )
    return min(max(int(text), 0), MAX_RUNSEQ)


def frame(runseq: int, body: object) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (runseq, jsonutil.dumps(body))


KEEPALIVE_FRAME = b": keep-alive\n\n"


async def stream_events(request: web.Request) -> web.StreamResponse:
    run_id = params.path_id(request, "runId", "run")
    repo = request.app[REPOSITORY]
    run = await repo.get_run(run_id, principal(request).tenant_id)
    if run is None:
        raise ApiProblem("not_found", "no such run")
    # After the lookup: a run that is not the caller's is 404 whatever the headers say.
    cursor = last_event_id(request)
    response = web.StreamResponse(
        # No cache or proxy may keep or buffer a live stream.
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    await response.prepare(request)
    metrics = request.app[METRICS]
    metrics.event_streams.inc()
    try:
        finished = RunStatus(run["status"]) in TERMINAL_RUN and cursor >= run["last_runseq"]
        if not finished:
            await _pump(request, response, repo, run_id, cursor)
        await response.write_eof()
    except (ConnectionResetError, ClientConnectionResetError):
        pass  # the client went away
    except DatabaseUnavailable as exc:
        # Headers are sent: ending the stream is the only answer left; the client resumes later.
        log.warning(
            "event stream ended: postgres unavailable",
            extra={"action": "sse.unavailable", "run_id": str(run_id), "error": repr(exc)},
        )
    finally:
        metrics.event_streams.dec()
    return response


async def _pump(
    request: web.Request, response: web.StreamResponse, repo: GatewayRepository, run_id: UUID, cursor: int
) -> None:
    closing = request.app[CLOSING]
    last_write = last_check = time.monotonic()
    while not closing.is_set():
        rows = await repo.events_after(run_id, cursor, BATCH)
        for row in rows:
            await response.write(frame(row["runseq"], row["body"]))
            cursor = row["runseq"]
            last_write = time.monotonic()
            if row["type"] in TERMINAL_RUN_EVENTS:
                return
        if len(rows) == BATCH:
            continue
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        now = time.monotonic()
        if now - last_write >= KEEPALIVE_SECONDS:
            await response.write(KEEPALIVE_FRAME)
            last_write = now
        if now - last_check >= FINISHED_CHECK_SECONDS:
            last_check = now
            progress = await repo.run_progress(run_id)
            if progress is None or (
                RunStatus(progress["status"]) in TERMINAL_RUN and cursor >= progress["last_runseq"]
            ):
                return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), timeout=POLL_SECONDS)
