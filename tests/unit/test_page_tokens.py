"""Page tokens: opaque, tamper-evident, bound to what they were issued for."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from gateway.page_tokens import InvalidPageToken, PageTokens, results_binding, runs_binding

TOKENS = PageTokens(b"unit-test-secret")
WHEN = datetime(2026, 12, 2, 5, 22, 51, 123456, tzinfo=UTC)


def test_run_position_round_trips() -> None:
    run_id = uuid4()
    binding = runs_binding("acme", None)
    token = TOKENS.issue_run_position(binding, WHEN, run_id)
    assert TOKENS.read_run_position(token, binding) == (WHEN, run_id)


def test_result_position_round_trips() -> None:
    binding = results_binding("acme", uuid4(), uuid4(), "failed")
    token = TOKENS.issue_result_position(binding, 2, 17)
    assert TOKENS.read_result_position(token, binding) == (2, 17)


def test_token_is_opaque_url_safe_text() -> None:
    token = TOKENS.issue_run_position(runs_binding("acme", None), WHEN, uuid4())
    assert token.isascii()
    assert all(c.isalnum() or c in "-_." for c in token)
    assert "acme" not in token


@pytest.mark.parametrize(
    "other",
    [
        runs_binding("globex", None),  # another tenant
        runs_binding("acme", "queued"),  # another filter
        {"list": "test_results", "tenant": "acme", "status": None},  # another list
    ],
)
def test_token_for_another_binding_is_refused(other: dict[str, str | None]) -> None:
    token = TOKENS.issue_run_position(runs_binding("acme", None), WHEN, uuid4())
    with pytest.raises(InvalidPageToken):
        TOKENS.read_run_position(token, other)


def test_results_token_is_bound_to_run_and_step() -> None:
    run_id, step_id = uuid4(), uuid4()
    token = TOKENS.issue_result_position(results_binding("acme", run_id, step_id, None), 1, 0)
    for binding in (
        results_binding("acme", run_id, uuid4(), None),
        results_binding("acme", uuid4(), step_id, None),
        results_binding("globex", run_id, step_id, None),
        results_binding("acme", run_id, step_id, "passed"),
    ):
        with pytest.raises(InvalidPageToken):
            TOKENS.read_result_position(token, binding)


def test_token_from_another_secret_is_refused() -> None:
    binding = runs_binding("acme", None)
    token = PageTokens(b"another-secret").issue_run_position(binding, WHEN, uuid4())
    with pytest.raises(InvalidPageToken):
        TOKENS.read_run_position(token, binding)


def test_tampered_payload_is_refused() -> None:
    binding = runs_binding("acme", None)
    token = TOKENS.issue_run_position(binding, WHEN, uuid4())
    payload, mac = token.split(".")
    forged = base64.urlsafe_b64encode(
        b'{"v":1,"p":["2099-01-01T00:00:00+00:00","' + str(uuid4()).encode() + b'"]}'
    )
    with pytest.raises(InvalidPageToken):
        TOKENS.read_run_position(forged.decode().rstrip("=") + "." + mac, binding)
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    with pytest.raises(InvalidPageToken):
        TOKENS.read_run_position(flipped + "." + mac, binding)


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "abc", "abc.", ".abc", "a.b.c", "!!!.???", "é.é", "x" * 5000, "a\x00b.c", "eyJ2IjoxfQ.AAAA"],
)
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(InvalidPageToken):
        TOKENS.read(garbage, runs_binding("acme", None))


def test_signed_but_wrong_shaped_positions_are_refused() -> None:
    binding = runs_binding("acme", None)
    run_positions: list[list[Any]] = [
        [],
        ["not a time", str(uuid4())],
        [WHEN.isoformat(), "not a uuid"],
        [1, 2],
    ]
    for position in run_positions:
        with pytest.raises(InvalidPageToken):
            TOKENS.read_run_position(TOKENS.issue(binding, position), binding)
    naive = datetime(2026, 1, 1).isoformat()
    with pytest.raises(InvalidPageToken):
        TOKENS.read_run_position(TOKENS.issue(binding, [naive, str(uuid4())]), binding)
    result_positions: list[list[Any]] = [[1], [1, "2"], [True, 1], [-1, 0], [1, 2**40]]
    for position in result_positions:
        with pytest.raises(InvalidPageToken):
            TOKENS.read_result_position(TOKENS.issue(binding, position), binding)


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        PageTokens(b"")
