"""The command kind, run directly with a StepContext (real child processes, no services)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from shared.errors import StepFailed
from shared.kinds import CommandParams
from shared.states import TestStatus
from tests.unit.worker_support import make_ctx, reported
from worker.context import Policy, StepContext
from worker.kinds import command

ALLOW = Policy(allow_commands=True)
PY = sys.executable


def params(*argv: str, env: dict[str, str] | None = None, junit_xml: str | None = None) -> CommandParams:
    return CommandParams(argv=list(argv), env=env or {}, junit_xml=junit_xml)


def ctx_in(tmp_path: Path) -> StepContext:
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    return make_ctx(scratch, policy=ALLOW)


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    # A reparented child may linger as a zombie where PID 1 does not reap: dead all the same.
    return "State:\tZ" in status


async def test_not_allowed_by_default(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    with pytest.raises(StepFailed) as caught:
        await command.run(ctx, params("true"))
    assert (caught.value.code, caught.value.retryable) == ("not_allowed", False)


async def test_runs_in_scratch_with_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_SECRET", "s3cr3t")
    ctx = ctx_in(tmp_path)
    script = (
        "import json, os; json.dump({'cwd': os.getcwd(), 'env': dict(os.environ)}, open('out.json', 'w'))"
    )
    outputs = await command.run(
        ctx, params(PY, "-c", script, env={"MODEL": "iris", "MODELRUNS_RUN_ID": "forged"})
    )
    assert outputs == {"exit_code": 0}
    seen = json.loads((ctx.scratch_dir / "out.json").read_text())
    assert seen["cwd"] == str(ctx.scratch_dir)
    env = seen["env"]
    assert "WORKER_SECRET" not in env
    assert env["MODEL"] == "iris"
    assert env["HOME"] == str(ctx.scratch_dir)
    assert env["MODELRUNS_RUN_ID"] == str(ctx.run_id)
    assert env["MODELRUNS_STEP_ID"] == str(ctx.step_id)
    assert env["MODELRUNS_ATTEMPT"] == "1"
    assert env["MODELRUNS_SCRATCH_DIR"] == str(ctx.scratch_dir)
    assert set(env) - {"MODEL", "LC_CTYPE"} <= {
        "PATH", "HOME", "LANG", "TMPDIR", "MODELRUNS_RUN_ID", "MODELRUNS_STEP_ID",
        "MODELRUNS_ATTEMPT", "MODELRUNS_SCRATCH_DIR",
    }  # fmt: skip


async def test_non_zero_exit_fails_retryably_with_the_stderr_tail(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    script = "import sys; sys.stderr.write('x' * 10000 + 'the real reason'); sys.exit(3)"
    with pytest.raises(StepFailed) as caught:
        await command.run(ctx, params(PY, "-c", script))
    assert caught.value.retryable
    assert caught.value.code == "step_failed"
    message = str(caught.value)
    assert message.startswith("command exited with status 3: ")
    assert message.endswith("the real reason")
    assert len(message) < 2100


JUNIT = """<testsuite>
<testcase classname="suite" name="ok" time="0.01"/>
<testcase classname="suite" name="bad"><failure message="nope"/></testcase>
</testsuite>"""


async def test_a_runner_exiting_non_zero_over_failed_tests_reports_them(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    script = f"import os, sys; os.makedirs('reports'); open('reports/junit.xml', 'w').write({JUNIT!r}); sys.exit(1)"
    # The exit status repeats the report's verdict: the step ends on its tests, not as a crash.
    outputs = await command.run(ctx, params(PY, "-c", script, junit_xml="reports/junit.xml"))
    assert outputs == {"exit_code": 1}
    assert [(r.name, r.status, r.message) for r in reported(ctx)] == [
        ("suite.ok", TestStatus.PASSED, None),
        ("suite.bad", TestStatus.FAILED, "nope"),
    ]
    assert reported(ctx)[0].duration_ms == pytest.approx(10.0)


async def test_a_non_zero_exit_with_only_passing_tests_still_fails(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    passing = JUNIT.replace('<failure message="nope"/>', "")
    assert "failure" not in passing
    script = f"open('junit.xml', 'w').write({passing!r}); raise SystemExit(2)"
    with pytest.raises(StepFailed, match="status 2"):
        await command.run(ctx, params(PY, "-c", script, junit_xml="junit.xml"))
    assert [r.status for r in reported(ctx)] == [TestStatus.PASSED, TestStatus.PASSED]


async def test_junit_success(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    script = f"open('junit.xml', 'w').write({JUNIT!r})"
    assert await command.run(ctx, params(PY, "-c", script, junit_xml="junit.xml")) == {"exit_code": 0}
    assert len(reported(ctx)) == 2


async def test_missing_junit_fails(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    with pytest.raises(StepFailed, match="wrote no junit_xml"):
        await command.run(ctx, params("true", junit_xml="junit.xml"))


async def test_junit_symlink_out_of_scratch_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.xml"
    secret.write_text('<testsuite><testcase name="leaked"/></testsuite>')
    ctx = ctx_in(tmp_path)
    with pytest.raises(StepFailed, match="outside the scratch") as caught:
        await command.run(ctx, params("ln", "-s", str(secret), "junit.xml", junit_xml="junit.xml"))
    assert not caught.value.retryable
    assert reported(ctx) == []


async def test_hostile_junit_is_refused(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    hostile = '<!DOCTYPE t [<!ENTITY a "aaaa">]><testsuite><testcase name="&a;"/></testsuite>'
    with pytest.raises(StepFailed) as caught:
        await command.run(ctx, params(PY, "-c", f"open('j.xml', 'w').write({hostile!r})", junit_xml="j.xml"))
    assert (caught.value.code, caught.value.retryable) == ("invalid_junit", False)


async def test_unstartable_commands(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    with pytest.raises(StepFailed, match="cannot start") as caught:
        await command.run(ctx, params("/no/such/program"))
    assert caught.value.code == "step_failed"
    with pytest.raises(StepFailed) as caught:
        await command.run(ctx, params("echo", "a\x00b"))
    assert (caught.value.code, caught.value.retryable) == ("invalid_params", False)


TREE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open("pids", "w").write(f"{os.getpid()} {child.pid}")
time.sleep(60)
"""


