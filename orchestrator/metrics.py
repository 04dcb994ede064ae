"""The orchestrator's Prometheus metrics (served on MODELRUNS_OPS_PORT), and how the public facts
of each committed change move them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from orchestrator.change import Change
from orchestrator.reconciler import REPAIR_KINDS
from shared.ops import lag_histogram

# Steps last from milliseconds (synthetic) to hours (training).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
RUN_ENDINGS = ("succeeded", "failed", "cancelled")
STEP_ENDINGS = ("succeeded", "failed", "cancelled", "skipped")


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def _seconds(start: Any, end: Any) -> float | None:
    began, ended = _time(start), _time(end)
    if began is None or ended is None:
        return None
    return max(0.0, (ended - began).total_seconds())


class OrchestratorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "modelruns_events_recorded",
            "Public facts recorded, by CloudEvent type.",
            ["type"],
            registry=self.registry,
        )
        self.messages = Counter(
            "modelruns_messages_consumed",
            "Messages consumed, by queue and outcome.",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.repairs = Counter(
            "modelruns_reconciler_repairs",
            "Repairs made by the reconciler, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "modelruns_outbox_depth", "Messages waiting in the outbox.", registry=self.registry
        )
        self.outbox_oldest = Gauge(
            "modelruns_outbox_oldest_seconds",
            "Age of the oldest message waiting in the outbox.",
            registry=self.registry,
        )
        self.published = Gauge(
            "modelruns_outbox_published",
            "Messages this process published and saw confirmed.",
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "modelruns_runs_finished",
            "Runs that reached a terminal status, by status.",
            ["status"],
            registry=self.registry,
        )
        self.steps_finished = Counter(
            "modelruns_steps_finished",
            "Steps that reached a terminal status, by status and kind.",
            ["status", "kind"],
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "modelruns_step_duration_seconds",
            "From a step's last start to its end, by terminal status and kind (skipped steps never start).",
            ["status", "kind"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.dispatch_latency = Histogram(
            "modelruns_dispatch_latency_seconds",
            "From a step attempt being queued for its pool to a worker's start being recorded, by pool.",
            ["pool"],
            buckets=DISPATCH_BUCKETS,
            registry=self.registry,
        )
        self.consumer_lag = lag_histogram(self.registry)
        # Series that exist from the start, at zero: a rate over them needs no special case.
        for status in RUN_ENDINGS:
            self.runs_finished.labels(status)
        for kind in REPAIR_KINDS:
            self.repairs.labels(kind)

    def observe(self, change: Change) -> None:
        """Count the public facts of a committed change."""
        for fact in change.events:
            self.events.labels(fact.type).inc()
            _, entity, event = fact.type.split(".", 2)
            data: dict[str, Any] = fact.body["data"]
            if entity == "run" and event in RUN_ENDINGS:
                self.runs_finished.labels(event).inc()
            elif entity == "step" and event in STEP_ENDINGS:
                kind = str(data.get("kind", ""))
                self.steps_finished.labels(event, kind).inc()
                duration = _seconds(data.get("started_at"), data.get("finished_at"))
                if duration is not None:
                    self.step_duration.labels(event, kind).observe(duration)
            elif entity == "step" and event == "started":
                # A retry is queued at once but due only after its backoff: latency counts from then.
                step = change.by_name.get(str(data.get("name")))
                due = _time(data.get("queued_at"))
                if due is not None and step is not None and step.not_before is not None:
                    due = max(due, step.not_before)
                latency = _seconds(due, data.get("started_at"))
                if latency is not None:
                    self.dispatch_latency.labels(str(data.get("pool", ""))).observe(latency)
