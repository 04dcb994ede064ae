"""The gateway's Prometheus metrics, on a registry of its own (one per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelruns_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelruns_http_request_duration_seconds",
            "Time to answer an HTTP request (an event stream counts until its headers are sent).",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Counted in a plain int and read when scraped: a Gauge's inc and dec take a lock each.
        self.in_flight = 0
        Gauge(
            "modelruns_http_requests_in_flight", "HTTP requests being answered.", registry=self.registry
        ).set_function(lambda: self.in_flight)
        # Each label set's children, found once: labels() validates and locks on every call.
        self._answers: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.event_streams = Gauge(
            "modelruns_event_streams_open", "Open server-sent event streams.", registry=self.registry
        )
        self.runs_triggered = Counter(
            "modelruns_runs_triggered",
            "Runs created by a trigger (replays not counted).",
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "modelruns_idempotent_replays", "Triggers answered with an earlier run.", registry=self.registry
        )
        self.cancels = Counter(
            "modelruns_cancels_requested", "Cancels that moved a run to cancelling.", registry=self.registry
        )
        self.rate_limited = Counter(
            "modelruns_rate_limited",
            "Calls refused by a rate limit, by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "modelruns_auth_failures", "Calls refused with 401.", registry=self.registry
        )

    def answered(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """One answer: counted by method, route template and status, and timed when `seconds`."""
        if method not in METHODS:
            # Any token is a method to aiohttp; the label set stays bounded.
            method = "other"
        key = (method, route, status)
        children = self._answers.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            self._answers[key] = children
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
