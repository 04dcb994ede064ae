"""A suite stopped by SIGTERM still tears its session fixtures down (tests/sigterm.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
HELD = """
import pathlib
import time

import pytest

MARKS = pathlib.Path({marks!r})


@pytest.fixture(scope="session")
def resource():
    (MARKS / "up").touch()
    try:
        yield
    finally:
        (MARKS / "down").touch()


def test_held(resource):
    time.sleep(60)
"""


async def test_a_sigterm_tears_the_session_down(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    test = tmp_path / "test_held.py"
    test.write_text(HELD.format(marks=str(tmp_path)))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "tests.sigterm",
        "-c",
        str(tmp_path / "pytest.ini"),
        "--rootdir",
        str(tmp_path),
        str(test),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:

        async def up() -> bool:
            return (tmp_path / "up").exists()

        await eventually(up, timeout=30, what="the session fixture set up")
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert (tmp_path / "down").exists(), out.decode()
    assert process.returncode == 2, out.decode()  # pytest's "interrupted"
