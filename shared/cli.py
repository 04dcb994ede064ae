"""`modelruns`: the services (`up`, `gateway`, `orchestrator`, `worker`), the admin tasks (`db`,
`api-keys`), the `demo`, and a client of the HTTP API (`runs ...`).

Settings are loaded once, here, on first use (so `--help` works with a broken environment), and
passed down. The services are imported inside their commands: a client needs none of them.

Exit codes: 0 success; 1 the request was refused, a service failed, or a watched run did not
succeed; 2 bad configuration or usage; 3 the API could not be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
import uvloop
from pydantic import BaseModel, ValidationError
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from modelruns_client import Client, ClientError, Retry, RunEvent, TransportError, Unauthorized, load_config
from shared import logs, runtime
from shared.errors import ConfigurationError, ModelRunsError
from shared.models.api import empty_test_counts
from shared.settings import Settings, load_settings
from shared.states import RunStatus, TestStatus

log = logging.getLogger("modelruns.cli")
T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3

SERVICE_MODULES = {
    "gateway": "gateway.service",
    "orchestrator": "orchestrator.service",
    "worker": "worker.service",
}
REDRAW_SECONDS = 0.5
DEMO_TENANT = "demo"
DEMO_PIPELINE = "iris-pipeline.json"
DEMO_TIMEOUT_SECONDS = 300.0
READY_TIMEOUT_SECONDS = 60.0
SHUTDOWN_MARGIN_SECONDS = 60.0

Serve = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


class Scope(StrEnum):
    RUNS_READ = "runs:read"
    RUNS_WRITE = "runs:write"


class CliError(ModelRunsError):
    """Ends the command with one line on stderr and `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------
# Settings, errors and the loop


def one_line(exc: BaseException) -> str:
    """An error as one line; pydantic's multi-line reports become `MODELRUNS_X: reason; ...`."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ValidationError) else exc
    if isinstance(cause, ValidationError):
        parts = []
        for error in cause.errors():
            where = str(error["loc"][0]).upper() if error["loc"] else ""
            parts.append(f"MODELRUNS_{where}: {error['msg']}" if where else error["msg"])
        return "invalid settings: " + "; ".join(parts)
    return " ".join(str(exc).split()) or type(exc).__name__


class Config:
    """The process's settings, loaded at most once, on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings()
            except ConfigurationError as exc:
                raise CliError(one_line(exc), EXIT_CONFIG) from exc
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.ensure_object(Config).settings


def override(settings: Settings, **changes: Any) -> Settings:
    """Settings with command-line values on top, validated like the environment's."""
    values = {name: value for name, value in changes.items() if value is not None}
    if not values:
        return settings
    try:
        return Settings.model_validate({**settings.model_dump(), **values})
    except ValidationError as exc:
        raise CliError(one_line(exc), EXIT_CONFIG) from exc


def run_async(main: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(main)


def fail(message: str, exit_code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


def configure_logs(settings: Settings, *, quiet: bool = False) -> None:
    level = settings.log_level
    if quiet and "log_level" not in settings.model_fields_set:
        # The demo's own output is the point; the services speak up only when something is wrong.
        level = "WARNING"
    logs.configure(level, settings.log_format)


# ---------------------------------------------------------------------------------------------
# Services in this process


def load_serve(name: str) -> Serve:
    try:
        module = importlib.import_module(SERVICE_MODULES[name])
    except ImportError as exc:
        raise CliError(f"cannot load the {name} service: {one_line(exc)}") from exc
    serve: Serve = module.serve
    return serve


class Services:
    """Services sharing one loop and one stop event: when one ends unasked, all stop."""

    def __init__(self, settings: Settings, names: Sequence[str], stop: asyncio.Event) -> None:
        # Every import first, so a missing service leaves nothing half started.
        self._serves = {name: load_serve(name) for name in names}
        self.settings = settings
        self.stop = stop
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def settings_for(self, name: str) -> Settings:
        """The settings one service starts with. Under `up` the orchestrator and the worker share a
        process but not a port: the worker serves its ops endpoints on the next one."""
        port = self.settings.ops_port
        if name == "worker" and "orchestrator" in self._serves and port:
            return self.settings.model_copy(update={"ops_port": port + 1})
        return self.settings

    def start(self) -> None:
        for name, serve in self._serves.items():
            self.tasks[name] = asyncio.create_task(
                serve(self.settings_for(name), self.stop), name=f"modelruns.{name}"
            )

    def problems(self) -> list[str]:
        found = []
        for name, task in self.tasks.items():
            if not task.done() or task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                found.append(f"{name} failed: {type(exc).__name__}: {one_line(exc)}")
            elif not self.stop.is_set():
                found.append(f"{name} stopped before it was asked to")
        return found

    def first_problem(self) -> str | None:
        problems = self.problems()
        return problems[0] if problems else None

    async def until_stopped(self) -> None:
        """Return once the stop event is set or any service ended (which sets it)."""
        stopper = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait([stopper, *self.tasks.values()], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        for name, task in self.tasks.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                # The traceback goes to the logs; the console gets one line at the end.
                log.error(
                    "service failed",
                    exc_info=task.exception(),
                    extra={"action": "cli.service_failed", "service": name},
                )
        self.stop.set()

    def cancel(self) -> None:
        for task in self.tasks.values():
            task.cancel()

    async def shutdown(self) -> list[str]:
        """Stop every service, waiting for clean exits (a worker finishes its steps first), then
        cancelling what is left. Returns what went wrong."""
        problems_before = self.problems()
        self.stop.set()
        pending = [task for task in self.tasks.values() if not task.done()]
        if pending:
            # A worker waits its grace for running steps, then stops them and flushes its events.
            grace = self.settings.worker_shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                log.warning(
                    "service did not stop in time, cancelling",
                    extra={"action": "cli.service_cancel", "service": task.get_name()},
                )
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=10.0)
        return problems_before + [p for p in self.problems() if p not in problems_before]


def install_signals(services: Services) -> Callable[[], None]:
    """SIGINT/SIGTERM set the stop event; a second one cancels the services outright."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if services.stop.is_set():
            services.cancel()
        else:
            log.info("stopping", extra={"action": "cli.stop"})
            services.stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    def remove() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return remove


async def serve_until_signalled(settings: Settings, names: Sequence[str]) -> int:
    services = Services(settings, names, asyncio.Event())
    # Every service's code is loaded by now (Services imports it all first).
    runtime.settle_collector()
    remove = install_signals(services)
    try:
        services.start()
        await services.until_stopped()
        problems = await services.shutdown()
    finally:
        remove()
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    return EXIT_FAILED if problems else EXIT_OK


def serve_command(ctx: typer.Context, names: Sequence[str], settings: Settings | None = None) -> None:
    settings = settings or settings_of(ctx)
    configure_logs(settings)
    from shared import tracing

    # Opt-in by the standard OTEL_* environment; the SDK reads its own variables from there too.
    try:
        tracing.configure("modelruns-" + names[0] if len(names) == 1 else "modelruns", os.environ)
    except ConfigurationError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from exc
    try:
        code = run_async(serve_until_signalled(settings, names))
    finally:
        tracing.shutdown()
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------------------
# The API client: modelruns_client, configured like the rest of the CLI

CLI_AGENT = "modelruns-cli"
# One command tries a little more than once (a person is waiting); a watch rides out an
# unreachable or failing API (a gateway restart) for about 30 s.
COMMAND_RETRY = Retry(attempts=3)
WATCH_RETRY = Retry(attempts=12, max_backoff=4.0)


def client_of(settings: Settings, api_key: str | None = None, *, retry: Retry | None = None) -> Client:
    """A client on MODELRUNS_URL and MODELRUNS_API_KEY, else on the config file's values."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    try:
        config = load_config(
            url=settings.url if "url" in settings.model_fields_set else None,
            api_key=api_key or (settings.api_key.get_secret_value() if settings.api_key else None),
            environ={"XDG_CONFIG_HOME": xdg} if xdg else {},
            path=settings.config,
        )
        if not config.api_key:
            raise CliError(
                "MODELRUNS_API_KEY is not set (create a key with `modelruns api-keys create`)", EXIT_CONFIG
            )
        return Client(config.url, config.api_key, retry=retry or COMMAND_RETRY, user_agent=CLI_AGENT)
    except ConfigurationError as exc:
        raise CliError(one_line(exc), EXIT_CONFIG) from exc


def cli_error(exc: ClientError) -> CliError:
    """The client's error as the CLI's one line and exit code."""
    if isinstance(exc, TransportError):
        return CliError(one_line(exc), EXIT_UNREACHABLE)
    message = one_line(exc)
    if isinstance(exc, Unauthorized):
        message += " (check MODELRUNS_API_KEY)"
    return CliError(message)


def dump(model: BaseModel) -> dict[str, Any]:
    """A resource as the API's JSON, which is what the tables and --output json show."""
    return model.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Rendering

STATUS_STYLE = {
    "succeeded": "green",
    "passed": "green",
    "failed": "bold red",
    "error": "bold red",
    "running": "yellow",
    "queued": "cyan",
    "pending": "dim",
    "cancelling": "magenta",
    "cancelled": "magenta",
    "skipped": "dim",
}


def console() -> Console:
    out = Console(highlight=False)
    if not out.is_terminal:
        # Piped output is read by tools and people alike: no ids cut at 80 columns.
        out = Console(highlight=False, width=160)
    return out


def print_json(value: Any) -> None:
    typer.echo(
        orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC).decode()
    )


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def plain(value: object) -> Text:
    """Data as it is: a test named `recall[setosa]` is not rich markup."""
    return Text(str(value))


def parse_time(value: str | datetime | None) -> datetime | None:
    if isinstance(value, datetime) or value is None:
        return value
    return datetime.fromisoformat(value) if value else None


def when(value: str | datetime | None) -> str:
    moment = parse_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def duration(started: str | None, finished: str | None) -> str:
    start = parse_time(started)
    if start is None:
        return "-"
    end = parse_time(finished) or datetime.now(UTC)
    return format_seconds(max((end - start).total_seconds(), 0.0))


def failed_tests(counts: Mapping[str, int]) -> int:
    return int(counts.get("failed", 0)) + int(counts.get("error", 0))


def steps_summary(counts: Mapping[str, int]) -> str:
    text = f"{counts.get('succeeded', 0)}/{counts.get('total', 0)} succeeded"
    others = [f"{counts[s]} {s}" for s in ("running", "queued", "pending", "failed", "cancelled", "skipped")]
    extra = [part for part in others if not part.startswith("0 ")]
    return text + (", " + ", ".join(extra) if extra else "")


def tests_summary(counts: Mapping[str, int]) -> str:
    parts = [f"{counts.get('passed', 0)} passed", f"{counts.get('failed', 0)} failed"]
    parts += [f"{counts[s]} {s}" for s in ("error", "skipped") if counts.get(s)]
    return ", ".join(parts)


def error_text(error: Mapping[str, Any] | None) -> str:
    return f"{error['code']}: {error['message']}" if error else ""


def model_text(model: Mapping[str, Any]) -> str:
    return " ".join(str(model[k]) for k in ("name", "version") if model.get(k))


def run_table(run: Mapping[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("run", plain(run["id"]))
    table.add_row("status", status_text(run["status"]))
    table.add_row("model", plain(model_text(run["model"])))
    if run.get("labels"):
        table.add_row("labels", plain(", ".join(f"{k}={v}" for k, v in run["labels"].items())))
    table.add_row("created", when(run["created_at"]))
    table.add_row("started", when(run["started_at"]))
    table.add_row("finished", when(run["finished_at"]))
    if run.get("cancel_requested_at"):
        table.add_row("cancel requested", when(run["cancel_requested_at"]))
    table.add_row("steps", steps_summary(run["step_counts"]))
    table.add_row("tests", tests_summary(run["test_counts"]))
    if run.get("error"):
        table.add_row("error", Text(error_text(run["error"]), style="red"))
    return table


def runs_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("RUN", "STATUS", "MODEL", "STEPS", "TESTS", "CREATED"):
        table.add_column(column, no_wrap=column in ("RUN", "CREATED"))
    for run in runs:
        steps = run["step_counts"]
        tests = run["test_counts"]
        table.add_row(
            plain(run["id"]),
            status_text(run["status"]),
            plain(model_text(run["model"])),
            f"{steps.get('succeeded', 0)}/{steps.get('total', 0)}",
            f"{tests.get('passed', 0)} passed, {failed_tests(tests)} failed",
            when(run["created_at"]),
        )
    return table


def steps_table(steps: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("STEP", "KIND", "STATUS", "ATTEMPT", "DURATION", "PASSED", "FAILED", "ERROR"):
        table.add_column(column, justify="right" if column in ("ATTEMPT", "PASSED", "FAILED") else "left")
    for step in steps:
        tests = step["test_counts"]
        failed = failed_tests(tests)
        table.add_row(
            plain(step["name"]),
            plain(step["kind"]),
            status_text(step["status"]),
            f"{step['attempt']}/{step['max_attempts']}",
            duration(step["started_at"], step["finished_at"]),
            str(tests.get("passed", 0)),
            Text(str(failed), style="red" if failed else ""),
            Text(error_text(step.get("error")), style="red"),
        )
    return table


def metrics_text(metrics: Mapping[str, float] | None) -> str:
    if not metrics:
        return ""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def results_table(results: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Table:
    table = Table(box=None, header_style="bold", title=title, title_justify="left")
    for column in ("ATTEMPT", "TEST", "STATUS", "MS", "METRICS", "MESSAGE"):
        table.add_column(column, justify="right" if column in ("ATTEMPT", "MS") else "left")
    for result in results:
        ms = result.get("duration_ms")
        table.add_row(
            str(result["attempt"]),
            plain(result["name"]),
            status_text(result["status"]),
            f"{ms:.1f}" if isinstance(ms, int | float) else "",
            plain(metrics_text(result.get("metrics"))),
            plain(result.get("message") or ""),
        )
    return table


# ---------------------------------------------------------------------------------------------
# Watching a run


class RunView:
    """A run as its event stream tells it: the run, its steps in definition order and every test
    result reported, kept as the API's JSON."""

    def __init__(self, run: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> None:
        self.run = dict(run)
        self.steps = {step["id"]: dict(step) for step in steps}
        self.by_step: dict[str, list[dict[str, Any]]] = {}
        self.note: str | None = None

    def apply(self, event: RunEvent) -> None:
        self.note = None
        data = event.data
        if event.entity == "run":
            self.run = data
        elif event.entity == "step":
            self.steps[data["id"]] = data
        else:
            self.by_step.setdefault(data["step_id"], []).append(data)

    def step_list(self) -> list[dict[str, Any]]:
        """The steps, with the test counts of their latest attempt as reported so far (a step's
        own counts move only with its next event)."""
        found = []
        for step in self.steps.values():
            results = self.by_step.get(step["id"])
            if results:
                counts = empty_test_counts()
                for result in results:
                    if result["attempt"] == step["attempt"]:
                        counts["total"] += 1
                        counts[result["status"]] += 1
                step = {**step, "test_counts": counts}
            found.append(step)
        return found

    def latest(self, count: int = 8) -> list[dict[str, Any]]:
        names = {step_id: step["name"] for step_id, step in self.steps.items()}
        flat = [
            {**result, "name": f"{names.get(step_id, '?')}: {result['name']}"}
            for step_id, results in self.by_step.items()
            for result in results
        ]
        flat.sort(key=lambda r: (r["created_at"], r["attempt"]))
        return flat[-count:]


def watch_view(
    run: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    latest: Sequence[Mapping[str, Any]] | None,
    note: str | None = None,
) -> RenderableType:
    header = Text.assemble(
        ("run ", "bold"),
        run["id"],
        "  ",
        status_text(run["status"]),
        f"  {model_text(run['model'])}  {duration(run['started_at'] or run['created_at'], run['finished_at'])}",
    )
    parts: list[RenderableType] = [header, steps_table(steps)]
    if latest:
        parts += [Text("latest test results", style="bold"), results_table(latest)]
    if note:
        parts.append(Text(note, style="yellow"))
    return Group(*parts)


async def watch_run(
    client: Client, run_id: str, out: Console | None, *, with_results: bool = True
) -> RunView:
    """Follow the run's event stream until it ends, drawing it live on `out` (nothing drawn when None)."""
    view = RunView(dump(await client.get(run_id)), [dump(step) for step in await client.steps(run_id)])
    live = Live(console=out, auto_refresh=False, transient=False) if out is not None else None

    def draw(final: bool = False) -> None:
        if live is not None:
            # The last frame keeps the steps only: the results follow in full, step by step.
            latest = view.latest() if with_results and not final else None
            live.update(watch_view(view.run, view.step_list(), latest, view.note), refresh=True)

    async def redraw() -> None:
        while True:  # durations move between events too
            draw()
            await asyncio.sleep(REDRAW_SECONDS)

    def on_retry(error: ClientError, delay: float) -> None:
        view.note = f"{one_line(error)}; retrying in {delay:.1f}s"

    told, client.on_retry = client.on_retry, on_retry
    with live or contextlib.nullcontext():
        ticker = asyncio.create_task(redraw()) if live is not None else None
        try:
            async with contextlib.aclosing(client.events(run_id)) as events:
                async for event in events:
                    if with_results or event.entity != "test_result":
                        view.apply(event)
            # The stream ended after the terminal event: the run and its steps as they ended.
            view.run = dump(await client.get(run_id))
            view.steps.update((step.id, dump(step)) for step in await client.steps(run_id))
        finally:
            client.on_retry = told
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        draw(final=True)
    return view


def print_outcome(out: Console, view: RunView) -> None:
    for step in view.steps.values():
        results = view.by_step.get(step["id"])
        if results:
            out.print()
            out.print(results_table(results, title=f"test results of {step['name']}"))
    out.print()
    run = view.run
    line = Text.assemble(("run ", "bold"), run["id"], " ", status_text(run["status"]))
    if run.get("error"):
        line.append(f"  {error_text(run['error'])}", style="red")
    out.print(line)


def exit_for(run: Mapping[str, Any]) -> int:
    return EXIT_OK if run["status"] == RunStatus.SUCCEEDED else EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# The command tree

app = typer.Typer(
    name="modelruns",
    help="An event-driven orchestrator for model runs: services, admin tasks and an API client.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (only a hash is stored; a key is shown once).", no_args_is_help=True)
runs_app = typer.Typer(
    help="Client of the HTTP API at MODELRUNS_URL, with the key in MODELRUNS_API_KEY.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="api-keys")
app.add_typer(runs_app, name="runs")

OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")
]
RunId = Annotated[str, typer.Argument(help="The run's id.", show_default=False)]


@app.callback()
def _root(ctx: typer.Context) -> None:
    ctx.ensure_object(Config)


@app.command()
def up(ctx: typer.Context) -> None:
    """Gateway, orchestrator and one worker in one process (one machine). Stops on SIGINT/SIGTERM."""
    serve_command(ctx, ("gateway", "orchestrator", "worker"))


@app.command()
def gateway(ctx: typer.Context) -> None:
    """The HTTP API, on MODELRUNS_HTTP_HOST:MODELRUNS_HTTP_PORT."""
    serve_command(ctx, ("gateway",))


@app.command()
def orchestrator(ctx: typer.Context) -> None:
    """Moves run and step state; run as many as you like."""
    serve_command(ctx, ("orchestrator",))


@app.command()
def worker(
    ctx: typer.Context,
    pool: Annotated[
        list[str] | None,
        typer.Option(
            "--pool", help="A pool to take steps from (repeatable; default MODELRUNS_WORKER_POOLS)."
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="Steps run at once (default MODELRUNS_WORKER_CONCURRENCY)."),
    ] = None,
) -> None:
    """Runs steps from its pools' queues."""
    settings = override(
        settings_of(ctx), worker_pools=tuple(pool) if pool else None, worker_concurrency=concurrency
    )
    serve_command(ctx, ("worker",), settings)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create the database if it is missing and apply the migrations it lacks."""
    from shared.db import migrate

    settings = settings_of(ctx)
    configure_logs(settings)
    applied = run_async(migrate.upgrade(settings.owner_url, settings.database_url))
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
    typer.echo(f"applied {names}" if applied else "the database is up to date")


async def _with_pool(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from shared.db.pool import create_pool

    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return await work(pool)
    finally:
        await pool.close()


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The tenant (created when new).", show_default=False)],
    scope: Annotated[
        list[Scope] | None, typer.Option("--scope", help="runs:read and/or runs:write (repeatable).")
    ] = None,
) -> None:
    """Create a key and print it once: the last line is the key alone."""
    from shared import apikeys

    if not scope:
        fail("give at least one --scope (runs:read, runs:write)", EXIT_CONFIG)
    scopes = sorted({s.value for s in scope})
    settings = settings_of(ctx)
    try:
        key = run_async(_with_pool(settings, lambda pool: apikeys.create_key(pool, tenant, scopes)))
    except apikeys.InvalidKeyRequest as exc:
        fail(one_line(exc), EXIT_CONFIG)
    typer.echo(
        f"created a key for tenant {tenant} with {', '.join(scopes)}; it is not shown again:", err=True
    )
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Every key's prefix, tenant, scopes and use (never the key)."""
    from shared import apikeys

    keys = run_async(_with_pool(settings_of(ctx), lambda pool: apikeys.list_keys(pool, tenant)))
    if output is OutputFormat.JSON:
        print_json([dataclasses.asdict(key) for key in keys])
        return
    table = Table(box=None, header_style="bold")
    for column in ("PREFIX", "TENANT", "SCOPES", "CREATED", "LAST USED", "REVOKED"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(
            plain(key.prefix),
            plain(key.tenant_id),
            " ".join(key.scopes),
            when(key.created_at),
            when(key.last_used_at),
            Text(when(key.revoked_at), style="red" if key.revoked_at else ""),
        )
    console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    prefix_or_key: Annotated[str, typer.Argument(help="The key, or its prefix as `api-keys list` shows it.")],
) -> None:
    """Revoke a key; gateways refuse it within 2 seconds."""
    from shared import apikeys

    try:
        info = run_async(_with_pool(settings_of(ctx), lambda pool: apikeys.revoke_key(pool, prefix_or_key)))
    except apikeys.InvalidKeyRequest as exc:
        fail(one_line(exc), EXIT_CONFIG)
    if info is None:
        fail(f"no key with prefix {apikeys.prefix_of(prefix_or_key)}")
    typer.echo(f"revoked key {info.prefix} of tenant {info.tenant_id}")


# -- runs ---------------------------------------------------------------------------------------


def _read_body(file: str) -> Any:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}", EXIT_CONFIG)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{file} is not JSON: {exc}", EXIT_CONFIG)


def _client_call(
    ctx: typer.Context, call: Callable[[Client], Awaitable[T]], *, retry: Retry | None = None
) -> T:
    async def main() -> T:
        try:
            async with client_of(settings_of(ctx), retry=retry) as client:
                return await call(client)
        except ClientError as exc:
            raise cli_error(exc) from exc

    return run_async(main())


async def _watch_and_report(client: Client, run_id: str, output: OutputFormat, with_results: bool) -> int:
    out = console() if output is OutputFormat.TABLE else None
    view = await watch_run(client, run_id, out, with_results=with_results)
    if out is None:
        print_json({"run": view.run, "steps": list(view.steps.values())})
    else:
        print_outcome(out, view)
    return exit_for(view.run)


@runs_app.command("trigger")
def runs_trigger(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="The trigger body as JSON (`-` reads stdin).")],
    watch: Annotated[bool, typer.Option("--watch", help="Follow the run until it ends.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Send again safely: the same key returns the same run.")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Trigger a run (POST /model-runs)."""
    body = _read_body(file)

    async def call(client: Client) -> int:
        run = dump(await client.trigger(body, idempotency_key=idempotency_key))
        if not watch:
            if output is OutputFormat.JSON:
                print_json(run)
            else:
                console().print(run_table(run))
            return EXIT_OK
        if output is OutputFormat.TABLE:
            console().print(f"triggered run {run['id']}", markup=False)
        return await _watch_and_report(client, run["id"], output, with_results=True)

    raise typer.Exit(_client_call(ctx, call, retry=WATCH_RETRY if watch else None))


@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")] = 20,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List runs, newest first."""

    async def call(client: Client) -> list[dict[str, Any]]:
        return [
            dump(run) async for run in client.list(status=status, page_size=min(limit, 1000), limit=limit)
        ]

    runs = _client_call(ctx, call)
    if output is OutputFormat.JSON:
        print_json(runs)
    else:
        console().print(runs_table(runs))


@runs_app.command("get")
def runs_get(ctx: typer.Context, run_id: RunId, output: OutputOption = OutputFormat.TABLE) -> None:
    """One run."""

    async def call(client: Client) -> dict[str, Any]:
        return dump(await client.get(run_id))

    run = _client_call(ctx, call)
    if output is OutputFormat.JSON:
        print_json(run)
    else:
        console().print(run_table(run))


@runs_app.command("steps")
def runs_steps(ctx: typer.Context, run_id: RunId, output: OutputOption = OutputFormat.TABLE) -> None:
    """A run's steps, in definition order."""

    async def call(client: Client) -> list[dict[str, Any]]:
        return [dump(step) for step in await client.steps(run_id)]

    steps = _client_call(ctx, call)
    if output is OutputFormat.JSON:
        print_json(steps)
    else:
        console().print(steps_table(steps))


@runs_app.command("results")
def runs_results(
    ctx: typer.Context,
    run_id: RunId,
    step: Annotated[str, typer.Argument(help="The step's name or id.")],
    status: Annotated[TestStatus | None, typer.Option(help="Only results in this status.")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """A step's test results, every attempt, in the order reported."""

    async def call(client: Client) -> list[dict[str, Any]]:
        steps = await client.steps(run_id)
        match = next((s for s in steps if step in (s.id, s.name)), None)
        if match is None:
            raise CliError(f"run {run_id} has no step {step!r}")
        return [dump(result) async for result in client.test_results(run_id, match.id, status=status)]

    results = _client_call(ctx, call)
    if output is OutputFormat.JSON:
        print_json(results)
    else:
        console().print(results_table(results))


@runs_app.command("cancel")
def runs_cancel(ctx: typer.Context, run_id: RunId, output: OutputOption = OutputFormat.TABLE) -> None:
    """Ask a run to stop; it ends `cancelled` (a finished run stays as it is)."""

    async def call(client: Client) -> dict[str, Any]:
        return dump(await client.cancel(run_id))

    run = _client_call(ctx, call)
    if output is OutputFormat.JSON:
        print_json(run)
    else:
        console().print(run_table(run))


@runs_app.command("watch")
def runs_watch(
    ctx: typer.Context,
    run_id: RunId,
    results: Annotated[bool, typer.Option("--results/--no-results", help="Show test results too.")] = True,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Follow a run live until it ends; exit 0 when it succeeded, 1 otherwise."""
    raise typer.Exit(
        _client_call(ctx, lambda c: _watch_and_report(c, run_id, output, results), retry=WATCH_RETRY)
    )


# -- demo ---------------------------------------------------------------------------------------


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def demo_settings(settings: Settings) -> Settings:
    """The demo's own process may run the bundled examples, commands included, on the default pool."""
    port = settings.http_port if "http_port" in settings.model_fields_set else free_port(settings.http_host)
    allow = settings.worker_python_allow
    pools = settings.worker_pools
    return override(
        settings,
        http_port=port,
        url=f"http://{client_host(settings.http_host)}:{port}",
        worker_allow_commands=True,
        worker_python_allow=allow if "examples." in allow else (*allow, "examples."),
        worker_pools=pools if "default" in pools else (*pools, "default"),
    )


def demo_pipeline() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(resources.files("examples").joinpath(DEMO_PIPELINE).read_text("utf-8"))
    # The demo's worker runs in this process: its command children use this interpreter, which
    # has the examples' packages, whatever `python` the PATH would find.
    for step in body["steps"]:
        argv = step.get("params", {}).get("argv")
        if step["kind"] == "command" and argv and argv[0] == "python":
            argv[0] = sys.executable
    return body


async def _until_ready(client: Client, services: Services) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not await client.ready():
        problem = services.first_problem()
        if problem:
            raise CliError(problem)
        if time.monotonic() > deadline:
            raise CliError(f"the gateway at {client.url} was not ready within {READY_TIMEOUT_SECONDS:.0f}s")
        await asyncio.sleep(0.2)


async def _demo_run(client: Client, services: Services, out: Console) -> int:
    await _until_ready(client, services)
    run = dump(await client.trigger(demo_pipeline()))
    out.print(f"triggered run {run['id']} ({DEMO_PIPELINE}); the API is at {client.url}", markup=False)
    watcher = asyncio.create_task(watch_run(client, run["id"], out))
    interrupted = asyncio.create_task(services.stop.wait())
    try:
        await asyncio.wait(
            [watcher, interrupted, *services.tasks.values()],
            timeout=DEMO_TIMEOUT_SECONDS,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        interrupted.cancel()
        if not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    if watcher.cancelled():
        problem = services.first_problem()
        if problem is None and services.stop.is_set():
            raise CliError(f"interrupted; run {run['id']} goes on when the services start again", 130)
        raise CliError(problem or f"the run did not finish within {DEMO_TIMEOUT_SECONDS:.0f}s")
    view = watcher.result()
    print_outcome(out, view)
    return exit_for(view.run)


async def demo_main(settings: Settings, out: Console) -> int:
    from shared import apikeys
    from shared.db import migrate
    from shared.db.pool import create_pool

    await migrate.upgrade(settings.owner_url)
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    services: Services | None = None
    key: str | None = None
    try:
        key = await apikeys.create_key(pool, DEMO_TENANT, [s.value for s in Scope])
        services = Services(settings, ("gateway", "orchestrator", "worker"), asyncio.Event())
        remove = install_signals(services)
        try:
            services.start()
            async with client_of(settings, key, retry=WATCH_RETRY) as client:
                code = await _demo_run(client, services, out)
        finally:
            problems = await services.shutdown()
            remove()
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        return code if not problems else EXIT_FAILED
    finally:
        if key is not None:
            # The key was this process's alone; `modelruns api-keys create --tenant demo` makes one to look around.
            await apikeys.revoke_key(pool, key)
        await pool.close()


@app.command()
def demo(ctx: typer.Context) -> None:
    """Run the iris pipeline end to end in this process and show it live; exit 0 when it succeeded."""
    loaded = settings_of(ctx)
    configure_logs(loaded, quiet=True)
    settings = demo_settings(loaded)
    raise typer.Exit(run_async(demo_main(settings, console())))


# ---------------------------------------------------------------------------------------------


def exit_code_of(exc: ModelRunsError) -> int:
    if isinstance(exc, CliError):
        return exc.exit_code
    if isinstance(exc, TransportError):
        return EXIT_UNREACHABLE
    return EXIT_CONFIG if isinstance(exc, ConfigurationError) else EXIT_FAILED


def main() -> None:
    """The console script: errors of modelruns itself end as one line on stderr, never a traceback."""
    try:
        app()
    except ModelRunsError as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exit_code_of(exc))
