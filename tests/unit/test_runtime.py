"""The collector settings a service starts with: what is loaded is frozen, the rest collected less
often, and cyclic garbage is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from shared import runtime


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_what_is_loaded_is_frozen_and_thresholds_raised(collector: None) -> None:
    runtime.settle_collector()
    assert gc.get_threshold() == runtime.THRESHOLDS
    assert gc.get_freeze_count() > 1000  # at least this test run's modules and classes


def test_cyclic_garbage_made_afterwards_is_still_collected(collector: None) -> None:
    runtime.settle_collector()
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None  # a cycle: reference counting alone cannot free it
    gc.collect()
    assert gone() is None
