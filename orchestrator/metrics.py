"""The orchestrator's Prometheus metrics (served on MODELRUNS_OPS_PORT)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


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
