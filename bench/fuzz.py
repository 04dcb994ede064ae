"""The long fuzzing run: schemathesis against a gateway on a scratch database, then a dated row
in bench/RESULTS.md. `python -m bench.fuzz [--examples N] [--stateful N] [--seed N]`.

The suite runs the same driver (tests/fuzzing.py) with small counts on every `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from bench.stack import services
from gateway.app import create_app
from shared import apikeys
from shared.db import migrate
from shared.db.pool import create_pool
from shared.settings import Settings
from tests.fuzzing import FuzzReport, fuzz

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Fuzzing"


async def _serve_and_fuzz(examples: int, stateful: int, seed: int) -> FuzzReport:
    # A scratch database of the bench's own; the broker is never used (triggers wait in the outbox).
    async with services("fuzz") as scratch:
        url = scratch.db_url
        await migrate.upgrade(url)
        pool = await create_pool(url, max_size=2)
        try:
            key = await apikeys.create_key(pool, "fuzz", apikeys.SCOPES)
        finally:
            await pool.close()
        settings = Settings(
            database_url=url,
            amqp_url="amqp://guest:guest@127.0.0.1:1/",  # no broker: triggers wait in the outbox
            page_token_secret="fuzz",
            rate_limit_per_second=1e6,
            rate_limit_burst=1_000_000,
            trigger_rate_limit_per_second=1e6,
            trigger_rate_limit_burst=1_000_000,
        )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            return await asyncio.to_thread(
                fuzz,
                f"http://127.0.0.1:{port}",
                key,
                examples=examples,
                stateful_examples=stateful,
                seed=seed,
            )
        finally:
            await runner.cleanup()


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def row(report: FuzzReport, examples: int, stateful: int, seed: int) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(report.statuses.items()))
    reached = ", ".join(
        sorted(op for op, seen in report.stateful.items() if any(200 <= s < 300 for s in seen))
    )
    seconds = sum(report.seconds.values())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    return (
        f"| {when} | {examples} per operation and mode, {stateful} sequences, seed {seed} | {report.requests} "
        f"| {statuses} | {report.server_errors} | {len(report.failures)} | {reached} | {seconds:.0f} s "
        f"| modelruns {_commit()}, Python {platform.python_version()} |"
    )


def append_row(line: str) -> None:
    if not RESULTS.exists():
        return
    lines = RESULTS.read_text().splitlines()
    if SECTION not in lines:
        return
    at = lines.index(SECTION) + 1
    while at < len(lines) and not lines[at].startswith("|"):
        at += 1
    while at < len(lines) and lines[at].startswith("|"):
        at += 1
    lines.insert(at, line)
    RESULTS.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--examples", type=int, default=300, help="cases per operation and mode")
    parser.add_argument("--stateful", type=int, default=200, help="stateful sequences")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = asyncio.run(_serve_and_fuzz(args.examples, args.stateful, args.seed))
    print(report.summary())
    for failure in report.failures[:50]:
        print(failure)
    line = row(report, args.examples, args.stateful, args.seed)
    print(line)
    append_row(line)
    raise SystemExit(1 if report.failures or report.server_errors else 0)


if __name__ == "__main__":
    main()
