"""The client runs with aiohttp and pydantic alone: none of the services' dependencies is imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVER_ONLY = (
    "asyncpg", "aio_pika", "aiormq", "orjson", "uvloop", "typer", "rich", "pydantic_settings",
    "prometheus_client", "gateway", "orchestrator", "worker", "shared.db", "shared.amqp", "shared.settings",
)  # fmt: skip

PROBE = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {blocked!r}

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"{{name}} is not installed")
            return None

    sys.meta_path.insert(0, Refuse())
    import modelruns_client
    from modelruns_client import Client, SyncClient

    Client("http://127.0.0.1:1", "key")
    SyncClient("http://127.0.0.1:1", "key").close()
    print("ok")
    """
)


def test_the_client_imports_without_the_server_dependencies() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(blocked=SERVER_ONLY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
