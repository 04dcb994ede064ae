"""`--profile`: py-spy samples modelruns' processes during a benchmark; the collapsed stacks land
in .bench/profiles/ and a summary of where each process spent its time is printed."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
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


# -- where the cores went -------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")
SERVICES = {"postgres": "postgres", "beam.smp": "rabbitmq"}


def _cpu_of(pid: int) -> float:
    """User + system seconds of one process (all its threads); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _service_pids() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {name: [] for name in SERVICES.values()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm in SERVICES:
            found[SERVICES[comm]].append(int(entry.name))
    return found


class CpuSplit:
    """CPU seconds each of modelruns' processes and each service spent between `start` and
    `stop`: what a benchmark's work cost each of them, on a machine they all share."""

    def __init__(self, processes: dict[str, Process]) -> None:
        self.pids = {role: [p.pid] for role, p in processes.items()}
        self.before: dict[str, float] = {}
        self.wall = 0.0

    def _read(self) -> dict[str, float]:
        groups = {**self.pids, **_service_pids()}
        return {role: sum(_cpu_of(pid) for pid in pids) for role, pids in groups.items()}

    def start(self) -> None:
        self.before = self._read()
        self.wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self._read()
        self.wall = time.monotonic() - self.wall
        return {role: max(0.0, after[role] - self.before.get(role, 0.0)) for role in after}
