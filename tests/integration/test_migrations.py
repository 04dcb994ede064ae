"""`db upgrade` against a real Postgres: the migrations arrive at exactly schema.sql, once, safely."""

from __future__ import annotations

import asyncio
import difflib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.db import migrate
from shared.db.queries import Queries, parse
from shared.errors import MigrationError
from shared.states import RunStatus, StepStatus, TestStatus
from tests.conftest import ADMIN_URL

pytestmark = pytest.mark.services

CATALOG = Queries(parse(Path(__file__).with_name("catalog.sql").read_text(encoding="utf-8")))
CATALOG_PARTS = (
    "tables",
    "columns",
    "indexes",
    "constraints",
    "enums",
    "types",
    "sequences",
    "sequence_owners",
    "functions",
    "triggers",
    "views",
    "extensions",
)


def _with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(await conn.fetchval(CATALOG.drop_database_statement, name))
    finally:
        await conn.close()


async def _exists(name: str) -> bool:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        return bool(await conn.fetchval(migrate.Q.database_exists, name))
    finally:
        await conn.close()


@pytest.fixture
async def new_database() -> AsyncIterator[Callable[[], str]]:
    """URLs of databases that do not exist yet; whatever a test created under them is dropped."""
    names: list[str] = []

    def make() -> str:
        names.append(f"modelruns_mig_{uuid.uuid4().hex[:12]}")
        return _with_db(ADMIN_URL, names[-1])

    yield make
    for name in names:
        await _drop(name)


async def catalog(url: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            part: [tuple(row) for row in await conn.fetch(getattr(CATALOG, part))] for part in CATALOG_PARTS
        }
    finally:
        await conn.close()


async def ledger(url: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(CATALOG.ledger)]
    finally:
        await conn.close()


async def from_schema_sql(url: str) -> None:
    await migrate.create_database_if_missing(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(migrate.schema_sql())
    finally:
        await conn.close()


def describe_difference(
    migrated: dict[str, list[tuple[Any, ...]]], built: dict[str, list[tuple[Any, ...]]]
) -> str:
    out = []
    for part in CATALOG_PARTS:
        if migrated[part] != built[part]:
            out.append(f"--- {part}: migrations (-) vs schema.sql (+)")
            out.extend(
                difflib.unified_diff(
                    [repr(r) for r in migrated[part]], [repr(r) for r in built[part]], lineterm="", n=0
                )
            )
    return "\n".join(out)


async def test_migrations_arrive_at_schema_sql(new_database: Callable[[], str]) -> None:
    migrated_url, built_url = new_database(), new_database()
    await migrate.upgrade(migrated_url)
    await from_schema_sql(built_url)
    migrated, built = await catalog(migrated_url), await catalog(built_url)
    assert migrated == built, "the migrations and schema.sql disagree:\n" + describe_difference(
        migrated, built
    )
    # The comparison saw the schema, not two empty catalogs.
    assert {"runs", "steps", "test_results", "run_events", "outbox"} <= {name for name, _ in built["tables"]}
    assert built["columns"] and built["indexes"] and built["constraints"] and built["enums"]


async def test_enums_mirror_the_python_statuses(new_database: Callable[[], str]) -> None:
    url = new_database()
    await migrate.upgrade(url)
    enums = {name: list(labels) for name, labels in (await catalog(url))["enums"]}
    assert enums == {
        "run_status": [s.value for s in RunStatus],
        "step_status": [s.value for s in StepStatus],
        "test_status": [s.value for s in TestStatus],
    }


async def test_upgrade_creates_a_missing_database(new_database: Callable[[], str]) -> None:
    url = new_database()
    name = urlsplit(url).path.lstrip("/")
    assert not await _exists(name)
    applied = await migrate.upgrade(url)
    assert await _exists(name)
    assert [m.version for m in applied] == [m.version for m in migrate.shipped()]
    assert [(v, n, c) for v, n, c, _ in await ledger(url)] == [
        (m.version, m.name, m.checksum) for m in migrate.shipped()
    ]


async def test_upgrade_twice_is_a_noop(new_database: Callable[[], str]) -> None:
    url = new_database()
    assert await migrate.upgrade(url)
    before_catalog, before_ledger = await catalog(url), await ledger(url)
    assert await migrate.upgrade(url) == []
    assert await catalog(url) == before_catalog
    assert await ledger(url) == before_ledger


async def test_a_changed_applied_migration_is_refused(new_database: Callable[[], str]) -> None:
    url = new_database()
    await migrate.upgrade(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(CATALOG.tamper_checksum, 1, "0" * 64)
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate.upgrade(url)
    # The refusal released the advisory lock: a later upgrade is refused again, not blocked.
    with pytest.raises(MigrationError):
        await asyncio.wait_for(migrate.upgrade(url), timeout=10)


async def test_an_unknown_applied_migration_is_refused(new_database: Callable[[], str]) -> None:
    url = new_database()
    await migrate.upgrade(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(CATALOG.record_unknown_migration, 9999, "from_the_future", "f" * 64)
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="9999"):
        await migrate.upgrade(url)


@pytest.mark.parametrize("round_", range(3))
async def test_concurrent_upgrades_are_safe(new_database: Callable[[], str], round_: int) -> None:
    url = new_database()
    results = await asyncio.gather(*(migrate.upgrade(url) for _ in range(3)))
    applied = sorted(m.version for result in results for m in result)
    # Each migration ran exactly once, by whichever upgrade took the lock first.
    assert applied == [m.version for m in migrate.shipped()]
    assert [v for v, *_ in await ledger(url)] == applied
    assert await migrate.upgrade(url) == []


async def test_concurrent_upgrades_of_an_existing_database(new_database: Callable[[], str]) -> None:
    url = new_database()
    await migrate.create_database_if_missing(url)
    results = await asyncio.gather(migrate.upgrade(url), migrate.upgrade(url))
    assert sorted(len(r) for r in results) == [0, len(migrate.shipped())]
