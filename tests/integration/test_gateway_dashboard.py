"""The dashboard's files as the gateway serves them: under /ui/, with the CSP on every answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway import dashboard
from tests.integration.gateway_helpers import Gateway, broker_down_settings, running_gateway


@pytest.fixture
async def gw(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[Gateway]:
    async with running_gateway(broker_down_settings(db_url), pool) as gateway:
        yield gateway


async def test_the_dashboard_is_served_with_a_policy_of_its_own_origin_only(gw: Gateway) -> None:
    moved = await gw.client.get("/ui", allow_redirects=False)
    assert moved.status == 308
    assert moved.headers["Location"] == "/ui/"

    for path, content_type in (
        ("/ui/", "text/html"),
        ("/ui/app.css", "text/css"),
        ("/ui/js/main.js", "javascript"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ):
        answer = await gw.client.get(path)
        assert answer.status == 200, path
        assert content_type in answer.headers["Content-Type"], (path, answer.headers["Content-Type"])
        assert answer.headers["Content-Security-Policy"] == dashboard.CONTENT_SECURITY_POLICY
        assert answer.headers["X-Content-Type-Options"] == "nosniff"

    missing = await gw.client.get("/ui/js/nothing.js")
    assert missing.status == 404
    assert missing.headers["Content-Security-Policy"] == dashboard.CONTENT_SECURITY_POLICY

    api = await gw.get("/model-runs")
    assert api.status == 200
    assert "Content-Security-Policy" not in api.headers


def test_the_policy_allows_this_origin_and_nothing_inline() -> None:
    directives = dict(d.split(" ", 1) for d in dashboard.CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    for name in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in dashboard.CONTENT_SECURITY_POLICY
