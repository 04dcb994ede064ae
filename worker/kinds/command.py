"""`command`: run an argv in a process group of its own, in the step's private scratch directory.

Off unless the worker allows it (MODELRUNS_WORKER_ALLOW_COMMANDS). The child gets a minimal
environment, never the worker's own (which may hold credentials). Cancel and timeout reach the
whole tree: SIGTERM to the group, SIGKILL after KILL_AFTER seconds; whatever is left of the group
when the command ends is killed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from shared.errors import StepFailed
from shared.kinds import CommandParams
from worker import junit
from worker.context import StepContext

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_AFTER = 10.0
TAIL_BYTES = 4096
MAX_JUNIT_BYTES = 64 * 1024 * 1024
# Output pipes stay open while an escaped grandchild holds them; past this they are given up.
READER_GRACE = 1.0


def environment(ctx: StepContext, params: CommandParams) -> dict[str, str]:
    env = {"PATH": SAFE_PATH, "HOME": str(ctx.scratch_dir), "LANG": "C.UTF-8", "TMPDIR": str(ctx.scratch_dir)}
    env.update(params.env)
    # Last, so that params.env cannot pass the step off as another.
    env.update(
        MODELRUNS_RUN_ID=str(ctx.run_id),
        MODELRUNS_STEP_ID=str(ctx.step_id),
        MODELRUNS_ATTEMPT=str(ctx.attempt),
        MODELRUNS_SCRATCH_DIR=str(ctx.scratch_dir),
    )
    return env


class Tail:
    """The last `limit` bytes written to a stream."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self.limit = limit
        self.data = b""

    def feed(self, chunk: bytes) -> None:
        self.data = (self.data + chunk)[-self.limit :]

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace").strip()


async def _drain(stream: asyncio.StreamReader | None, tail: Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        tail.feed(chunk)


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    # The child leads its own session, so its pid is the group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def terminate(proc: asyncio.subprocess.Process, kill_after: float) -> None:
    """SIGTERM the group, SIGKILL it `kill_after` seconds later. A cancellation meanwhile does not
    cut the grace short (the child deserves its chance to clean up); it is re-raised at the end."""
    loop = asyncio.get_running_loop()
    exited = asyncio.ensure_future(proc.wait())
    interrupted = False
    _signal_group(proc, signal.SIGTERM)
    deadline = loop.time() + kill_after
    while not exited.done() and loop.time() < deadline:
        try:
            await asyncio.wait([exited], timeout=deadline - loop.time())
        except asyncio.CancelledError:
            interrupted = True
    _signal_group(proc, signal.SIGKILL)
    while not exited.done():
        try:
            await asyncio.wait([exited])
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


def exit_message(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    return f"command {how}: {stderr}" if stderr else f"command {how}"


def _read_junit(scratch: Path, relative: str) -> list[junit.JUnitCase]:
    root = scratch.resolve()
    path = (root / relative).resolve()
    # A symlink written by the command must not make the worker read files outside the scratch dir.
    if not path.is_relative_to(root):
        raise StepFailed(f"junit_xml {relative!r} points outside the scratch directory", retryable=False)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StepFailed(f"the command wrote no junit_xml file {relative!r}") from None
    if size > MAX_JUNIT_BYTES:
        raise StepFailed(
            f"junit_xml {relative!r} is {size} bytes, over {MAX_JUNIT_BYTES}",
            code="invalid_junit",
            retryable=False,
        )
    try:
        return junit.parse(path.read_bytes())
    except junit.JUnitError as exc:
        raise StepFailed(f"junit_xml {relative!r}: {exc}", code="invalid_junit", retryable=False) from None


async def run(ctx: StepContext, params: CommandParams) -> dict[str, Any]:
    if not ctx.policy.allow_commands:
        raise StepFailed(
            "command steps are not allowed on this worker (MODELRUNS_WORKER_ALLOW_COMMANDS)",
            code="not_allowed",
            retryable=False,
        )
    program = params.argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            *params.argv,
            cwd=ctx.scratch_dir,
            env=environment(ctx, params),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except ValueError as exc:  # e.g. a NUL byte in an argument
        raise StepFailed(f"cannot start {program!r}: {exc}", code="invalid_params", retryable=False) from None
    except OSError as exc:
        raise StepFailed(f"cannot start {program!r}: {exc.strerror or exc}") from None
    out, err = Tail(), Tail()
    readers = [asyncio.create_task(_drain(proc.stdout, out)), asyncio.create_task(_drain(proc.stderr, err))]
    exited = asyncio.ensure_future(proc.wait())
    stop = asyncio.ensure_future(ctx.cancelled.wait())
    try:
        await asyncio.wait([exited, stop], return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            await terminate(proc, KILL_AFTER)
            raise StepFailed("command stopped", code="cancelled", retryable=False)
    finally:
        stop.cancel()
        if proc.returncode is None:
            await terminate(proc, KILL_AFTER)
        else:
            _signal_group(proc, signal.SIGKILL)
        _, stuck = await asyncio.wait(readers, timeout=READER_GRACE)
        for reader in stuck:
            reader.cancel()
    returncode = proc.returncode
    assert returncode is not None
    # Test runners exit non-zero when tests fail: their report is read either way.
    junit_error: StepFailed | None = None
    if params.junit_xml is not None:
        try:
            found = await asyncio.to_thread(_read_junit, ctx.scratch_dir, params.junit_xml)
        except StepFailed as exc:
            junit_error = exc
        else:
            for case in found:
                ctx.report(case.name, case.status, case.duration_ms, case.message)
            if returncode != 0 and any(case.status in ("failed", "error") for case in found):
                # The runner's exit status only repeats what its report says: the failed tests are
                # the verdict (never retried; `allow_test_failures` decides), not a crash.
                return {"exit_code": returncode}
    if returncode != 0:
        raise StepFailed(exit_message(returncode, err.text()[-2000:]))
    if junit_error is not None:
        raise junit_error
    return {"exit_code": 0}
