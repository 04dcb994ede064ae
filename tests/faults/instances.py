"""Private Postgres and RabbitMQ instances for the fault suite.

The suite stops and restarts its broker and its database; the machine's own services are shared with
other test runs, so the suite starts instances of its own, in a temporary directory, on free ports,
and removes them when it ends, whether its tests passed or not. The broker gets a lowered
`consumer_timeout` (checked every second) so that a long step can be shown to keep its channel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.conftest import free_port
from tests.services import (
    START_TIMEOUT,
    ServiceError,
    _check,
    _run,
    postgres_answers,
    postgres_version,
    rabbitmq_answers,
    wait_for,
    wait_until_down,
)

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# Deliveries unacknowledged this long close their channel; a dispatch is acknowledged once its
# step has started, so steps far longer than this must still run to the end on their channel.
CONSUMER_TIMEOUT_MS = 4000
CHANNEL_TICK_MS = 500


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    # initdb and postgres refuse to run as root: as root, they run as the cluster's owner.
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@dataclass
class PrivatePostgres:
    root: Path
    port: int = field(default_factory=free_port)
    owner: str | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _bin(self, name: str) -> str:
        version = postgres_version()
        found = Path(f"/usr/lib/postgresql/{version}/bin/{name}") if version else None
        if found is not None and found.exists():
            return str(found)
        path = shutil.which(name)
        if path is None:
            raise ServiceError(f"{name} is not installed")
        return path

    def create(self) -> None:
        self.owner = "postgres" if os.geteuid() == 0 else None
        self.root.mkdir(parents=True, exist_ok=True)
        if self.owner:
            shutil.chown(self.root, self.owner)
        _check(
            _as_owner(
                [self._bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"],
                self.owner,
            ),
            timeout=120,
        )
        self.start()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        _check(
            _as_owner(
                [
                    self._bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.root / "postgres.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ],
                self.owner,
            ),
            timeout=timeout + 10,
        )
        if not wait_for(lambda: postgres_answers("127.0.0.1", self.port), timeout):
            raise ServiceError(f"the private Postgres did not answer on port {self.port}")

    def stop(self, timeout: float = START_TIMEOUT) -> None:
        _check(
            _as_owner([self._bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], self.owner),
            timeout=timeout,
        )
        wait_until_down("127.0.0.1", self.port, timeout)

    def is_up(self) -> bool:
        return postgres_answers("127.0.0.1", self.port)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run(
                _as_owner(
                    [self._bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                    self.owner,
                ),
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PrivateRabbitMQ:
    root: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    node: str = field(default_factory=lambda: f"modelruns-faults-{uuid.uuid4().hex[:8]}@localhost")
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "MODELRUNS_"))}
        env.update(
            HOME=str(self.root),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.root / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.root / "advanced.config"),
            RABBITMQ_PID_FILE=str(self.root / "rabbitmq.pid"),
        )
        return env

    def create(self, timeout: float = 120) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text(
            "loopback_users = none\n"
            f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        # The tick that checks consumer timeouts runs once a minute by default.
        (self.root / "advanced.config").write_text(
            f"[{{rabbit, [{{channel_tick_interval, {CHANNEL_TICK_MS}}}]}}].\n"
        )
        cookie = self.root / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex)
        cookie.chmod(0o400)
        with (self.root / "server.out").open("ab") as out:
            self.process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self.env(),
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if not wait_for(self.answers, timeout):
            raise ServiceError(f"the private RabbitMQ did not answer on port {self.port}:\n{self.logs()}")

    def _ctl(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        # Run directly (not through /usr/sbin's wrapper, which switches to the rabbitmq user) with
        # this node's HOME, where its cookie is.
        return _run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args], timeout, env=self.env()
        )

    def ctl(self, *args: str, timeout: float = START_TIMEOUT) -> str:
        done = self._ctl(*args, timeout=timeout)
        if done.returncode != 0:
            raise ServiceError(f"rabbitmqctl {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def answers(self) -> bool:
        return rabbitmq_answers("127.0.0.1", self.port)

    def stop_app(self) -> None:
        """An outage: every connection closes and the port stops answering; the node stays up."""
        self.ctl("stop_app")
        if not wait_until_down("127.0.0.1", self.port, START_TIMEOUT):
            raise ServiceError("the private RabbitMQ still listens after stop_app")

    def start_app(self) -> None:
        if self.answers():
            return
        self.ctl("start_app", timeout=120)
        if not wait_for(self.answers, START_TIMEOUT):
            raise ServiceError("the private RabbitMQ did not answer after start_app")

    def add_vhost(self) -> str:
        vhost = f"faults-{uuid.uuid4().hex[:10]}"
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return self.url + vhost

    def queues(self, vhost_url: str) -> list[list[str]]:
        vhost = vhost_url.rsplit("/", 1)[1]
        out = self.ctl("list_queues", "-p", vhost, "--no-table-headers", "name", "type", "arguments")
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def logs(self) -> str:
        parts = []
        for path in [self.root / "server.out", *sorted((self.root / "log").glob("*.log"))]:
            if path.exists():
                parts.append(path.read_text(errors="replace")[-5000:])
        return "\n".join(parts)

    def remove(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ServiceError):
                self._ctl("stop", timeout=60)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # The Erlang runtime leaves an epmd registration that ends with the node; nothing else stays.
        shutil.rmtree(self.root, ignore_errors=True)


def private_root(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"modelruns-faults-{name}-"))
