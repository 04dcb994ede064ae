"""The async client of the modelruns HTTP API: one method per operation, answers as the API's
pydantic models, retries where a retry is safe, errors as typed exceptions."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
from collections.abc import AsyncGenerator, Callable, Mapping
from importlib import metadata
from typing import Any, TypeVar
from urllib.parse import quote
from uuid import uuid4

import aiohttp
from pydantic import BaseModel
from yarl import URL

from modelruns_client.config import load_config
from modelruns_client.errors import ApiError, ClientError, InvalidResponse, TransportError, api_error
from modelruns_client.models import Run, RunEvent, RunList, Step, StepList, TestResult, TestResultList, parse
from modelruns_client.retry import NEVER, RETRY_STATUSES, Retry, parse_retry_after
from modelruns_client.sse import SseParser
from shared.errors import ConfigurationError
from shared.events import TERMINAL_RUN_EVENTS
from shared.states import TERMINAL_RUN, RunStatus, TestStatus

M = TypeVar("M", bound=BaseModel)

# The gateway sends a keep-alive comment every 15 s: three missed ones mean the stream is dead.
STREAM_IDLE_SECONDS = 45.0


def _version() -> str:
    try:
        return metadata.version("modelruns")
    except metadata.PackageNotFoundError:
        return "0"


USER_AGENT = f"modelruns-python/{_version()}"


def _check_url(url: str) -> str:
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"not a usable API URL: {url!r}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(f"not a usable API URL: {url!r} (expected http(s)://host[:port])")
    return url.rstrip("/")


def _page_params(status: str | None, max_results: int, page_token: str | None) -> dict[str, str]:
    params = {"max_results": str(max_results)}
    if status is not None:
        params["status"] = str(getattr(status, "value", status))
    if page_token:
        params["page_token"] = page_token
    return params


def _event_json(run_id: str, data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("runseq"), int):
        raise InvalidResponse(f"the event stream of run {run_id} sent something that is not an event")
    return event


class Client:
    """`async with Client(url, api_key) as client: run = await client.trigger(body)`.

    Every call is retried on 429, 5xx and lost connections (`retry`), waiting what `Retry-After`
    asks. A trigger always carries an `Idempotency-Key` (a fresh one unless given), so that a retry
    of it returns the run the first try made instead of making a second. `on_retry(error, delay)`
    is told of each retry, e.g. to log it.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        stream_idle_timeout: float = STREAM_IDLE_SECONDS,
        session: aiohttp.ClientSession | None = None,
        user_agent: str = USER_AGENT,
        on_retry: Callable[[ClientError, float], None] | None = None,
    ) -> None:
        self.url = _check_url(url)
        self.retry = retry or Retry()
        self.timeout = timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.on_retry = on_retry
        # Sent with every request rather than set on the session, which may be the caller's.
        self._headers = {"Accept": "application/json", "User-Agent": user_agent}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session = session
        self._own_session = session is None

    @classmethod
    def from_config(
        cls,
        *,
        url: str | None = None,
        api_key: str | None = None,
        config_file: str | None = None,
        **options: Any,
    ) -> Client:
        """A client on the URL and key of the arguments, else MODELRUNS_URL / MODELRUNS_API_KEY,
        else the config file (see modelruns_client.config)."""
        config = load_config(url=url, api_key=api_key, path=config_file)
        return cls(config.url, config.api_key, **options)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    # -- the wire ---------------------------------------------------------------------------

    def _unreachable(self, exc: BaseException) -> TransportError:
        reason = " ".join(str(exc).split()) or (
            "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        )
        error = TransportError(f"cannot reach the API at {self.url}: {reason}")
        error.__cause__ = exc
        return error

    @staticmethod
    def _retryable(error: ClientError) -> bool:
        if isinstance(error, ApiError):
            return error.status in RETRY_STATUSES
        return isinstance(error, TransportError)

    async def _backoff(
        self, error: ClientError, failures: int, retry: Retry, wait_hint: float | None = None
    ) -> None:
        """Sleep before the next try, or raise `error` when the policy gives up. The server's
        Retry-After comes first, then `wait_hint` (an event stream's `retry:` field)."""
        if not self._retryable(error):
            raise error
        asked = error.retry_after if isinstance(error, ApiError) else None
        delay = retry.delay(failures, asked if asked is not None else wait_hint)
        if delay is None:
            raise error
        if self.on_retry is not None:
            self.on_retry(error, delay)
        await asyncio.sleep(delay)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry: Retry | None = None,
    ) -> bytes:
        policy = retry or self.retry
        send_headers = {**self._headers, **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
            send_headers["Content-Type"] = "application/json"
        failures = 0
        while True:
            error: ClientError
            try:
                async with self._http().request(
                    method,
                    self.url + path,
                    params=params,
                    data=data,
                    headers=send_headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response:
                    raw = await response.read()
                    if response.status < 400:
                        return raw
                    error = api_error(
                        response.status,
                        raw,
                        reason=response.reason,
                        retry_after=parse_retry_after(response.headers.get("Retry-After")),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = self._unreachable(exc)
            failures += 1
            await self._backoff(error, failures, policy)

    async def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return parse(model, await self._send(method, path, **kwargs))

    @staticmethod
    def _run_path(run_id: str, *rest: str) -> str:
        return "/model-runs/" + "/".join(quote(str(part), safe="") for part in (run_id, *rest))

    # -- the operations ---------------------------------------------------------------------

    async def ready(self) -> bool:
        """Whether the gateway can take requests (GET /readyz), asked once."""
        try:
            await self._send("GET", "/readyz", retry=NEVER)
        except ClientError:
            return False
        return True

    async def trigger(
        self, body: BaseModel | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Run:
        """POST /model-runs. `body` is a TriggerRequest or the same as plain JSON (sent as it is,
        for the gateway to judge)."""
        payload = body.model_dump(mode="json", exclude_unset=True) if isinstance(body, BaseModel) else body
        key = idempotency_key or f"modelruns-python-{uuid4()}"
        return await self._call(Run, "POST", "/model-runs", body=payload, headers={"Idempotency-Key": key})

    async def get(self, run_id: str) -> Run:
        return await self._call(Run, "GET", self._run_path(run_id))

    async def cancel(self, run_id: str) -> Run:
        """Ask the run to stop (idempotent): it answers `cancelling` and surely ends `cancelled`."""
        return await self._call(Run, "POST", self._run_path(run_id, "cancel"))

    async def steps(self, run_id: str) -> builtins.list[Step]:
        return (await self._call(StepList, "GET", self._run_path(run_id, "steps"))).steps

    async def list_page(
        self, *, status: RunStatus | str | None = None, max_results: int = 100, page_token: str | None = None
    ) -> RunList:
        params = _page_params(status, max_results, page_token)
        return await self._call(RunList, "GET", "/model-runs", params=params)

    async def list(
        self, *, status: RunStatus | str | None = None, page_size: int = 100, limit: int | None = None
    ) -> AsyncGenerator[Run, None]:
        """Every run (or `limit` of them), newest first, page after page."""
        token: str | None = None
        given = 0
        while limit is None or given < limit:
            size = page_size if limit is None else min(page_size, limit - given)
            page = await self.list_page(status=status, max_results=size, page_token=token)
            for run in page.model_runs:
                yield run
                given += 1
            token = page.next_page_token
            if not token:
                return

    async def test_results_page(
        self,
        run_id: str,
        step_id: str,
        *,
        status: TestStatus | str | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> TestResultList:
        path = self._run_path(run_id, "steps", step_id, "test-results")
        params = _page_params(status, max_results, page_token)
        return await self._call(TestResultList, "GET", path, params=params)

    async def test_results(
        self, run_id: str, step_id: str, *, status: TestStatus | str | None = None, page_size: int = 1000
    ) -> AsyncGenerator[TestResult, None]:
        """A step's test results of every attempt, in the order reported, page after page."""
        token: str | None = None
        while True:
            page = await self.test_results_page(
                run_id, step_id, status=status, max_results=page_size, page_token=token
            )
            for result in page.test_results:
                yield result
            token = page.next_page_token
            if not token:
                return

    async def events(
        self, run_id: str, *, last_event_id: int | None = None
    ) -> AsyncGenerator[RunEvent, None]:
        """The run's events (GET /model-runs/{runId}/events): the stored ones from the first (or
        after `last_event_id`), then live ones, ending after the run's terminal event. A dropped
        or silent stream is reopened with Last-Event-ID, so no event is missed or repeated."""
        async for message in self._stream(run_id, last_event_id):
            yield parse(RunEvent, message)

    async def wait(self, run_id: str, *, timeout: float | None = None) -> Run:
        """The run once it is terminal (following its events); TimeoutError after `timeout` s."""
        async with asyncio.timeout(timeout):
            async with contextlib.aclosing(self._stream(run_id, None)) as messages:
                async for _ in messages:
                    pass
            return await self.get(run_id)

    async def _stream(self, run_id: str, last_event_id: int | None) -> AsyncGenerator[dict[str, Any], None]:
        """The stream's events as JSON objects, reopened after where it broke."""
        url = self.url + self._run_path(run_id, "events")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=self.stream_idle_timeout
        )
        cursor = last_event_id
        failures = 0
        server_retry: float | None = None  # the latest `retry:` the stream sent, in seconds
        while True:
            headers = {**self._headers, "Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if cursor is not None:
                headers["Last-Event-ID"] = str(cursor)
            received = 0
            error: ClientError | None = None
            try:
                async with self._http().get(url, headers=headers, timeout=timeout) as response:
                    if response.status >= 400:
                        raise api_error(
                            response.status,
                            await response.read(),
                            reason=response.reason,
                            retry_after=parse_retry_after(response.headers.get("Retry-After")),
                        )
                    parser = SseParser()
                    async for chunk in response.content.iter_any():
                        messages = parser.feed(chunk)
                        if parser.retry_ms is not None:
                            server_retry = parser.retry_ms / 1000
                        for message in messages:
                            event = _event_json(run_id, message.data)
                            cursor = event["runseq"]
                            received += 1
                            failures = 0
                            yield event
                            if event.get("type") in TERMINAL_RUN_EVENTS:
                                return
            except ApiError as exc:
                error = exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = self._unreachable(exc)
            if error is None:
                # The stream ended before the terminal event: the gateway stopped, lost its
                # database, or was asked to resume after the run's last event.
                if received == 0 and (await self.get(run_id)).status in TERMINAL_RUN:
                    return
                error = TransportError(f"the event stream of run {run_id} ended before the run did")
            failures = failures + 1 if received == 0 else 1
            await self._backoff(error, failures, self.retry, server_retry)
