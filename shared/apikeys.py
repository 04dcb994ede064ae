"""API keys: `mr_<public prefix>_<secret>`. The prefix finds the row; only a sha256 of the whole key
is stored, and a presented key is checked against it in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.db import queries
from shared.db.pool import Conn
from shared.errors import ModelRunsError
from shared.models.api import TENANT_PATTERN

Q = queries.load("shared", "apikeys.sql")

SCOPES: tuple[str, ...] = ("runs:read", "runs:write")
PREFIX_LENGTH = 12
SECRET_LENGTH = 32
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
KEY_PATTERN = re.compile(rf"^mr_([a-z0-9]{{{PREFIX_LENGTH}}})_([A-Za-z0-9]{{{SECRET_LENGTH}}})$")
# What `revoke` accepts besides a whole key: the prefix alone or with its `mr_`.
_PREFIX_PATTERN = re.compile(rf"^(?:mr_)?([a-z0-9]{{{PREFIX_LENGTH}}})_?$")


class InvalidKeyRequest(ModelRunsError, ValueError):
    """A tenant id, scope or key reference that cannot name a key."""


@dataclass(frozen=True)
class KeyInfo:
    prefix: str
    tenant_id: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class StoredKey:
    """What the gateway needs to decide on a presented key."""

    prefix: str
    tenant_id: str
    key_hash: bytes
    scopes: frozenset[str]
    revoked: bool


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_key(key: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    match = KEY_PATTERN.fullmatch(key)
    return match[1] if match else None


def matches(stored: StoredKey, key: str) -> bool:
    return hmac.compare_digest(stored.key_hash, key_hash(key))


def new_key() -> tuple[str, str]:
    """A fresh (prefix, key)."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    return prefix, f"mr_{prefix}_{secret}"


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    chosen = sorted(set(scopes))
    if not chosen:
        raise InvalidKeyRequest(f"a key needs at least one scope ({', '.join(SCOPES)})")
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise InvalidKeyRequest(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return chosen


def _info(row: asyncpg.Record) -> KeyInfo:
    return KeyInfo(
        prefix=row["prefix"],
        tenant_id=row["tenant_id"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


async def create_key(pool: asyncpg.Pool, tenant: str, scopes: Iterable[str]) -> str:
    """Create a key for `tenant` (creating the tenant when it is new) and return it: the only time
    the whole key exists anywhere but with its holder."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise InvalidKeyRequest(f"invalid tenant id {tenant!r}: must match {TENANT_PATTERN.pattern}")
    chosen = _check_scopes(scopes)
    while True:
        prefix, key = new_key()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(Q.ensure_tenant, tenant)
                await conn.execute(Q.insert_key, prefix, tenant, key_hash(key), chosen)
            return key
        except asyncpg.UniqueViolationError:
            # 36^12 prefixes make this all but impossible; a clash just draws again.
            continue


async def list_keys(pool: asyncpg.Pool, tenant: str | None = None) -> list[KeyInfo]:
    return [_info(row) for row in await pool.fetch(Q.list_keys, tenant)]


def prefix_of(prefix_or_key: str) -> str:
    ref = prefix_or_key.strip()
    found = parse_key(ref)
    if found is not None:
        return found
    match = _PREFIX_PATTERN.fullmatch(ref)
    if match is None:
        raise InvalidKeyRequest(f"{prefix_or_key!r} is neither a key nor a key prefix")
    return match[1]


async def revoke_key(pool: asyncpg.Pool, prefix_or_key: str) -> KeyInfo | None:
    """Revoke a key named by its prefix or by the key itself; None when there is no such key.
    Gateways stop accepting it within 2 s (their cache lives at most 1 s)."""
    row = await pool.fetchrow(Q.revoke_key, prefix_of(prefix_or_key))
    return None if row is None else _info(row)


async def find_key(conn: asyncpg.Pool | Conn, prefix: str) -> StoredKey | None:
    row = await conn.fetchrow(Q.find_key, prefix)
    if row is None:
        return None
    return StoredKey(
        prefix=row["prefix"],
        tenant_id=row["tenant_id"],
        key_hash=bytes(row["key_hash"]),
        scopes=frozenset(row["scopes"]),
        revoked=row["revoked_at"] is not None,
    )


async def touch_keys(conn: asyncpg.Pool | Conn, used: Mapping[str, datetime]) -> None:
    if not used:
        return
    prefixes = list(used)
    await conn.execute(Q.touch_keys, prefixes, [used[p] for p in prefixes])
