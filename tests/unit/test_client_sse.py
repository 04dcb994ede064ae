"""The event-stream parser, as the WHATWG standard reads text/event-stream."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from modelruns_client.sse import SseMessage, SseParser


def parse(*chunks: bytes) -> tuple[list[SseMessage], SseParser]:
    parser = SseParser()
    messages = [m for chunk in chunks for m in parser.feed(chunk)]
    return messages, parser


def test_the_gateways_frames() -> None:
    messages, parser = parse(b'id: 1\ndata: {"a": 1}\n\n: keep-alive\n\nid: 2\ndata: {"b": 2}\n\n')
    assert messages == [SseMessage('{"a": 1}', "1"), SseMessage('{"b": 2}', "2")]
    assert parser.comments == 1 and parser.last_id == "2"


def test_fields_as_the_standard_reads_them() -> None:
    messages, parser = parse(
        b"\xef\xbb\xbfdata: first\ndata:second\ndata\n\n"  # BOM, no space, no colon
        b"event: custom\ndata: x\n\n"
        b"id: 7\n\n"  # an id alone dispatches nothing but carries over
        b"data: y\n\n"
        b"id: a\x00b\ndata: z\n\n"  # an id with NUL is ignored
        b"retry: 2500\nretry: soon\nunknown: field\ndata: w\n\n"
        b"data: never dispatched"
    )
    assert messages == [
        SseMessage("first\nsecond\n", None),
        SseMessage("x", None, "custom"),
        SseMessage("y", "7"),
        SseMessage("z", "7"),
        SseMessage("w", "7"),
    ]
    assert parser.retry_ms == 2500


def test_every_line_ending() -> None:
    assert parse(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n")[0] == [
        SseMessage("a"),
        SseMessage("b"),
        SseMessage("c"),
    ]


STREAM = (
    b'id: 1\r\ndata: {"x": "\xc3\xa9"}\r\n\r\n: keep-alive\r\rid: 2\rdata: two\r\r'
    b"id: 3\ndata: three\ndata: lines\n\n"
)


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_chunks_cut_anywhere_give_the_same_messages(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    messages, parser = parse(*chunks)
    assert messages == [
        SseMessage('{"x": "é"}', "1"),
        SseMessage("two", "2"),
        SseMessage("three\nlines", "3"),
    ]
    assert parser.comments == 1
