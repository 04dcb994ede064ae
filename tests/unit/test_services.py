"""The probes and the env file of `python -m tests.services`, against throwaway local sockets."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _serve_once(reply: bytes) -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.recv(64)
            if reply:
                conn.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    thread.join(timeout=5)


@pytest.fixture
def silent_server() -> Iterator[int]:
    # Like a Docker port proxy before the container listens: accepts, then closes.
    yield from _serve_once(b"")


@pytest.fixture
def amqp_like_server() -> Iterator[int]:
    yield from _serve_once(b"\x01\x00\x00")


@pytest.fixture
def postgres_like_server() -> Iterator[int]:
    yield from _serve_once(b"R\x00\x00\x00\x08\x00\x00\x00\x00")


def test_closed_port_is_down(closed_port: int) -> None:
    assert not services.is_up("127.0.0.1", closed_port)
    assert not services.postgres_answers("127.0.0.1", closed_port)
    assert not services.rabbitmq_answers("127.0.0.1", closed_port)


def test_an_open_port_that_says_nothing_does_not_answer(silent_server: int) -> None:
    assert not services.rabbitmq_answers("127.0.0.1", silent_server, timeout=2)


def test_amqp_answer(amqp_like_server: int) -> None:
    assert services.rabbitmq_answers("127.0.0.1", amqp_like_server)


def test_postgres_answer(postgres_like_server: int) -> None:
    assert services.postgres_answers("127.0.0.1", postgres_like_server)


def test_wrong_protocol_does_not_answer(amqp_like_server: int) -> None:
    assert not services.postgres_answers("127.0.0.1", amqp_like_server)


def test_wait_for_gives_up_at_the_deadline() -> None:
    assert not services.wait_for(lambda: False, timeout=0.2, interval=0.05)
    assert services.wait_for(lambda: True, timeout=0)


def test_container_urls_keep_the_credentials() -> None:
    assert services.POSTGRES.url_for("localhost", 32768) == "postgresql://postgres@localhost:32768/postgres"
    assert services.RABBITMQ.url_for("10.0.0.2", 5672) == "amqp://guest:guest@10.0.0.2:5672/"


def test_env_file_is_what_the_makefile_sources(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "test-services.env"
    url = "postgresql://postgres:p$w 'd@localhost:1/postgres"
    services._write_env({services.DATABASE_VAR: url}, path)
    sourced = subprocess.run(
        ["bash", "-c", f'set -a && . "$1" && set +a && printf %s "${services.DATABASE_VAR}"', "-", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout == url
    services._write_env({}, path)
    assert [line for line in path.read_text().splitlines() if not line.startswith("#")] == []


def test_explicit_url_that_does_not_answer_fails(closed_port: int, tmp_path: Path) -> None:
    environ = {services.DATABASE_VAR: f"postgresql://postgres@127.0.0.1:{closed_port}/postgres"}
    assert services.ensure(environ, tmp_path / "env") == 1
    assert not (tmp_path / "env").exists()
