"""The services as separate processes (one gateway, several orchestrators and workers) on one
database and vhost, with short leases and intervals, and the faults to inflict on them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.conftest import BIN, free_port, service_env
from tests.services import wait_or_kill

# Short enough that a lost worker is noticed within seconds; the heartbeat renews well inside it.
TIMINGS = {
    "step_lease_seconds": "2",
    "heartbeat_seconds": "0.4",
    "reconcile_seconds": "0.5",
    "outbox_poll_seconds": "0.2",
    "cancel_deadline_seconds": "5",
    "worker_shutdown_grace_seconds": "2",
}
START_TIMEOUT = 60.0


def base_env(db_url: str, amqp_url: str, **settings: str) -> dict[str, str]:
    return service_env(
        database_url=db_url,
        amqp_url=amqp_url,
        database_pool_size="5",
        trigger_rate_limit_per_second="10000",
        trigger_rate_limit_burst="10000",
        rate_limit_per_second="10000",
        rate_limit_burst="10000",
        page_token_secret="faults-secret",
        log_format="json",
        **{**TIMINGS, **settings},
    )


@dataclass
class Service:
    """One `modelruns` process and its log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_action: str | None
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log_offset: int = 0

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "modelruns"), *self.argv],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        """Whether this start of the process says it is ready (or, for the gateway, listens)."""
        if not self.alive():
            return False
        if self.ready_action is None:
            assert self.port is not None
            import socket

            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False
        return any(e.get("action") == self.ready_action for e in self.entries(since_start=True))

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.tail()}")
            time.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """kill -9: no goodbye, nothing flushed."""
        if self.process is not None and self.alive():
            self.process.kill()
            self.process.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int | None:
        if self.process is None or not self.alive():
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def entries(self, *, since_start: bool = False) -> Iterator[dict[str, Any]]:
        if not self.log_path.exists():
            return
        with self.log_path.open("rb") as log:
            if since_start:
                log.seek(self._log_offset)
            for line in log:
                if line.startswith(b"{"):
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("action") == action]

    def tail(self, chars: int = 6000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass
class Cluster:
    db_url: str
    amqp_url: str
    log_dir: Path
    env: dict[str, str]
    gateway_port: int = field(default_factory=free_port)
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def add(self, name: str, *argv: str, ready_action: str | None, **settings: str) -> Service:
        env = {**self.env, **{f"MODELRUNS_{k.upper()}": v for k, v in settings.items()}}
        service = Service(name, list(argv), env, self.log_dir / f"{name}.log", ready_action)
        self.services[name] = service
        return service

    def add_gateway(self) -> Service:
        service = self.add("gateway", "gateway", ready_action=None, http_port=str(self.gateway_port))
        service.port = self.gateway_port
        return service

    def add_orchestrator(self, name: str) -> Service:
        return self.add(name, "orchestrator", ready_action="orchestrator.ready")

    def add_worker(self, name: str, *, concurrency: int = 4, **settings: str) -> Service:
        return self.add(
            name,
            "worker",
            ready_action="worker.ready",
            worker_id=name,
            worker_concurrency=str(concurrency),
            **settings,
        )

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def of_kind(self, kind: str) -> list[Service]:
        return [s for s in self.services.values() if s.argv[0] == kind]

    def start(self, *names: str) -> None:
        chosen = [self.services[n] for n in names] if names else list(self.services.values())
        for service in chosen:
            if not service.alive():
                service.start()
        for service in chosen:
            service.wait_ready()

    def ensure(self) -> None:
        """Every service running again (a case may have killed or paused some)."""
        for service in self.services.values():
            service.signal(signal.SIGCONT)
        self.start(*[name for name, s in self.services.items() if not s.alive()])

    def stop(self) -> None:
        for service in self.services.values():
            if service.alive():
                service.signal(signal.SIGCONT)
                service.process.terminate()  # type: ignore[union-attr]
        for service in self.services.values():
            if service.process is not None:
                wait_or_kill(service.process)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{s.tail(3000)}" for name, s in self.services.items())

    def all_entries(self, action: str) -> list[dict[str, Any]]:
        return [e for s in self.services.values() for e in s.actions(action)]
