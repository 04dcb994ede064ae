"""The gateway's request metrics: what one answer adds, and a label set that stays bounded."""

from __future__ import annotations

import pytest

from gateway.metrics import GatewayMetrics


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_an_answer_is_counted_and_timed_under_its_labels() -> None:
    metrics = GatewayMetrics()
    metrics.answered("GET", "/model-runs/{runId}", 200, 0.003)
    metrics.answered("GET", "/model-runs/{runId}", 200, 0.020)
    metrics.answered("GET", "/model-runs/{runId}", 404, 0.001)
    labels = {"method": "GET", "route": "/model-runs/{runId}"}
    assert sample(metrics, "modelruns_http_requests_total", **labels, status="200") == 2
    assert sample(metrics, "modelruns_http_requests_total", **labels, status="404") == 1
    assert sample(metrics, "modelruns_http_request_duration_seconds_count", **labels) == 3
    assert sample(metrics, "modelruns_http_request_duration_seconds_bucket", **labels, le="0.005") == 2
    assert sample(metrics, "modelruns_http_request_duration_seconds_sum", **labels) == pytest.approx(0.024)


def test_an_answer_without_a_start_is_counted_but_not_timed() -> None:
    metrics = GatewayMetrics()
    metrics.answered("POST", "unmatched", 400, None)
    assert (
        sample(metrics, "modelruns_http_requests_total", method="POST", route="unmatched", status="400") == 1
    )
    timed = sample(metrics, "modelruns_http_request_duration_seconds_count", method="POST", route="unmatched")
    assert not timed


@pytest.mark.parametrize("method", ["FOO", "BREW", "get", "PROPFIND"])
def test_a_method_outside_http_s_own_is_labelled_other(method: str) -> None:
    metrics = GatewayMetrics()
    metrics.answered(method, "/model-runs", 405, 0.001)
    assert (
        sample(metrics, "modelruns_http_requests_total", method="other", route="/model-runs", status="405")
        == 1
    )
    assert (
        sample(metrics, "modelruns_http_requests_total", method=method, route="/model-runs", status="405")
        is None
    )


def test_the_in_flight_gauge_reads_the_count_when_scraped() -> None:
    metrics = GatewayMetrics()
    assert sample(metrics, "modelruns_http_requests_in_flight") == 0
    metrics.in_flight += 3
    assert sample(metrics, "modelruns_http_requests_in_flight") == 3
    metrics.in_flight -= 3
    assert b"modelruns_http_requests_in_flight 0.0" in metrics.render()
