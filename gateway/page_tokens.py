"""Opaque, tamper-evident page tokens for keyset pagination.

A token carries the position of the last row of its page and an HMAC-SHA256 over that position and
the binding it was issued for (tenant, list, filter; run and step for test results). The binding is
not in the token: a token presented with any other binding simply fails the check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from shared.errors import ModelRunsError

VERSION = 1
MAX_TOKEN_LENGTH = 1024
_DOMAIN = b"modelruns/page-token/v1\x00"


class InvalidPageToken(ModelRunsError):
    """Malformed, tampered, or issued for another tenant, list or filter."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidPageToken("not a page token") from None


def _canonical(binding: Mapping[str, str | None]) -> bytes:
    return orjson.dumps(dict(binding), option=orjson.OPT_SORT_KEYS)


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the page-token secret is empty")
        self._secret = secret

    def _mac(self, binding: Mapping[str, str | None], payload: bytes) -> bytes:
        return hmac.new(
            self._secret, _DOMAIN + _canonical(binding) + b"\x00" + payload, hashlib.sha256
        ).digest()

    def issue(self, binding: Mapping[str, str | None], position: list[Any]) -> str:
        payload = orjson.dumps({"v": VERSION, "p": position})
        return _b64(payload) + "." + _b64(self._mac(binding, payload))

    def read(self, token: str, binding: Mapping[str, str | None]) -> list[Any]:
        """The position in `token`, when it was issued here for exactly `binding`."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise InvalidPageToken("not a page token")
        payload_text, dot, mac_text = token.partition(".")
        if not dot or not payload_text or not mac_text:
            raise InvalidPageToken("not a page token")
        payload, mac = _unb64(payload_text), _unb64(mac_text)
        if not hmac.compare_digest(mac, self._mac(binding, payload)):
            raise InvalidPageToken("the page token was not issued for this list")
        try:
            decoded = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidPageToken("not a page token") from None
        if (
            not isinstance(decoded, dict)
            or decoded.get("v") != VERSION
            or not isinstance(decoded.get("p"), list)
        ):
            raise InvalidPageToken("not a page token")
        position: list[Any] = decoded["p"]
        return position

    # The two kinds of position the lists use.

    def issue_run_position(
        self, binding: Mapping[str, str | None], created_at: datetime, run_id: UUID
    ) -> str:
        return self.issue(binding, [created_at.isoformat(), str(run_id)])

    def read_run_position(self, token: str, binding: Mapping[str, str | None]) -> tuple[datetime, UUID]:
        position = self.read(token, binding)
        try:
            created_at, run_id = position
            when = datetime.fromisoformat(created_at)
            if when.tzinfo is None:
                raise ValueError("naive time")
            return when, UUID(run_id)
        except (TypeError, ValueError):
            raise InvalidPageToken("not a page token") from None

    def issue_result_position(self, binding: Mapping[str, str | None], attempt: int, seq: int) -> str:
        return self.issue(binding, [attempt, seq])

    def read_result_position(self, token: str, binding: Mapping[str, str | None]) -> tuple[int, int]:
        position = self.read(token, binding)
        if (
            len(position) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in position)
            or not all(0 <= v < 2**31 for v in position)
        ):
            raise InvalidPageToken("not a page token")
        return position[0], position[1]


def runs_binding(tenant_id: str, status: str | None) -> dict[str, str | None]:
    return {"list": "runs", "tenant": tenant_id, "status": status}


def results_binding(tenant_id: str, run_id: UUID, step_id: UUID, status: str | None) -> dict[str, str | None]:
    return {
        "list": "test_results",
        "tenant": tenant_id,
        "run": str(run_id),
        "step": str(step_id),
        "status": status,
    }
