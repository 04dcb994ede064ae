"""A bounded schemathesis run against a served gateway (the longer one is `python -m bench.fuzz`)."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg

from tests.fuzzing import fuzz
from tests.integration.gateway_helpers import broker_down_settings, running_gateway

# Generous buckets: the fuzzer is one client sending as fast as it can.
UNLIMITED = {
    "rate_limit_per_second": 100_000,
    "rate_limit_burst": 100_000,
    "trigger_rate_limit_per_second": 100_000,
    "trigger_rate_limit_burst": 100_000,
}


async def test_fuzzing_finds_no_server_error_and_no_schema_break(db_url: str, pool: asyncpg.Pool) -> None:
    async with running_gateway(broker_down_settings(db_url, **UNLIMITED), pool) as gw:
        base_url = str(gw.client.make_url("")).rstrip("/")
        report = await asyncio.to_thread(fuzz, base_url, gw.key, examples=40, stateful_examples=40)
    assert report.failures == [], "\n".join(report.failures[:20])
    assert report.server_errors == 0
    # The stateful phase followed the links from a trigger into the run-scoped operations. How
    # deep a sequence goes is the fuzzer's draw: the chain from a new run is required to answer
    # 2xx, the test-results list (one link further) to be reached.
    for operation in ("triggerModelRun", "getModelRun", "listModelRunSteps", "cancelModelRun"):
        seen = report.stateful.get(operation, Counter())
        assert any(200 <= status < 300 for status in seen), (operation, report.stateful)
    assert report.stateful.get("listModelTestResults"), report.stateful
    print(report.summary())
