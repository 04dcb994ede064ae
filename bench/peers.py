"""Peers on the same services and the same work (runs of chained no-op steps), each installed
into its own virtualenv under .bench/venvs/ and finished by polling its own tables."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import results
from bench.context import load, say, versions
from bench.stack import LOGS, WORK, Services, services

HERE = Path(__file__).resolve().parent / "peers"
VENVS = WORK / "venvs"
PYTHON = "python3.11" if sys.version_info[:2] == (3, 11) else sys.executable


@dataclass(frozen=True)
class Peer:
    name: str
    packages: tuple[str, ...]
    dist: str  # whose version the row names
    setting: str

    @property
    def venv(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


PEERS = {
    "celery": Peer(
        "celery",
        ("celery[sqlalchemy]>=5.3", "sqlalchemy>=2", "psycopg2-binary>=2.9"),
        "celery",
        "RabbitMQ broker, Postgres result backend, chain, prefork -c 2, acks_late",
    ),
    "procrastinate": Peer(
        "procrastinate",
        ("procrastinate>=2.0", "psycopg[binary]>=3.1"),
        "procrastinate",
        "Postgres only, each job defers the next, 2 workers x concurrency 10",
    ),
    "dbos": Peer(
        "dbos",
        ("dbos>=1.0", "psycopg[binary]>=3.1"),
        "dbos",
        "a workflow of chained steps on a queue, 2 worker processes",
    ),
}


def install(peer: Peer) -> None:
    stamp = peer.venv / ".installed"
    wanted = " ".join(peer.packages)
    if stamp.exists() and stamp.read_text() == wanted:
        return
    say(f"peers: installing {peer.name} into {peer.venv}")
    subprocess.run([sys.executable, "-m", "venv", str(peer.venv)], check=True)
    subprocess.run([peer.python, "-m", "pip", "install", "--quiet", *peer.packages], check=True, timeout=900)
    stamp.write_text(wanted)


def version(peer: Peer) -> str:
    done = subprocess.run(
        [peer.python, "-c", f"import importlib.metadata as m; print(m.version({peer.dist!r}))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def workers(peer: Peer, env: dict[str, str]) -> list[list[str]]:
    bin_dir = peer.venv / "bin"
    if peer.name == "celery":
        return [
            [
                str(bin_dir / "celery"),
                "-A",
                "celery_peer",
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ]
        ]
    if peer.name == "procrastinate":
        command = [
            str(bin_dir / "procrastinate"),
            "--app=procrastinate_peer.app",
            "worker",
            "--concurrency",
            "10",
        ]
        return [command, command]
    return [[peer.python, "dbos_peer.py", "worker"]] * 2


def prepare(peer: Peer, env: dict[str, str]) -> None:
    if peer.name == "procrastinate":
        subprocess.run(
            [str(peer.venv / "bin" / "procrastinate"), "--app=procrastinate_peer.app", "schema", "--apply"],
            env=env,
            cwd=HERE,
            check=True,
            capture_output=True,
        )


def wait_ready(peer: Peer, processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """Workers are up when their logs show it (or, lacking a sign, after a settling pause)."""
    # Celery logs its "ready" at INFO, which would also log every task: its banner and a pause do.
    signs = {"celery": b"[queues]", "dbos": b"ready"}
    sign = signs.get(peer.name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(f"{peer.name} worker exited: {log.read_text(errors='replace')[-3000:]}")
        if sign is None or all(sign in log.read_bytes() for log in logs):
            time.sleep(0.5 if peer.name == "dbos" else 3.0)
            return
        time.sleep(0.2)
    raise RuntimeError(f"{peer.name} workers not ready: {logs[0].read_text(errors='replace')[-3000:]}")


def run_peer(peer: Peer, svc: Services, runs: int, steps: int) -> float:
    env = {**os.environ, "BENCH_DB_URL": svc.db_url, "BENCH_AMQP_URL": svc.amqp_url, "PYTHONPATH": str(HERE)}
    prepare(peer, env)
    LOGS.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for i, argv in enumerate(workers(peer, env)):
            log = LOGS / f"{peer.name}-{i}.log"
            logs.append(log)
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(argv, env=env, cwd=HERE, stdout=out, stderr=subprocess.STDOUT)
                )
        wait_ready(peer, processes, logs)
        done = subprocess.run(
            [peer.python, f"{peer.name}_peer.py", "drive", str(runs), str(steps)],
            env=env,
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=60 + runs * steps / 10,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{peer.name} drive failed: {done.stderr[-3000:]}")
        return float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


async def all_peers(names: list[str], runs: int, steps: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name in names:
        peer = PEERS[name]
        await asyncio.to_thread(install, peer)
        async with services(f"peer{name}") as svc:
            seconds = await asyncio.to_thread(run_peer, peer, svc, runs, steps)
        rate = runs * steps / seconds
        figures[name] = rate
        say(
            f"peers: {name} {version(peer)}: {runs} runs x {steps} steps in {seconds:.1f} s = {rate:.0f} steps/s"
        )
        results.record(
            "Peers",
            {
                "peer": f"{name} {version(peer)}",
                "runs x steps": f"{runs} x {steps}",
                "steps/s": f"{rate:.0f}",
                "drain": f"{seconds:.1f} s",
                "settings": peer.setting,
                "load": load(),
                "versions": versions(),
            },
        )
    MEASURED.update(figures)
    return figures


# W1 compares against the best peer measured in the same run (steps/s by peer).
MEASURED: dict[str, float] = {}
