"""Reading request bodies exactly: integers beyond 64 bits are refused, never rounded."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import jsonutil


@pytest.mark.parametrize(
    "raw",
    [
        b'{"n": 123456789012345678901234567890}',
        b'{"a": [1, {"b": -9223372036854775809}]}',
        b"[18446744073709551616]",
    ],
)
def test_integers_beyond_64_bits_are_refused(raw: bytes) -> None:
    with pytest.raises(jsonutil.InexactNumber, match="does not fit in 64 bits"):
        jsonutil.loads_exact(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"n": 18446744073709551615}', {"n": 18446744073709551615}),
        (b'{"n": -9223372036854775808}', {"n": -9223372036854775808}),
        # A float literal that large is a float, as written.
        (b'{"x": 1e30, "y": -2.5e300}', {"x": 1e30, "y": -2.5e300}),
        (b'{"z": 123456789012345678901234567890.0}', {"z": 1.2345678901234568e29}),
    ],
)
def test_what_fits_is_read_as_given(raw: bytes, value: object) -> None:
    assert jsonutil.loads_exact(raw) == value


def test_deep_nesting_never_overflows_the_stack() -> None:
    plain = b"[" * 1000 + b"1" + b"]" * 1000
    assert jsonutil.loads_exact(plain) is not None
    with pytest.raises(jsonutil.InexactNumber):
        jsonutil.loads_exact(b"[" * 1000 + b"1e30" + b"]" * 1000)


def test_malformed_json_is_orjsons_error() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        jsonutil.loads_exact(b"{")


@given(
    st.recursive(
        st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_exact_document_round_trips(value: object) -> None:
    assert jsonutil.loads_exact(orjson.dumps(value)) == value
