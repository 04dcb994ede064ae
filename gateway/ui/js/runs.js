// The runs table: newest first, filtered by status, paged with the API's page tokens, and
// refreshed while it is on screen so that rows follow their runs.

import { get, sleep } from "./api.js";
import { countsText, elapsed, formatDuration, h, replace, shortId, statusBadge, TERMINAL_RUN, time } from "./dom.js";

const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
const PAGE_SIZE = 25;
// There is no stream of a tenant's runs, so the page being looked at is read again: often while
// a run on it moves, rarely once all are finished.
const ACTIVE_REFRESH_MS = 2000;
const IDLE_REFRESH_MS = 5000;

export function showRuns(main, { query }, context) {
  const status = STATUSES.includes(query.get("status")) ? query.get("status") : "";
  const tokens = [null]; // the token of each page seen so far; the last one is on screen
  const filter = h(
    "select",
    { id: "status-filter", onchange: () => (window.location.hash = filter.value ? `#/runs?status=${filter.value}` : "#/runs") },
    h("option", { value: "" }, "all"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)),
  );
  const body = h("tbody");
  const table = h(
    "table",
    { class: "runs" },
    h("caption", { class: "visually-hidden" }, "Model runs, newest first"),
    h(
      "thead",
      {},
      h("tr", {}, ["Model", "Status", "Steps done", "Tests passed", "Created", "Duration"].map((c) => h("th", { scope: "col" }, c))),
    ),
    body,
  );
  const newer = h("button", { type: "button", onclick: () => turn(-1) }, "← Newer");
  const older = h("button", { type: "button", onclick: () => turn(1) }, "Older →");
  const where = h("span", { class: "muted" });
  const problem = h("div");
  main.append(
    h("div", { class: "heading" }, h("h1", { tabindex: "-1" }, "Runs"), h("label", { class: "filter" }, "Status ", filter)),
    problem,
    h("div", { class: "table-wrap" }, table),
    h("nav", { class: "pager", "aria-label": "Pages of runs" }, newer, where, older),
  );

  newer.disabled = older.disabled = true;
  body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "Loading…")));
  let nextToken = null;
  let wake = null; // ends the wait for the next refresh early, when the page is turned

  function turn(step) {
    if (step > 0 && nextToken) tokens.push(nextToken);
    if (step < 0 && tokens.length > 1) tokens.pop();
    wake?.abort();
  }

  function render(runs) {
    replace(
      body,
      runs.length
        ? runs.map(row)
        : h("tr", {}, h("td", { colspan: 6, class: "muted" }, status ? `No ${status} runs.` : "No runs yet.")),
    );
    newer.disabled = tokens.length === 1;
    older.disabled = !nextToken;
    where.textContent = `page ${tokens.length}`;
  }

  async function loop() {
    while (!context.signal.aborted) {
      let active = false;
      try {
        const page = await get("/model-runs", {
          signal: context.signal,
          query: { max_results: PAGE_SIZE, status, page_token: tokens.at(-1) },
        });
        nextToken = page.next_page_token;
        render(page.model_runs);
        replace(problem);
        active = page.model_runs.some((run) => !TERMINAL_RUN.has(run.status));
      } catch (error) {
        if (context.signal.aborted) return;
        context.fail(error, problem);
        if (error.status === 401) return;
      }
      wake = new AbortController();
      const both = AbortSignal.any([context.signal, wake.signal]);
      try {
        await sleep(active ? ACTIVE_REFRESH_MS : IDLE_REFRESH_MS, both);
      } catch {
        // woken: turned page or left the view
      }
    }
  }
  loop();
}

function row(run) {
  const model = run.model ?? {};
  return h(
    "tr",
    { "data-run-id": run.id },
    h(
      "td",
      { "data-label": "Model" },
      h("a", { href: `#/runs/${run.id}` }, model.name ?? "(unnamed)"),
      model.version ? h("span", { class: "version" }, ` ${model.version}`) : null,
      h("div", { class: "muted small" }, shortId(run.id)),
    ),
    h("td", { "data-label": "Status" }, statusBadge(run.status)),
    h("td", { "data-label": "Steps done" }, countsText(run.step_counts, "succeeded", ["failed"])),
    h("td", { "data-label": "Tests passed" }, run.test_counts.total ? countsText(run.test_counts, "passed", ["failed", "error"]) : "—"),
    h("td", { "data-label": "Created" }, time(run.created_at)),
    h("td", { "data-label": "Duration" }, formatDuration(elapsed(run.started_at, run.finished_at))),
  );
}
