"""What a step's code is handed: its ids, its inputs, a way to report test results and a way to
learn that it must stop. Passed explicitly; nothing here is global."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from shared.states import TestStatus
from worker.results import ResultBuffer


@dataclass(frozen=True)
class Policy:
    """What this worker lets steps do. The default lets nothing run that is not a built-in."""

    python_allow: tuple[str, ...] = ()
    allow_commands: bool = False

    def allows_callable(self, target: str) -> bool:
        """`target` is "package.module:function". A prefix names a package ("examples" or
        "examples.") and covers its modules, or names one callable exactly ("pkg.mod:fn")."""
        module = target.partition(":")[0]
        for prefix in self.python_allow:
            if ":" in prefix:
                if target == prefix:
                    return True
                continue
            package = prefix.rstrip(".")
            if package and (module == package or module.startswith(package + ".")):
                return True
        return False


class Scratch:
    """A step's private directory (0700, a fresh name under `root`), made when the step first asks
    for it: most steps never do, and they pay no file system work for it."""

    def __init__(self, root: Path, prefix: str) -> None:
        self.root = root
        self.prefix = prefix
        self.path: Path | None = None
        self._making = threading.Lock()

    @classmethod
    def existing(cls, path: Path) -> Scratch:
        """A directory that is there already (a test's, or a caller's own)."""
        scratch = cls(path.parent, path.name)
        scratch.path = path
        return scratch

    def get(self) -> Path:
        with self._making:  # a step's threads may ask at once
            if self.path is None:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.path = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.root))
            return self.path


@dataclass
class StepContext:
    run_id: UUID
    step_id: UUID
    attempt: int
    name: str
    tenant_id: str
    parameters: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    params: Mapping[str, Any]
    scratch: Scratch
    policy: Policy = field(default_factory=Policy)
    results: ResultBuffer = field(default_factory=ResultBuffer)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    _cancelled_flag: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def scratch_dir(self) -> Path:
        """The step's private directory, made on first use and removed after the step."""
        return self.scratch.get()

    def report(
        self,
        name: str,
        status: TestStatus | str,
        duration_ms: float | None = None,
        message: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Record one test result. Never blocks and may be called from any thread; raises
        ValueError for a result that cannot be stored (unknown status, NaN metric...)."""
        self.results.add(name=name, status=status, duration_ms=duration_ms, message=message, metrics=metrics)

    def is_cancelled(self) -> bool:
        """For synchronous code in a thread: poll this and return early when it turns true."""
        return self._cancelled_flag.is_set()

    async def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout` seconds, waking at once on cancellation; True when cancelled."""
        if self.cancelled.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.cancelled.wait(), timeout)
        return self.cancelled.is_set()

    def cancel(self) -> None:
        """Ask the step to stop (called by the worker, on its event loop)."""
        if self.cancelled.is_set():
            return
        self._cancelled_flag.set()
        self.cancelled.set()
