"""The dashboard as a person uses it, in headless Chromium against a real `modelruns up`."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from playwright.async_api import Route, expect

from tests.browser.pages import NARROW, WIDE, Watched, fits_width, screenshot, sign_in
from tests.e2e.conftest import Api, Stack, create_key
from tests.waiting import eventually


def synthetic(name: str, *deps: str, **params: Any) -> dict[str, Any]:
    return {"name": name, "kind": "synthetic", "params": params, "depends_on": list(deps)}


def body(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": {"name": "iris-classifier", "version": "1.4.0"}, "steps": list(steps), **extra}


async def test_a_wrong_key_is_told_plainly_and_a_good_one_signs_in(
    tab: Watched, stack: Stack, keys: dict[str, str]
) -> None:
    page = tab.page
    await page.goto(stack.url + "/ui/")
    await page.get_by_label("API key").fill("mr_not-a-key-anyone-made")
    await page.get_by_role("button", name="Sign in").click()
    error = page.locator("#signin-error")
    await expect(error).to_contain_text("not accepted (401)")
    await screenshot(page, "sign-in-wrong-key")

    writer = await asyncio.to_thread(create_key, stack.env, "acme", "runs:write")
    await page.get_by_label("API key").fill(writer)
    await page.keyboard.press("Enter")
    await expect(error).to_contain_text("lacks the scope runs:read")

    await sign_in(page, stack.url, keys["acme"])
    await expect(page.locator("#account")).to_contain_text("read and write")
    assert await page.evaluate("sessionStorage.getItem('modelruns.apiKey')") == keys["acme"]
    assert keys["acme"] not in page.url

    await page.goto(f"{stack.url}/ui/#/runs/00000000-0000-0000-0000-000000000000")
    await expect(page.get_by_role("alert")).to_contain_text("Not found (404)")


async def test_a_run_and_the_runs_table_are_watched_to_succeeded_without_a_reload(
    tab: Watched, stack: Stack, api: Api
) -> None:
    page = tab.page
    run = await api.trigger(
        body(
            synthetic("prepare", duration_seconds=2),
            synthetic("train", "prepare", duration_seconds=2),
            synthetic("lint", "prepare", results=[{"name": "style", "status": "passed"}]),
            synthetic(
                "evaluate",
                "train",
                "lint",
                results=[{"name": "accuracy >= 0.9", "status": "passed", "metrics": {"accuracy": 0.953}}],
            ),
            labels={"team": "vision"},
            parameters={"dataset": "iris"},
        )
    )
    await sign_in(page, stack.url, api.key)
    row = page.locator(f"tr[data-run-id='{run['id']}']")
    await expect(row).to_be_visible()
    await screenshot(page, "runs")

    # Into the run with the keyboard: focus its link, press Enter.
    await row.get_by_role("link", name="iris-classifier").focus()
    await page.keyboard.press("Enter")
    await page.evaluate("window.stillThisDocument = true")
    badge = page.locator(".heading [data-status]")
    await expect(badge).to_have_attribute("data-status", "running", timeout=15_000)
    await expect(page.locator(".node[data-step='prepare']")).to_contain_text("worker")
    await expect(badge).to_have_attribute("data-status", "succeeded", timeout=30_000)

    nodes = page.locator(".node")
    await expect(nodes).to_have_count(4)
    for name in ("prepare", "train", "lint", "evaluate"):
        await expect(page.locator(f".node[data-step='{name}']")).to_have_attribute("data-status", "succeeded")
    # Left to right in dependency order; the two branches share a column.
    x = {}
    for name in ("prepare", "train", "lint", "evaluate"):
        box = await page.locator(f".node[data-step='{name}']").bounding_box()
        assert box is not None
        x[name] = box["x"]
    assert x["prepare"] < x["train"] == x["lint"] < x["evaluate"]
    timeline = page.locator("#timeline")
    await expect(timeline).to_contain_text("run started")
    await expect(timeline).to_contain_text("step evaluate succeeded")
    await expect(timeline).to_contain_text("run succeeded")
    await expect(page.locator(".facts")).to_contain_text("2 passed")
    await expect(page.locator(".labels")).to_contain_text("vision")
    await screenshot(page, "run")

    # Back to the table, where a new run appears and finishes by itself.
    await page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="Runs").click()
    second = await api.trigger(body(synthetic("smoke")))
    row = page.locator(f"tr[data-run-id='{second['id']}']")
    await expect(row).to_be_visible(timeout=15_000)
    await expect(row.locator(".status")).to_have_text("succeeded", timeout=15_000)
    assert await page.evaluate("window.stillThisDocument") is True

    await page.set_viewport_size(NARROW)
    assert await fits_width(page)
    await screenshot(page, "run-390px")
    await page.goto(stack.url + "/ui/#/runs")
    await expect(page.locator(f"tr[data-run-id='{run['id']}']")).to_be_visible()
    assert await fits_width(page)
    await screenshot(page, "runs-390px")
    await page.set_viewport_size(WIDE)


async def test_a_steps_failed_tests_come_first_and_filter(tab: Watched, stack: Stack, api: Api) -> None:
    page = tab.page
    results = [{"name": f"case {i:03d}", "status": "passed", "duration_ms": 1.5} for i in range(246)]
    results[10] = {
        "name": "accuracy >= 0.9",
        "status": "failed",
        "message": "0.81 < 0.9",
        "metrics": {"accuracy": 0.81},
    }
    results[50] = {"name": "no nulls", "status": "error", "message": "column missing"}
    results[120] = {"name": "latency p99", "status": "failed", "message": "212 ms > 200 ms"}
    results[200] = {"name": "fairness", "status": "skipped"}
    run = await api.trigger(body(synthetic("suite", results=results)))
    done = await api.wait(run["id"])
    assert done["status"] == "failed"

    await sign_in(page, stack.url, api.key)
    await page.goto(f"{stack.url}/ui/#/runs/{run['id']}")
    await page.locator(".node[data-step='suite']").click()
    rows = page.locator("table.results tbody tr")
    await expect(rows).to_have_count(100)
    first = [await rows.nth(i).get_attribute("data-status") for i in range(4)]
    assert first == ["failed", "failed", "error", "passed"]
    await expect(rows.nth(0)).to_contain_text("accuracy >= 0.9")
    await expect(rows.nth(0)).to_contain_text("0.81 < 0.9")
    await screenshot(page, "test-results")

    await page.get_by_role("button", name="Next →").click()
    await expect(page.locator(".pager")).to_contain_text("results 101\u2013200")
    await page.get_by_role("button", name="Next →").click()
    await expect(rows).to_have_count(46)  # the rest of the passed ones, then the skipped one
    await expect(rows.last).to_have_attribute("data-status", "skipped")

    await page.locator("#result-filter").select_option("failed")
    await expect(rows).to_have_count(2)
    assert "status=failed" in page.url
    for i in range(2):
        await expect(rows.nth(i)).to_have_attribute("data-status", "failed")
    await expect(page.get_by_role("button", name="Next →")).to_be_disabled()
    await screenshot(page, "test-results-failed")


async def test_a_running_run_is_cancelled_from_the_browser(
    tab: Watched, stack: Stack, api: Api, keys: dict[str, str]
) -> None:
    page = tab.page
    run = await api.trigger(body(synthetic("train", duration_seconds=120)))

    async def running() -> bool:
        return bool((await api.run(run["id"]))["status"] == "running")

    await eventually(running, timeout=15, what="the run to start")

    # A key without runs:write sees no Cancel button.
    reader = await page.context.new_page()
    await sign_in(reader, stack.url, keys["acme-read"])
    await reader.goto(f"{stack.url}/ui/#/runs/{run['id']}")
    await expect(reader.locator(".heading [data-status]")).to_have_attribute("data-status", "running")
    await expect(reader.locator("#cancel")).to_have_count(0)
    await reader.close()

    await sign_in(page, stack.url, api.key)
    await page.goto(f"{stack.url}/ui/#/runs/{run['id']}")
    badge = page.locator(".heading [data-status]")
    await expect(badge).to_have_attribute("data-status", "running")
    await page.get_by_role("button", name="Cancel run").click()
    await expect(badge).to_have_attribute("data-status", "cancelling", timeout=2_000)
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    await expect(badge).to_have_attribute("data-status", "cancelled", timeout=15_000)
    await expect(page.locator(".node[data-step='train']")).to_have_attribute("data-status", "cancelled")
    await expect(page.locator("#timeline")).to_contain_text("run cancelled")
    await screenshot(page, "run-cancelled")


async def test_a_rate_limit_answer_is_shown_and_waited_out(tab: Watched, stack: Stack, api: Api) -> None:
    page = tab.page
    await sign_in(page, stack.url, api.key)
    asked: list[float] = []

    # The gateway's own limits are set high for the suite; the page's next list call gets the
    # answer a gateway gives over its limit, and the calls after it go through.
    async def once_over_the_limit(route: Route) -> None:
        asked.append(time.monotonic())
        if len(asked) > 1:
            await route.continue_()
            return
        problem = {
            "code": "rate_limited",
            "status": 429,
            "detail": "rate limit 'default' exceeded; retry in 2 s",
        }
        await route.fulfill(
            status=429,
            headers={"Retry-After": "2", "Content-Type": "application/problem+json"},
            body=json.dumps(problem),
        )

    await page.route(re.compile(r"/model-runs\?"), once_over_the_limit)
    await page.locator("#status-filter").select_option("succeeded")
    await expect(page.locator("#notice")).to_contain_text("Too many requests (429)")
    await screenshot(page, "rate-limited")
    await expect(page.locator("#notice")).to_be_hidden(timeout=10_000)
    await expect(page.locator("table.runs tbody tr").first).to_be_visible()
    assert len(asked) >= 2
    assert asked[1] - asked[0] >= 1.9  # Retry-After was waited out
