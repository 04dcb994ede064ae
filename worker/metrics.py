"""The worker's Prometheus metrics, read from its state at each scrape (served on
MODELRUNS_OPS_PORT by the shared ops server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from worker.service import Worker

OUTCOMES = ("succeeded", "failed", "cancelled")
DISPATCH_RESULTS = ("accepted", "requeued", "duplicate", "invalid")


class WorkerCollector(Collector):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        gauges = (
            ("modelruns_worker_slots", "Step slots of this worker.", worker.capacity),
            ("modelruns_worker_slots_busy", "Slots taken by a running (or stopping) step.", worker.busy),
            ("modelruns_worker_consuming", "1 while the worker takes dispatches.", int(worker.consuming)),
            (
                "modelruns_worker_broker_up",
                "1 while the broker connection is up.",
                int(worker.broker.up_for() > 0),
            ),
            (
                "modelruns_worker_events_pending",
                "Worker events not yet confirmed by the broker.",
                worker.publisher.pending,
            ),
        )
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        yield CounterMetricFamily(
            "modelruns_worker_events_published",
            "Worker events confirmed by the broker.",
            value=worker.publisher.published,
        )
        steps = CounterMetricFamily(
            "modelruns_worker_steps", "Attempts finished on this worker, by outcome.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            steps.add_metric([outcome], worker.steps_total[outcome])
        yield steps
        dispatches = CounterMetricFamily(
            "modelruns_worker_dispatches",
            "Dispatches received, by what became of them.",
            labels=["result"],
        )
        for result in DISPATCH_RESULTS:
            dispatches.add_metric([result], worker.dispatches_total[result])
        yield dispatches


def worker_registry(worker: Worker) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(worker))
    registry.register(worker.consumer_lag)
    return registry
