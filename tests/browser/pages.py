"""What the browser tests do to a page: sign in, take a screenshot, check the layout."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import ConsoleMessage, Page, ViewportSize, expect

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
WIDE: ViewportSize = {"width": 1280, "height": 900}
NARROW: ViewportSize = {"width": 390, "height": 844}


class Watched:
    """A tab, and what went wrong in it that the page itself would not show."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        # An API answer of 4xx is logged by the browser itself; the page shows what it means.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def sign_in(page: Page, url: str, key: str) -> None:
    """With the keyboard: type the key, press Enter."""
    await page.goto(url + "/ui/")
    await page.get_by_label("API key").fill(key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()


async def fits_width(page: Page) -> bool:
    """Nothing makes the page itself scroll sideways (the graph scrolls inside its own box)."""
    width: int = await page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size
    return viewport is not None and width <= viewport["width"]