async def wait_for_pids(ctx: StepContext) -> list[int]:
    pid_file = ctx.scratch_dir / "pids"
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the command did not start"
        await asyncio.sleep(0.02)
    return [int(p) for p in pid_file.read_text().split()]


async def test_cancel_terminates_the_whole_process_group(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    task = asyncio.create_task(command.run(ctx, params(PY, "-c", TREE)))
    pids = await wait_for_pids(ctx)
    started = time.monotonic()
    ctx.cancel()
    with pytest.raises(StepFailed) as caught:
        await asyncio.wait_for(task, 5)
    assert caught.value.code == "cancelled"
    assert time.monotonic() - started < 3
    for pid in pids:
        deadline = time.monotonic() + 2
        while not gone(pid):
            assert time.monotonic() < deadline, f"process {pid} survived the cancel"
            await asyncio.sleep(0.02)


async def test_task_cancel_also_reaps_the_group(tmp_path: Path) -> None:
    ctx = ctx_in(tmp_path)
    task = asyncio.create_task(command.run(ctx, params(PY, "-c", TREE)))
    pids = await wait_for_pids(ctx)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    for pid in pids:
        deadline = time.monotonic() + 2
        while not gone(pid):
            assert time.monotonic() < deadline, f"process {pid} survived the cancel"
            await asyncio.sleep(0.02)


STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, lambda *_: open("term", "w").write("got it"))
open("pids", "w").write(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


async def test_sigterm_ignored_means_sigkill_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command, "KILL_AFTER", 0.5)
    ctx = ctx_in(tmp_path)
    task = asyncio.create_task(command.run(ctx, params(PY, "-c", STUBBORN)))
    (pid,) = await wait_for_pids(ctx)
    started = time.monotonic()
    ctx.cancel()
    with pytest.raises(StepFailed, match="stopped"):
        await asyncio.wait_for(task, 5)
    took = time.monotonic() - started
    assert 0.45 <= took < 2.5
    assert (ctx.scratch_dir / "term").read_text() == "got it"
    assert gone(pid)


async def test_a_second_cancel_does_not_cut_the_grace_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command, "KILL_AFTER", 0.6)
    ctx = ctx_in(tmp_path)
    task = asyncio.create_task(command.run(ctx, params(PY, "-c", STUBBORN)))
    (pid,) = await wait_for_pids(ctx)
    started = time.monotonic()
    ctx.cancel()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert time.monotonic() - started >= 0.55
    assert gone(pid)


def test_exit_messages() -> None:
    assert command.exit_message(2, "") == "command exited with status 2"
    assert command.exit_message(-9, "") == "command killed by SIGKILL"
    assert command.exit_message(1, "boom") == "command exited with status 1: boom"
