"""Page tokens under hypothesis: any token read back under its own binding gives its position;
any other binding, any change to the text and any garbage is InvalidPageToken, never another error."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.page_tokens import InvalidPageToken, PageTokens, results_binding, runs_binding

TOKENS = PageTokens(b"property-secret")
tenants = st.from_regex(r"^[a-z0-9][a-z0-9-]{0,62}$", fullmatch=True)
statuses = st.none() | st.sampled_from(["queued", "running", "succeeded", "failed", "cancelled"])
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
uuids = st.uuids()


@given(tenants, statuses, times, uuids)
def test_a_run_position_round_trips(tenant: str, status: str | None, when: datetime, run_id: UUID) -> None:
    binding = runs_binding(tenant, status)
    token = TOKENS.issue_run_position(binding, when, run_id)
    assert token.isascii() and len(token) < 1024
    assert TOKENS.read_run_position(token, binding) == (when, run_id)


@given(tenants, tenants, statuses, statuses, times, uuids)
def test_another_binding_is_refused(
    tenant: str, other: str, status: str | None, other_status: str | None, when: datetime, run_id: UUID
) -> None:
    token = TOKENS.issue_run_position(runs_binding(tenant, status), when, run_id)
    if (tenant, status) == (other, other_status):
        return
    try:
        TOKENS.read_run_position(token, runs_binding(other, other_status))
    except InvalidPageToken:
        return
    raise AssertionError("a token was accepted under another binding")


@settings(max_examples=300)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.data())
def test_any_change_to_the_text_is_refused_or_harmless(attempt: int, seq: int, data: st.DataObject) -> None:
    binding = results_binding("acme", UUID(int=1), UUID(int=2), None)
    token = TOKENS.issue_result_position(binding, attempt, seq)
    at = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters(codec="ascii"))
    changed = token[:at] + replacement + token[at + 1 :]
    try:
        position = TOKENS.read_result_position(changed, binding)
    except InvalidPageToken:
        return
    # Only a change the base64 decoding ignores (padding bits) can pass, and it changes nothing.
    assert position == (attempt, seq)


@given(st.text(max_size=2000))
def test_garbage_is_only_ever_invalid(garbage: str) -> None:
    binding = runs_binding("acme", None)
    for read in (TOKENS.read_run_position, TOKENS.read_result_position):
        try:
            read(garbage, binding)
        except InvalidPageToken:
            continue
        raise AssertionError(f"garbage accepted: {garbage!r}")
