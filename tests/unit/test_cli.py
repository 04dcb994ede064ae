"""The CLI's own logic: settings errors as one line and exit 2, the demo's settings and pipeline,
and the rendering of data that looks like markup."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from modelruns_client import RunEvent, errors
from shared import cli
from shared.settings import Settings, load_settings

MODELRUNS = Path(sys.executable).with_name("modelruns")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELRUNS_")}
    return subprocess.run(
        [str(MODELRUNS), *args], env={**base, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_bad_setting_is_one_line_and_exit_2() -> None:
    done = run_cli("runs", "list", env={"MODELRUNS_HTTP_PORT": "eighty"})
    assert done.returncode == cli.EXIT_CONFIG
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: invalid settings: MODELRUNS_HTTP_PORT:")
    unknown = run_cli("runs", "list", env={"MODELRUNS_BOGUS": "1"})
    assert (unknown.returncode, unknown.stderr) == (2, "error: unknown setting(s): MODELRUNS_BOGUS\n")


def test_help_works_whatever_the_environment() -> None:
    done = run_cli("--help", env={"MODELRUNS_BOGUS": "1"})
    assert done.returncode == 0
    assert "runs" in done.stdout


def test_client_commands_need_a_key() -> None:
    done = run_cli("runs", "get", "x", env={"MODELRUNS_URL": "http://127.0.0.1:9"})
    assert done.returncode == cli.EXIT_CONFIG
    assert "MODELRUNS_API_KEY" in done.stderr


def test_a_bad_client_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = run_cli("runs", "list", env={"MODELRUNS_CONFIG": str(tmp_path / "none.toml")})
    assert (missing.returncode, missing.stderr.count("\n")) == (cli.EXIT_CONFIG, 1)
    assert "does not exist" in missing.stderr
    bad_url = run_cli("runs", "list", env={"MODELRUNS_URL": "ftp://x", "MODELRUNS_API_KEY": "k"})
    assert bad_url.returncode == cli.EXIT_CONFIG
    assert bad_url.stderr.startswith("error: not a usable API URL: 'ftp://x'")


def test_an_unreachable_api_is_exit_3() -> None:
    done = run_cli("runs", "get", "x", env={"MODELRUNS_URL": "http://127.0.0.1:9", "MODELRUNS_API_KEY": "k"})
    assert done.returncode == cli.EXIT_UNREACHABLE
    assert done.stderr.startswith("error: cannot reach the API at http://127.0.0.1:9")


def test_worker_overrides_are_validated() -> None:
    settings = Settings()
    assert cli.override(settings, worker_pools=("gpu", "cpu")).worker_pools == ("gpu", "cpu")
    assert cli.override(settings, worker_concurrency=None) is settings
    with pytest.raises(cli.CliError) as bad:
        cli.override(settings, worker_pools=("GPU!",))
    assert bad.value.exit_code == cli.EXIT_CONFIG
    assert "\n" not in str(bad.value)


def test_demo_settings_allow_the_examples_on_a_free_port() -> None:
    base = load_settings({"MODELRUNS_WORKER_PYTHON_ALLOW": "mycompany."})
    settings = cli.demo_settings(base)
    assert settings.worker_allow_commands is True
    assert "examples." in settings.worker_python_allow and "mycompany." in settings.worker_python_allow
    assert "default" in settings.worker_pools
    assert settings.url == f"http://127.0.0.1:{settings.http_port}"
    pinned = cli.demo_settings(load_settings({"MODELRUNS_HTTP_PORT": "18123"}))
    assert pinned.http_port == 18123


def test_up_gives_the_worker_the_ops_port_after_the_orchestrators() -> None:
    settings = load_settings({"MODELRUNS_OPS_PORT": "9100"})
    together = cli.Services(settings, ("gateway", "orchestrator", "worker"), asyncio.Event())
    assert together.settings_for("orchestrator").ops_port == 9100
    assert together.settings_for("worker").ops_port == 9101
    alone = cli.Services(settings, ("worker",), asyncio.Event())
    assert alone.settings_for("worker").ops_port == 9100
    unset = cli.Services(load_settings({}), ("orchestrator", "worker"), asyncio.Event())
    assert unset.settings_for("worker").ops_port is None


def test_demo_pipeline_runs_its_commands_with_this_interpreter() -> None:
    body = cli.demo_pipeline()
    argvs = [s["params"]["argv"] for s in body["steps"] if s["kind"] == "command"]
    assert argvs and all(argv[0] == sys.executable for argv in argvs)


def test_names_that_look_like_markup_are_shown_as_they_are() -> None:
    out = Console(width=200, record=True)
    result = {
        "attempt": 1,
        "name": "recall[setosa] >= 0.8",
        "status": "passed",
        "duration_ms": None,
        "message": "[bold]x[/bold]",
        "metrics": {"recall": 0.5},
    }
    out.print(cli.results_table([result]))
    text = out.export_text()
    assert "recall[setosa] >= 0.8" in text
    assert "[bold]x[/bold]" in text


def test_durations_read_like_a_person_writes_them() -> None:
    assert cli.format_seconds(1.24) == "1.2s"
    assert cli.format_seconds(64) == "1m04s"
    assert cli.format_seconds(3 * 3600 + 120) == "3h02m"
    assert cli.duration("2026-12-02T05:22:51.000000Z", "2026-12-02T05:22:53.500000Z") == "2.5s"
    assert cli.duration(None, None) == "-"


def test_client_errors_become_one_line_and_an_exit_code() -> None:
    body = (
        b'{"title": "Invalid request", "status": 400, "code": "validation_error", "detail": "bad\\n thing"}'
    )
    refused = cli.cli_error(errors.api_error(400, body))
    assert (str(refused), refused.exit_code) == ("400 validation_error: bad thing", cli.EXIT_FAILED)
    unauthorized = cli.cli_error(
        errors.api_error(401, b'{"code": "unauthorized", "title": "t", "status": 401}')
    )
    assert str(unauthorized).endswith("(check MODELRUNS_API_KEY)")
    assert str(cli.cli_error(errors.api_error(502, b"<html>"))) == "502 error: HTTP 502"
    unreachable = cli.cli_error(errors.TransportError("cannot reach the API at http://x: refused"))
    assert unreachable.exit_code == cli.EXIT_UNREACHABLE


def test_a_watch_keeps_the_run_as_its_events_tell_it() -> None:
    def event(type_: str, runseq: int, data: dict[str, Any]) -> RunEvent:
        return RunEvent(
            id=f"e{runseq}",
            source="/modelruns/orchestrator",
            type=type_,
            subject="model-runs/r1",
            time=datetime(2026, 12, 3, tzinfo=UTC),
            runseq=runseq,
            data=data,
        )

    def result(name: str, attempt: int, status: str, at: str) -> dict[str, Any]:
        return {
            "id": name,
            "step_id": "s1",
            "attempt": attempt,
            "name": name,
            "status": status,
            "created_at": at,
        }

    counts = {"total": 0, "passed": 0, "failed": 0, "skipped": 0, "error": 0}
    train = {"id": "s1", "name": "train", "status": "pending", "attempt": 0, "test_counts": counts}
    report = {"id": "s2", "name": "report", "status": "pending", "attempt": 0, "test_counts": counts}
    view = cli.RunView({"id": "r1", "status": "queued"}, [train, report])
    view.note = "503 unavailable; retrying"
    view.apply(event("modelruns.run.started", 2, {"id": "r1", "status": "running"}))
    assert view.run["status"] == "running" and view.note is None
    view.apply(event("modelruns.step.started", 3, {**train, "status": "running", "attempt": 1}))
    view.apply(event("modelruns.test_result.reported", 4, result("a", 1, "failed", "2026-12-03T00:00:01Z")))
    assert view.step_list()[0]["test_counts"] == {**counts, "total": 1, "failed": 1}
    view.apply(event("modelruns.step.retrying", 5, {**train, "status": "queued", "attempt": 2}))
    view.apply(event("modelruns.test_result.reported", 6, result("b", 2, "passed", "2026-12-03T00:00:02Z")))
    view.apply(event("modelruns.test_result.reported", 7, result("c", 2, "error", "2026-12-03T00:00:03Z")))
    # Only the latest attempt counts; steps stay in definition order.
    first, second = view.step_list()
    assert first["test_counts"] == {**counts, "total": 2, "passed": 1, "error": 1}
    assert second == report
    assert [r["name"] for r in view.latest(2)] == ["train: b", "train: c"]
    assert [r["name"] for r in view.by_step["s1"]] == ["a", "b", "c"]
