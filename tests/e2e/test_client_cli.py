"""The Python client and the `modelruns runs` commands against a real `modelruns up`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from modelruns_client import Client, Run, Step, TestResult
from tests.e2e.conftest import BIN, Stack


def synthetic(name: str, *deps: str, **params: Any) -> dict[str, Any]:
    return {"name": name, "kind": "synthetic", "params": params, "depends_on": list(deps)}


def body(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"model": {"name": "iris-classifier", "version": "1.4.0"}, "steps": list(steps)}


PASSING = body(
    synthetic("train", duration_seconds=0.3),
    synthetic("evaluate", "train", results=[{"name": "accuracy >= 0.9", "status": "passed"}]),
)
FAILING = body(
    synthetic(
        "evaluate",
        results=[
            {"name": "accuracy >= 0.9", "status": "failed", "message": "0.81"},
            {"name": "recall[setosa]", "status": "passed"},
        ],
    )
)


def modelruns(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELRUNS_")}
    return subprocess.run(
        [str(BIN / "modelruns"), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def client_env(stack: Stack, key: str) -> dict[str, str]:
    return {"MODELRUNS_URL": stack.url, "MODELRUNS_API_KEY": key}


async def test_the_client_follows_a_real_run(stack: Stack, keys: dict[str, str]) -> None:
    async with Client(stack.url, keys["acme"]) as client:
        run = await client.trigger(PASSING)
        events = [event async for event in client.events(run.id)]
        done = await client.wait(run.id, timeout=30)
        steps = await client.steps(run.id)
        results = [r async for r in client.test_results(run.id, steps[1].id)]
    assert done.status == "succeeded" and done.test_counts.passed == 1
    assert [e.runseq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "modelruns.run.queued" and events[-1].type == "modelruns.run.succeeded"
    # Every event's data is the API's resource.
    kinds = {type(e.resource()) for e in events}
    assert kinds == {Run, Step, TestResult}
    assert [r.name for r in results] == ["accuracy >= 0.9"]


def test_trigger_watch_exits_with_the_runs_outcome(
    stack: Stack, keys: dict[str, str], tmp_path: Path
) -> None:
    env = client_env(stack, keys["acme"])
    passing, failing = tmp_path / "passing.json", tmp_path / "failing.json"
    passing.write_text(json.dumps(PASSING))
    failing.write_text(json.dumps(FAILING))

    watched = modelruns("runs", "trigger", str(passing), "--watch", env=env)
    assert watched.returncode == 0, watched.stderr
    assert "succeeded" in watched.stdout and "accuracy >= 0.9" in watched.stdout

    failed = modelruns("runs", "trigger", str(failing), "--watch", "--output", "json", env=env)
    assert failed.returncode == 1, failed.stderr
    document = json.loads(failed.stdout)  # one JSON document, nothing else on stdout
    run_id = document["run"]["id"]
    assert document["run"]["status"] == "failed" and document["steps"][0]["status"] == "failed"

    results = modelruns("runs", "results", run_id, "evaluate", "--status", "failed", "-o", "json", env=env)
    assert results.returncode == 0, results.stderr
    assert [r["name"] for r in json.loads(results.stdout)] == ["accuracy >= 0.9"]
    listed = modelruns("runs", "list", "--status", "failed", "--limit", "1", "-o", "json", env=env)
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    assert json.loads(modelruns("runs", "get", run_id, "-o", "json", env=env).stdout)["status"] == "failed"
    steps = json.loads(modelruns("runs", "steps", run_id, "-o", "json", env=env).stdout)
    assert [s["name"] for s in steps] == ["evaluate"]
    # Watching a finished run shows it and exits with its outcome; cancelling it changes nothing.
    again = modelruns("runs", "watch", run_id, env=env)
    assert again.returncode == 1 and "failed" in again.stdout
    cancelled = modelruns("runs", "cancel", run_id, "-o", "json", env=env)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "failed"


async def test_watch_follows_a_live_run_to_its_end(stack: Stack, keys: dict[str, str]) -> None:
    async with Client(stack.url, keys["acme"]) as client:
        run = await client.trigger(body(synthetic("slow", duration_seconds=1.5)))
        watching = await asyncio.create_subprocess_exec(
            str(BIN / "modelruns"),
            "runs",
            "watch",
            run.id,
            "-o",
            "json",
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("MODELRUNS_")},
                **client_env(stack, keys["acme"]),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(watching.communicate(), 60)
        assert watching.returncode == 0, err.decode()
        document = json.loads(out)
        assert document["run"]["status"] == "succeeded"
        assert (await client.get(run.id)).finished_at is not None


def test_a_config_file_and_one_line_errors(stack: Stack, keys: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'url = "{stack.url}"\napi_key = "{keys["acme-read"]}"\n')
    env = {"MODELRUNS_CONFIG": str(config)}
    listed = modelruns("runs", "list", "--limit", "2", "-o", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    missing = modelruns("runs", "get", "no-such-run", env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: 404 not_found:") and missing.stderr.count("\n") == 1
    request = tmp_path / "run.json"
    request.write_text(json.dumps(PASSING))
    refused = modelruns("runs", "trigger", str(request), env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: 403 forbidden:") and refused.stderr.count("\n") == 1


def test_the_readmes_client_example_runs(stack: Stack, keys: dict[str, str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## The Python client", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run(
        [str(BIN / "python"), "-c", example],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MODELRUNS_")},
            **client_env(stack, keys["acme"]),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "modelruns.run.succeeded" in done.stdout and "404 not_found" in done.stdout
