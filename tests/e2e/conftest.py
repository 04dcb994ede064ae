"""The whole stack as a user runs it: `modelruns up` in a subprocess, on its own database and vhost."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import create_database, create_vhost, drop_database, drop_vhost
from tests.services import wait_or_kill

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELRUNS_")}
    env.update({f"MODELRUNS_{k.upper()}": v for k, v in settings.items()})
    return env


def create_key(env: dict[str, str], tenant: str, *scopes: str) -> str:
    args = [str(BIN / "modelruns"), "api-keys", "create", "--tenant", tenant]
    for scope in scopes:
        args += ["--scope", scope]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().splitlines()[-1]


@dataclass
class Stack:
    url: str
    db_url: str
    amqp_url: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "modelruns"), "up"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"modelruns up exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with socket.create_connection(
                    ("127.0.0.1", int(self.env["MODELRUNS_HTTP_PORT"])), timeout=0.5
                ):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"modelruns up did not listen within 60 s:\n{self.logs()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        wait_or_kill(self.process)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-20_000:]


@pytest.fixture(scope="module")
def stack(template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db_url = asyncio.run(create_database())
    amqp_url = create_vhost()
    port = free_port()
    env = service_env(
        database_url=db_url,
        amqp_url=amqp_url,
        http_port=str(port),
        step_lease_seconds="3",
        heartbeat_seconds="0.5",
        reconcile_seconds="0.5",
        outbox_poll_seconds="0.2",
        trigger_rate_limit_per_second="1000",
        trigger_rate_limit_burst="1000",
        rate_limit_per_second="10000",
        rate_limit_burst="10000",
        worker_concurrency="8",
        worker_allow_commands="true",
        log_format="json",
    )
    subprocess.run(
        [str(BIN / "modelruns"), "db", "upgrade"], env=env, check=True, capture_output=True, timeout=60
    )
    stack = Stack(
        f"http://127.0.0.1:{port}", db_url, amqp_url, env, tmp_path_factory.mktemp("stack") / "up.log"
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        drop_vhost(amqp_url)
        asyncio.run(drop_database(db_url))


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    return {
        "acme": create_key(stack.env, "acme", "runs:read", "runs:write"),
        "acme-read": create_key(stack.env, "acme", "runs:read"),
        "globex": create_key(stack.env, "globex", "runs:read", "runs:write"),
    }


class Api:
    """A thin client for the tests: every call returns (status, body)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str) -> None:
        self.session = session
        self.base = base
        self.key = key

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        async with self.session.request(
            method, self.base + path, json=body, headers={"Authorization": f"Bearer {self.key}", **headers}
        ) as response:
            return response.status, await response.json(content_type=None)

    async def trigger(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        status, run = await self.call("POST", "/model-runs", body, **headers)
        assert status == 201, run
        return dict(run)

    async def run(self, run_id: str) -> dict[str, Any]:
        status, run = await self.call("GET", f"/model-runs/{run_id}")
        assert status == 200, run
        return dict(run)

    async def steps(self, run_id: str) -> dict[str, dict[str, Any]]:
        status, body = await self.call("GET", f"/model-runs/{run_id}/steps")
        assert status == 200, body
        return {s["name"]: s for s in body["steps"]}

    async def wait(self, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = await self.run(run_id)
            if run["status"] in ("succeeded", "failed", "cancelled"):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout}s: {run}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(session: aiohttp.ClientSession, stack: Stack, keys: dict[str, str]) -> Api:
    return Api(session, stack.url, keys["acme"])


@pytest.fixture
def other_api(session: aiohttp.ClientSession, stack: Stack, keys: dict[str, str]) -> Api:
    return Api(session, stack.url, keys["globex"])
