"""The dashboard in real headless Chromium (Debian's `chromium`), driven by Playwright, against
`modelruns up` in a subprocess (the e2e stack). Screenshots go to test-artifacts/browser/.

Playwright never downloads a browser here: it launches the system's Chromium. Without one the
tests fail, saying so: CI installs it (.ci/run), and a passing suite must have run them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, async_playwright

from tests.browser.pages import WIDE, Watched
from tests.e2e import conftest as e2e

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
NEEDS_CHROMIUM = (
    f"the browser tests (tests/browser) need Chromium at {CHROMIUM}: "
    "apt-get install chromium (.ci/run installs it when missing)"
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The e2e stack and its keys and client, one stack for this directory's module.
stack = e2e.stack
keys = e2e.keys
session = e2e.session
api = e2e.api


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(NEEDS_CHROMIUM)
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(chromium),
            headless=True,
            args=ARGS,
            viewport=WIDE,
        )
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def tab(browser: BrowserContext) -> AsyncIterator[Watched]:
    """A new tab: its session storage starts empty, so it starts signed out."""
    page = await browser.new_page()
    page.set_default_timeout(10_000)
    watched = Watched(page)
    try:
        yield watched
    finally:
        await page.close()
    # CSP violations and script errors surface as console errors.
    assert watched.problems == []
