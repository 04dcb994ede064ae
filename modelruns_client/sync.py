"""The same client for code without an event loop: each call runs the async client on a loop of
its own, in a background thread (so it also works where a loop is already running, e.g. Jupyter)."""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import AsyncGenerator, Coroutine, Generator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from modelruns_client.client import Client
from modelruns_client.models import Run, RunEvent, RunList, Step, TestResult, TestResultList
from shared.states import RunStatus, TestStatus

T = TypeVar("T")


async def _next(items: AsyncGenerator[T, None]) -> T:
    return await anext(items)


class SyncClient:
    """`with SyncClient(url, api_key) as client: client.wait(client.trigger(body).id)`; the
    arguments are Client's."""

    def __init__(self, url: str, api_key: str | None = None, **options: Any) -> None:
        self._start(Client(url, api_key, **options))

    @classmethod
    def from_config(cls, **options: Any) -> SyncClient:
        """As Client.from_config."""
        client = cls.__new__(cls)
        client._start(Client.from_config(**options))
        return client

    def _start(self, client: Client) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="modelruns-client", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self._client.url

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: the call must not go on behind the caller
            raise

    def _iterate(self, items: AsyncGenerator[T, None]) -> Generator[T, None, None]:
        try:
            while True:
                try:
                    yield self._run(_next(items))
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                self._run(items.aclose())

    def ready(self) -> bool:
        return self._run(self._client.ready())

    def trigger(self, body: BaseModel | Mapping[str, Any], *, idempotency_key: str | None = None) -> Run:
        return self._run(self._client.trigger(body, idempotency_key=idempotency_key))

    def get(self, run_id: str) -> Run:
        return self._run(self._client.get(run_id))

    def cancel(self, run_id: str) -> Run:
        return self._run(self._client.cancel(run_id))

    def steps(self, run_id: str) -> builtins.list[Step]:
        return self._run(self._client.steps(run_id))

    def wait(self, run_id: str, *, timeout: float | None = None) -> Run:
        return self._run(self._client.wait(run_id, timeout=timeout))

    def list_page(
        self, *, status: RunStatus | str | None = None, max_results: int = 100, page_token: str | None = None
    ) -> RunList:
        return self._run(
            self._client.list_page(status=status, max_results=max_results, page_token=page_token)
        )

    def list(
        self, *, status: RunStatus | str | None = None, page_size: int = 100, limit: int | None = None
    ) -> Generator[Run, None, None]:
        return self._iterate(self._client.list(status=status, page_size=page_size, limit=limit))

    def test_results_page(
        self,
        run_id: str,
        step_id: str,
        *,
        status: TestStatus | str | None = None,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> TestResultList:
        return self._run(
            self._client.test_results_page(
                run_id, step_id, status=status, max_results=max_results, page_token=page_token
            )
        )

    def test_results(
        self, run_id: str, step_id: str, *, status: TestStatus | str | None = None, page_size: int = 1000
    ) -> Generator[TestResult, None, None]:
        return self._iterate(self._client.test_results(run_id, step_id, status=status, page_size=page_size))

    def events(self, run_id: str, *, last_event_id: int | None = None) -> Generator[RunEvent, None, None]:
        return self._iterate(self._client.events(run_id, last_event_id=last_event_id))
