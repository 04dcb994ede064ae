"""A suite stopped by SIGTERM (a CI time limit, a `kill`) tears down as one interrupted at the
keyboard does: its session fixtures stop the private broker, database and service processes they
started, instead of leaving them running after the suite is gone. A second SIGTERM kills at once."""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
