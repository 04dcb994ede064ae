"""`modelruns db upgrade`: apply the numbered migrations once each, in order, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from shared.db import queries
from shared.db.pool import CONNECTION_ERRORS
from shared.errors import DatabaseUnavailable, MigrationError

log = logging.getLogger(__name__)
Q = queries.load("shared.db", "migrate.sql")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def shipped() -> list[Migration]:
    found = []
    for entry in resources.files("shared.db").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def schema_sql() -> str:
    return resources.files("shared.db").joinpath("schema.sql").read_text(encoding="utf-8")


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def create_database_if_missing(url: str) -> bool:
    name = _database_name(url)
    try:
        conn = await asyncpg.connect(_with_database(url, "postgres"))
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
    try:
        if await conn.fetchval(Q.database_exists, name):
            return False
        # CREATE DATABASE takes no parameters; the name is quoted as an identifier.
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.exceptions.DuplicateDatabaseError, asyncpg.exceptions.UniqueViolationError):
            # Another upgrade created it meanwhile; two racing CREATEs can also meet in pg_database's
            # unique index, which reports a unique violation instead.
            return False
        log.info("created database", extra={"action": "db.create", "database": name})
        return True
    finally:
        await conn.close()


def _user(url: str) -> str | None:
    return unquote(urlsplit(url).username or "") or None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# What the services do: read and write rows, nothing else. They own nothing, so they can neither
# change the schema nor drop a table, whatever a bug or an injected statement tries.
SERVICE_GRANTS = (
    "GRANT CONNECT ON DATABASE {database} TO {role}",
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    "REVOKE CREATE ON SCHEMA public FROM {role}",
)


async def grant_service_role(conn: asyncpg.Connection, url: str, service_url: str) -> str | None:
    """Grant the services' role (the user of `service_url`) what the services need, when it is
    not the owner running the migrations; returns the role granted to, or None."""
    role, owner = _user(service_url), _user(url)
    if role is None or role == owner or await conn.fetchval(Q.is_superuser, role):
        return None
    for statement in SERVICE_GRANTS:
        await conn.execute(statement.format(database=_ident(_database_name(url)), role=_ident(role)))
    log.info("granted the service role", extra={"action": "db.grant", "role": role})
    return role


async def upgrade(url: str, service_url: str | None = None) -> list[Migration]:
    """Bring the database at `url` to the newest schema; returns the migrations applied now.
    `url` is the owner's; `service_url`, the services' own, gets its role granted row access."""
    await create_database_if_missing(url)
    try:
        conn = await asyncpg.connect(url)
    except CONNECTION_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to Postgres: {exc}") from exc
    applied_now: list[Migration] = []
    try:
        await conn.execute(Q.lock)
        try:
            await conn.execute(Q.create_ledger)
            done = {r["version"]: r for r in await conn.fetch(Q.applied)}
            migrations = shipped()
            for migration in migrations:
                record = done.get(migration.version)
                if record is not None:
                    if record["checksum"] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was "
                            "applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(Q.record, migration.version, migration.name, migration.checksum)
                applied_now.append(migration)
                log.info(
                    "applied migration",
                    extra={"action": "db.migrate", "version": migration.version, "migration": migration.name},
                )
            unknown = sorted(set(done) - {m.version for m in migrations})
            if unknown:
                raise MigrationError(f"database has migrations this version does not know: {unknown}")
            if service_url is not None:
                await grant_service_role(conn, url, service_url)
        finally:
            await conn.execute(Q.unlock)
    finally:
        await conn.close()
    return applied_now
