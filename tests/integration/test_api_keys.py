"""Keys as an operator handles them: `modelruns api-keys list` and `revoke` (by prefix or whole key)
through the real CLI, a revoke reaching two gateways within 2 s, and a key never showing up in the
logs, the answers or the metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application

from gateway.app import create_app
from shared import apikeys
from shared.settings import Settings
from tests.integration.gateway_helpers import bearer, broker_down_settings, running_gateway
from tests.waiting import eventually

MODELRUNS = str(Path(sys.executable).parent / "modelruns")


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELRUNS_")}
    env["MODELRUNS_DATABASE_URL"] = db_url
    return subprocess.run(
        [MODELRUNS, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@asynccontextmanager
async def client_of(settings: Settings) -> AsyncIterator[TestClient[Any, Application]]:
    client: TestClient[Any, Application] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize("by", ["prefix", "key"])
async def test_a_revoke_from_the_cli_reaches_every_gateway_within_two_seconds(
    db_url: str, pool: asyncpg.Pool, by: str
) -> None:
    key = await apikeys.create_key(pool, "acme", ["runs:read"])
    prefix = apikeys.parse_key(key)
    assert prefix is not None
    settings = broker_down_settings(db_url)
    async with client_of(settings) as one, client_of(settings) as two:
        for gateway in (one, two):
            assert (await gateway.get("/model-runs", headers=bearer(key))).status == 200
        done = await asyncio.to_thread(cli, db_url, "api-keys", "revoke", prefix if by == "prefix" else key)
        revoked_at = time.monotonic()
        assert done.returncode == 0, done.stderr
        assert prefix in done.stdout and key not in done.stdout + done.stderr

        async def refused_everywhere() -> bool:
            statuses = [(await g.get("/model-runs", headers=bearer(key))).status for g in (one, two)]
            return statuses == [401, 401]

        await eventually(refused_everywhere, timeout=2.0, what="both gateways to refuse the revoked key")
        assert time.monotonic() - revoked_at < 2.0


async def test_list_shows_prefixes_scopes_created_and_last_used(db_url: str, pool: asyncpg.Pool) -> None:
    used = await apikeys.create_key(pool, "acme", ["runs:read", "runs:write"])
    unused = await apikeys.create_key(pool, "acme", ["runs:read"])
    await apikeys.touch_keys(pool, {apikeys.parse_key(used) or "": datetime.now(UTC)})
    done = await asyncio.to_thread(cli, db_url, "api-keys", "list", "--output", "json")
    assert done.returncode == 0, done.stderr
    assert used not in done.stdout and unused not in done.stdout
    rows = {row["prefix"]: row for row in json.loads(done.stdout)}
    first, second = rows[apikeys.parse_key(used) or ""], rows[apikeys.parse_key(unused) or ""]
    assert first["scopes"] == ["runs:read", "runs:write"] and second["scopes"] == ["runs:read"]
    assert first["created_at"] and first["last_used_at"] and second["last_used_at"] is None
    table = await asyncio.to_thread(cli, db_url, "api-keys", "list")
    assert table.returncode == 0, table.stderr
    for column in ("PREFIX", "SCOPES", "CREATED", "LAST USED"):
        assert column in table.stdout
    assert str(apikeys.parse_key(used)) in table.stdout and used not in table.stdout


async def test_keys_never_reach_logs_answers_or_metrics(
    db_url: str, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_gateway(broker_down_settings(db_url), pool) as gw:
        prefix = apikeys.parse_key(gw.key)
        assert prefix is not None
        wrong_secret = f"mr_{prefix}_{'x' * apikeys.SECRET_LENGTH}"
        revoked = await apikeys.create_key(pool, "acme", ["runs:read"])
        await apikeys.revoke_key(pool, revoked)
        presented = [gw.key, wrong_secret, revoked, "mr_short_secret", "not-a-key-at-all-" + "s" * 40]
        answers = []
        for key in presented:
            for path in ("/model-runs", "/model-runs/nope", "/model-runs/nope/cancel"):
                method = gw.client.post if path.endswith("cancel") else gw.client.get
                resp = await method(path, headers=bearer(key))
                answers.append(await resp.text() + str(dict(resp.headers)))
        metrics = await (await gw.client.get("/metrics")).text()
    secrets = [*presented, gw.key.rsplit("_", 1)[1]]
    logged = "\n".join(str(record.__dict__) for record in caplog.records)
    for secret in secrets:
        assert secret not in logged
        assert secret not in metrics
        assert not any(secret in answer for answer in answers)
