"""Make sure the services the tests need answer: `python -m tests.services ensure`.

Postgres and RabbitMQ installed on this machine are started when their port is closed; without
them, a Docker engine runs them as containers and the URLs to use are written to
`.modelruns/test-services.env`, which the Makefile sources before pytest. The start/stop helpers
are also what fault tests use to take a service away and bring it back.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
DEFAULT_DATABASE_URL = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
DEFAULT_AMQP_URL = f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/"
DATABASE_VAR = "MODELRUNS_TEST_DATABASE_URL"
AMQP_VAR = "MODELRUNS_TEST_AMQP_URL"
ENV_FILE = Path(".modelruns/test-services.env")
START_TIMEOUT = 60.0
POSTGRES_IMAGE = "postgres:15"
RABBITMQ_IMAGE = "rabbitmq:3.10"
CONTAINER_PREFIX = "modelruns-test-"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ServiceError(RuntimeError):
    """A service could not be started or stopped."""


# --- probes -------------------------------------------------------------------------------------


def is_up(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _first_byte(host: str, port: int, hello: bytes, timeout: float) -> bytes:
    # An open port is not enough: a Docker port proxy accepts connections before the server in the
    # container listens, so readiness is the server's first protocol byte.
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(hello)
            return sock.recv(1)
    except OSError:
        return b""


def postgres_answers(host: str = POSTGRES_HOST, port: int = POSTGRES_PORT, timeout: float = 2.0) -> bool:
    """Whether a Postgres server there takes a login (it asks to authenticate, or accepts)."""
    params = b"user\0postgres\0database\0postgres\0\0"
    body = struct.pack("!i", 3 << 16) + params
    return _first_byte(host, port, struct.pack("!i", len(body) + 4) + body, timeout) == b"R"


def rabbitmq_answers(host: str = RABBITMQ_HOST, port: int = RABBITMQ_PORT, timeout: float = 2.0) -> bool:
    """Whether an AMQP 0-9-1 broker there starts a connection (its first frame is a method frame)."""
    return _first_byte(host, port, b"AMQP\x00\x00\x09\x01", timeout) == b"\x01"


def wait_for(probe: Callable[[], bool], timeout: float = START_TIMEOUT, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def wait_until_down(host: str, port: int, timeout: float = START_TIMEOUT) -> bool:
    return wait_for(lambda: not is_up(host, port, timeout=0.5), timeout)


def wait_or_kill(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Wait for a process told to stop; kill it when it overstays `timeout`."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# --- local services -----------------------------------------------------------------------------


def _run(
    argv: Sequence[str], timeout: float = START_TIMEOUT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"{shlex.join(argv)} did not finish within {timeout:.0f}s") from exc
    except OSError as exc:
        raise ServiceError(f"{shlex.join(argv)}: {exc}") from exc


def _check(argv: Sequence[str], timeout: float = START_TIMEOUT) -> None:
    done = _run(argv, timeout)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().replace("\n", " ")
        raise ServiceError(f"{shlex.join(argv)} failed ({done.returncode}): {output}")


def postgres_version() -> str | None:
    """The installed Postgres cluster version (the newest under /etc/postgresql), or None."""
    root = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not root.is_dir():
        return None
    versions = sorted((p.name for p in root.iterdir() if (p / "main").is_dir()), key=_version_key)
    return versions[-1] if versions else None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def postgres_installed() -> bool:
    return postgres_version() is not None


def rabbitmq_installed() -> bool:
    return shutil.which("rabbitmq-server") is not None and shutil.which("rabbitmqctl") is not None


def _pg_ctlcluster(action: str) -> None:
    version = postgres_version()
    if version is None:
        raise ServiceError("Postgres is not installed here (no pg_ctlcluster or /etc/postgresql/*/main)")
    _check(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action])


def start_postgres(timeout: float = START_TIMEOUT) -> None:
    """Start the local cluster unless it answers already; returns once it takes logins."""
    if postgres_answers():
        return
    _pg_ctlcluster("start")
    if not wait_for(postgres_answers, timeout):
        raise ServiceError(
            f"Postgres did not answer on {POSTGRES_HOST}:{POSTGRES_PORT} within {timeout:.0f}s"
        )


def stop_postgres(timeout: float = START_TIMEOUT) -> None:
    _pg_ctlcluster("stop")
    if not wait_until_down(POSTGRES_HOST, POSTGRES_PORT, timeout):
        raise ServiceError(f"Postgres still listens on {POSTGRES_HOST}:{POSTGRES_PORT}")


def _rabbitmq_node_alive() -> bool:
    return _run(["rabbitmq-diagnostics", "-q", "ping"], timeout=30).returncode == 0


def start_rabbitmq(timeout: float = START_TIMEOUT) -> None:
    """Start the local broker (its app, when only the app was stopped; else the whole node) unless it
    answers already; returns once it takes AMQP connections."""
    if rabbitmq_answers():
        return
    if not rabbitmq_installed():
        raise ServiceError("RabbitMQ is not installed here (no rabbitmq-server / rabbitmqctl)")
    deadline = time.monotonic() + timeout
    if _rabbitmq_node_alive():
        _check(["rabbitmqctl", "-q", "start_app"], timeout)
    else:
        _check(["rabbitmq-server", "-detached"], timeout)
    # `-detached` returns before the node registers, and until it has, await_startup fails at once
    # ("node not running"): it is asked again until the node answers or the deadline passes.
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServiceError(
                f"RabbitMQ did not answer on {RABBITMQ_HOST}:{RABBITMQ_PORT} within {timeout:.0f}s"
            )
        waited = _run(["rabbitmqctl", "-q", "-t", str(max(1, int(left))), "await_startup"], left + 10)
        if waited.returncode == 0 and wait_for(rabbitmq_answers, min(left, 10.0)):
            return
        time.sleep(0.5)


def stop_rabbitmq(timeout: float = START_TIMEOUT, *, whole_node: bool = False) -> None:
    """Stop the broker. By default only its app, which closes every connection and the AMQP port
    like an outage does, while the node stays up so that `start_app` brings it back in seconds."""
    _check(["rabbitmqctl", "-q", "stop" if whole_node else "stop_app"], timeout)
    if not wait_until_down(RABBITMQ_HOST, RABBITMQ_PORT, timeout):
        raise ServiceError(f"RabbitMQ still listens on {RABBITMQ_HOST}:{RABBITMQ_PORT}")


# --- containers ---------------------------------------------------------------------------------


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return _run(["docker", "info"], timeout=30).returncode == 0
    except ServiceError:
        return False


@dataclass(frozen=True)
class Service:
    name: str
    variable: str
    default_url: str
    image: str
    container_port: int
    env: tuple[tuple[str, str], ...]
    answers: Callable[[str, int], bool]
    start_local: Callable[[], None]
    installed: Callable[[], bool]

    @property
    def container(self) -> str:
        return CONTAINER_PREFIX + self.name.lower()

    def url_for(self, host: str, port: int) -> str:
        parts = urlsplit(self.default_url)
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + f"{host}:{port}"
        return parts._replace(netloc=netloc).geturl()


POSTGRES = Service(
    name="Postgres",
    variable=DATABASE_VAR,
    default_url=DEFAULT_DATABASE_URL,
    image=POSTGRES_IMAGE,
    container_port=5432,
    env=(("POSTGRES_HOST_AUTH_METHOD", "trust"),),
    answers=lambda host, port: postgres_answers(host, port),
    start_local=lambda: start_postgres(),
    installed=postgres_installed,
)
RABBITMQ = Service(
    name="RabbitMQ",
    variable=AMQP_VAR,
    default_url=DEFAULT_AMQP_URL,
    image=RABBITMQ_IMAGE,
    container_port=5672,
    env=(),
    answers=lambda host, port: rabbitmq_answers(host, port),
    start_local=lambda: start_rabbitmq(),
    installed=rabbitmq_installed,
)
SERVICES = (POSTGRES, RABBITMQ)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def start_container(service: Service, timeout: float = START_TIMEOUT) -> str:
    """Run `service` in a container that outlives this process; returns the URL to reach it."""
    # The container must stay after this command exits (the tests run in another process), so
    # testcontainers' reaper, which removes containers when their creator exits, is not used.
    os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    from testcontainers.core.container import DockerContainer

    # A container left by an earlier run is replaced: its state is unknown.
    _run(["docker", "rm", "-f", service.container], timeout=60)
    container = DockerContainer(service.image).with_name(service.container)
    for key, value in service.env:
        container = container.with_env(key, value)
    # Bound to the usual port when possible, so that `make demo` and `make up` find it at the defaults.
    container = container.with_bind_ports(service.container_port, service.container_port)
    try:
        container.start()
    except Exception as exc:
        _run(["docker", "rm", "-f", service.container], timeout=60)
        container = DockerContainer(service.image).with_name(service.container)
        for key, value in service.env:
            container = container.with_env(key, value)
        container = container.with_exposed_ports(service.container_port)
        try:
            container.start()
        except Exception as again:
            raise ServiceError(f"cannot start a {service.image} container: {again}") from exc
    host = container.get_container_host_ip()
    port = int(container.get_exposed_port(service.container_port))
    if not wait_for(lambda: service.answers(host, port), timeout):
        raise ServiceError(
            f"the {service.image} container did not answer on {host}:{port} within {timeout:.0f}s"
        )
    return service.url_for(host, port)


def remove_containers() -> None:
    for service in SERVICES:
        _run(["docker", "rm", "-f", service.container], timeout=60)


# --- ensure -------------------------------------------------------------------------------------


def _write_env(values: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Written by `python -m tests.services ensure`; sourced by the Makefile before pytest."]
    # Only URLs that differ from the tests' defaults are exported, so that a run on local services
    # puts no extra MODELRUNS_* variable into the environment of the processes the tests start.
    lines += [f"{name}={shlex.quote(value)}" for name, value in sorted(values.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def ensure(environ: dict[str, str] | None = None, env_file: Path = ENV_FILE) -> int:
    env = dict(os.environ if environ is None else environ)
    exported: dict[str, str] = {}
    missing: list[Service] = []
    for service in SERVICES:
        url = env.get(service.variable) or service.default_url
        host, port = _host_port(url, service.container_port)
        if service.answers(host, port):
            print(f"{service.name}: answers at {host}:{port}")
            if url != service.default_url:
                exported[service.variable] = url
            continue
        if env.get(service.variable):
            print(f"{service.name}: {service.variable}={url} does not answer", file=sys.stderr)
            return 1
        if host in LOCAL_HOSTS and service.installed():
            print(f"{service.name}: not answering at {host}:{port}, starting the local one")
            try:
                service.start_local()
            except ServiceError as exc:
                print(f"{service.name}: {exc}", file=sys.stderr)
                return 1
            print(f"{service.name}: started, answers at {host}:{port}")
            continue
        missing.append(service)
    if missing:
        names = " and ".join(s.name for s in missing)
        if not docker_available():
            print(
                f"{names} not reachable ({', '.join(f'{s.name} at {s.default_url}' for s in missing)}), "
                f"not installed locally, and no Docker engine answers `docker info`: install "
                f"{'them' if len(missing) > 1 else 'it'} or start Docker",
                file=sys.stderr,
            )
            return 1
        for service in missing:
            print(f"{service.name}: not installed locally, starting a {service.image} container")
            try:
                url = start_container(service)
            except ServiceError as exc:
                print(f"{service.name}: {exc}", file=sys.stderr)
                return 1
            print(f"{service.name}: {service.variable}={url}")
            if url != service.default_url:
                exported[service.variable] = url
            else:
                print(f"{service.name}: the container answers at the default address")
    _write_env(exported, env_file)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.services", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ensure", help="start Postgres and RabbitMQ if they do not answer")
    sub.add_parser("status", help="tell whether Postgres and RabbitMQ answer")
    sub.add_parser("down", help="remove the containers `ensure` started (never local services)")
    args = parser.parse_args(argv)
    if args.command == "ensure":
        return ensure()
    if args.command == "status":
        states = {
            s.name: s.answers(*_host_port(os.environ.get(s.variable) or s.default_url, s.container_port))
            for s in SERVICES
        }
        for name, up in states.items():
            print(f"{name}: {'up' if up else 'down'}")
        return 0 if all(states.values()) else 1
    if docker_available():
        remove_containers()
    ENV_FILE.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
