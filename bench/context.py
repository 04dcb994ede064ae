"""What a figure was measured on: versions, commit, and how loaded the machine was."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.stack import ROOT

console = Console(stderr=True)


def _out(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout.strip()
    except OSError:
        return "?"


@functools.cache
def versions() -> str:
    commit = _out("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = "+" if _out("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no") else ""
    pg = _out("psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version").split(" ")[0]
    rabbit = _out("rabbitmqctl", "-q", "version")
    return f"modelruns {commit}{dirty}, Python {platform.python_version()}, PG {pg}, RabbitMQ {rabbit}"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f} on {os.cpu_count()} cores"


@contextmanager
def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields a function taking how many are done."""
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def say(text: str) -> None:
    console.print(text)
