"""What a benchmark runs on: its own database and vhost (created, then dropped), and modelruns'
processes started as an operator starts them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg

from tests.services import wait_or_kill

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"
LOGS = WORK / "logs"
BIN = Path(sys.executable).parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
AMQP_BASE = "amqp://guest:guest@127.0.0.1:5672/"
TERMINAL = ("succeeded", "failed", "cancelled")
# Default settings but the rate limits, which would otherwise bound the load generator itself.
UNLIMITED = {
    "rate_limit_per_second": "1000000",
    "rate_limit_burst": "1000000",
    "trigger_rate_limit_per_second": "1000000",
    "trigger_rate_limit_burst": "1000000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@dataclass
class Services:
    """A dedicated database and vhost, never the tests' ones."""

    name: str
    db_url: str
    amqp_url: str
    vhost: str


@asynccontextmanager
async def services(label: str) -> AsyncIterator[Services]:
    name = f"modelruns_bench_{label}_{uuid.uuid4().hex[:6]}"
    vhost = name.replace("_", "-")
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    found = Services(name, with_db(ADMIN_URL, name), AMQP_BASE + quote(vhost, safe=""), vhost)
    try:
        yield found
    finally:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        rabbitmqctl("delete_vhost", vhost)


# `--code DIR`: run modelruns' processes from another checkout (a before/after comparison).
CODE: list[str] = []


def modelruns_env(svc: Services, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELRUNS_")}
    if CODE:
        env["PYTHONPATH"] = os.pathsep.join(CODE)
    values = {"database_url": svc.db_url, "amqp_url": svc.amqp_url, **settings}
    env.update({f"MODELRUNS_{k.upper()}": v for k, v in values.items()})
    return env


def modelruns(env: Mapping[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "modelruns"), *args], env=dict(env), capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"modelruns {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


@dataclass
class Process:
    """One modelruns process (`gateway`, `orchestrator`, `worker`, `up`) with its ops or HTTP port."""

    role: str
    env: dict[str, str]
    ready_url: str
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)

    def start(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{self.role}-{os.getpid()}-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                [str(BIN / "modelruns"), self.role], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for {self.role}")

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.role} exited: {self.log_path.read_text()[-3000:]}")
            try:
                async with session.get(self.ready_url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.role} not ready in {timeout:.0f} s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        wait_or_kill(self.popen, timeout=45)


@dataclass
class Stack:
    svc: Services
    url: str
    key: str
    processes: dict[str, Process]
    pool: asyncpg.Pool

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@asynccontextmanager
async def stack(
    label: str, *, topology: str = "split", tenant: str = "bench", **settings: str
) -> AsyncIterator[Stack]:
    """A migrated database, an API key, and either one gateway, one orchestrator and one worker
    process (`split`, the one-machine topology) or `modelruns up` (`up`)."""
    async with services(label) as svc:
        http_port = free_port()
        base = modelruns_env(svc, http_port=str(http_port), **{**UNLIMITED, **settings})
        modelruns(base, "db", "upgrade")
        key = modelruns(
            base, "api-keys", "create", "--tenant", tenant, "--scope", "runs:read", "--scope", "runs:write"
        )
        key = key.strip().splitlines()[-1]
        url = f"http://127.0.0.1:{http_port}"
        processes: dict[str, Process] = {}
        if topology == "up":
            processes["up"] = Process("up", base, url + "/readyz")
        else:
            processes["gateway"] = Process("gateway", base, url + "/readyz")
            for role in ("orchestrator", "worker"):
                port = free_port()
                processes[role] = Process(
                    role, {**base, "MODELRUNS_OPS_PORT": str(port)}, f"http://127.0.0.1:{port}/readyz"
                )
        pool = await asyncpg.create_pool(svc.db_url, min_size=1, max_size=4)
        assert pool is not None
        try:
            async with aiohttp.ClientSession() as session:
                for process in processes.values():
                    process.start()
                for process in processes.values():
                    await process.wait_ready(session)
            yield Stack(svc, url, key, processes, pool)
        finally:
            for process in reversed(processes.values()):
                process.stop()
            await pool.close()


def chain_body(
    steps: int, *, results: int = 1, duration: float = 0.0, first_duration: float | None = None
) -> dict[str, Any]:
    """A run of `steps` synthetic no-op steps in a chain, each reporting `results` passed tests."""
    body_steps: list[dict[str, Any]] = []
    for i in range(steps):
        seconds = first_duration if i == 0 and first_duration is not None else duration
        params: dict[str, Any] = {"results": [{"name": f"t{j}", "status": "passed"} for j in range(results)]}
        if seconds:
            params["duration_seconds"] = seconds
        step: dict[str, Any] = {"name": f"s{i}", "kind": "synthetic", "params": params}
        if i:
            step["depends_on"] = [f"s{i - 1}"]
        body_steps.append(step)
    return {"model": {"name": "bench", "version": "1"}, "steps": body_steps}


async def trigger(session: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]) -> tuple[str, float]:
    """POST one run; returns its id and the wall-clock time the request was sent."""
    sent = time.time()
    async with session.post(stack.url + "/model-runs", json=body, headers=stack.headers()) as response:
        answer = await response.json()
        if response.status != 201:
            raise RuntimeError(f"trigger answered {response.status}: {answer}")
    return str(answer["id"]), sent


async def trigger_many(
    session: aiohttp.ClientSession, stack: Stack, body: dict[str, Any], count: int, *, in_flight: int = 32
) -> dict[str, float]:
    """`count` triggers with at most `in_flight` outstanding (a closed loop); id → send time."""
    sent: dict[str, float] = {}
    queue = iter(range(count))

    async def lane() -> None:
        for _ in queue:
            run_id, at = await trigger(session, stack, body)
            sent[run_id] = at

    await asyncio.gather(*(lane() for _ in range(min(in_flight, count))))
    return sent


async def wait_terminal(pool: asyncpg.Pool, expected: int, *, timeout: float, progress: Any = None) -> None:
    """Poll the runs table until `expected` runs are terminal."""
    deadline = time.monotonic() + timeout
    while True:
        done = await pool.fetchval(
            "SELECT count(*) FROM runs WHERE status = ANY($1::run_status[])", list(TERMINAL)
        )
        if progress is not None:
            progress(done)
        if done >= expected:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {expected} runs finished within {timeout:.0f} s")
        await asyncio.sleep(0.1)
