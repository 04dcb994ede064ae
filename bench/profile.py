"""`--profile`: py-spy samples modelruns' processes during a benchmark; the collapsed stacks land
in .bench/profiles/ and a summary of where each process spent its time is printed."""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.stack import WORK, Process

PROFILES = WORK / "profiles"
RATE = 100


def frame_name(frame: str) -> str:
    """`func (path/to/file.py:12)` as `func (file.py)`: one name for all lines of a function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})" if where else name


def summarize(collapsed: str, top: int = 15) -> tuple[int, list[tuple[str, float]]]:
    """py-spy's raw (collapsed) output as (samples, [(function, share of samples that include it)]),
    the modelruns functions and the drivers' first, the most inclusive first."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        for name in {frame_name(f) for f in stack.split(";")}:
            inclusive[name] += n
    if not total:
        return 0, []
    wanted = [(name, n / total) for name, n in inclusive.most_common() if n / total < 0.99]
    return total, wanted[:top]


@contextmanager
def profiling(processes: dict[str, Process], label: str) -> Iterator[None]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    PROFILES.mkdir(parents=True, exist_ok=True)
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for role, process in processes.items():
        out = PROFILES / f"{label}-{role}.txt"
        spies[role] = (
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "-p",
                    str(process.pid),
                    "-r",
                    str(RATE),
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            out,
        )
    try:
        yield
    finally:
        for popen, _ in spies.values():
            popen.send_signal(signal.SIGINT)
        for role, (popen, out) in spies.items():
            popen.wait(timeout=60)
            if out.exists():
                total, top = summarize(out.read_text())
                print(f"profile {label} {role}: {total} samples at {RATE} Hz ({out})")
                for name, share in top:
                    print(f"  {share:6.1%}  {name}")
