// A step's test results: failed and errored first, then passed and skipped, a page at a time.
// The API lists one status in report order, so "all" walks the statuses in that order; the
// position of a page is (which status, that status's page token).

import { get } from "./api.js";
import { formatDuration, h, replace, statusBadge } from "./dom.js";

const ORDER = ["failed", "error", "passed", "skipped"];
const PAGE_SIZE = 100;

export async function showResults(main, { runId, stepId, query }, context) {
  const chosen = ORDER.includes(query.get("status")) ? query.get("status") : "";
  const statuses = chosen ? [chosen] : ORDER;
  const base = `/model-runs/${encodeURIComponent(runId)}`;
  let run;
  let step;
  try {
    const [found, list] = await Promise.all([get(base, { signal: context.signal }), get(`${base}/steps`, { signal: context.signal })]);
    run = found;
    step = list.steps.find((s) => s.id === stepId);
  } catch (error) {
    context.fail(error);
    return;
  }
  if (context.signal.aborted) return;
  if (!step) {
    replace(main, h("p", { class: "error", role: "alert" }, "Not found (404): this run has no such step."));
    return;
  }

  const href = (status) => `#/runs/${runId}/steps/${stepId}${status ? `?status=${status}` : ""}`;
  const filter = h(
    "select",
    { id: "result-filter", onchange: () => (window.location.hash = href(filter.value)) },
    h("option", { value: "" }, "all (failed and errors first)"),
    ORDER.map((s) => h("option", { value: s, selected: s === chosen }, s)),
  );
  const body = h("tbody");
  const previous = h("button", { type: "button", onclick: () => turn(-1) }, "← Previous");
  const next = h("button", { type: "button", onclick: () => turn(1) }, "Next →");
  const where = h("span", { class: "muted" });
  const problem = h("div");
  const refresh = h("button", { type: "button", onclick: () => load() }, "Refresh");
  const counts = step.test_counts;
  const model = run.model ?? {};

  main.append(
    h(
      "nav",
      { class: "crumbs", "aria-label": "Breadcrumb" },
      h("a", { href: "#/runs" }, "Runs"),
      " › ",
      h("a", { href: `#/runs/${runId}` }, model.name),
      " › ",
      step.name,
    ),
    h("div", { class: "heading" }, h("h1", { tabindex: "-1" }, step.name), statusBadge(step.status), refresh),
    h(
      "p",
      { class: "muted" },
      `${step.kind} step · attempt ${step.attempt}/${step.max_attempts} · `,
      counts.total
        ? `latest attempt: ${counts.total} results, ${counts.failed} failed, ${counts.error} errors, ${counts.passed} passed, ${counts.skipped} skipped`
        : "no test results in its latest attempt",
      step.error ? ` · ${step.error.code}: ${step.error.message}` : "",
    ),
    h("div", { class: "heading" }, h("h2", {}, "Test results"), h("label", { class: "filter" }, "Status ", filter)),
    problem,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "results" },
        h("thead", {}, h("tr", {}, ["Status", "Name", "Attempt", "Duration", "Message", "Metrics"].map((c) => h("th", { scope: "col" }, c)))),
        body,
      ),
    ),
    h("nav", { class: "pager", "aria-label": "Pages of test results" }, previous, where, next),
  );

  // positions[i] is where page i starts; the last entry is where the page after this one starts
  const positions = [{ index: 0, token: null }];
  let page = 0;

  async function turn(step) {
    page = Math.max(0, page + step);
    await load();
  }

  async function load() {
    previous.disabled = next.disabled = true;
    try {
      let { index, token } = positions[page];
      const rows = [];
      while (rows.length < PAGE_SIZE && index < statuses.length) {
        const answer = await get(`${base}/steps/${encodeURIComponent(stepId)}/test-results`, {
          signal: context.signal,
          query: { status: statuses[index], max_results: PAGE_SIZE - rows.length, page_token: token },
        });
        rows.push(...answer.test_results);
        token = answer.next_page_token;
        if (!token) index += 1;
      }
      positions[page + 1] = { index, token };
      positions.length = page + 2;
      replace(body, rows.length ? rows.map(row) : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No test results here.")));
      const first = page * PAGE_SIZE + 1;
      where.textContent = rows.length ? `results ${first}–${first + rows.length - 1}` : "";
      previous.disabled = page === 0;
      next.disabled = index >= statuses.length;
      replace(problem);
    } catch (error) {
      context.fail(error, problem);
    }
  }
  await load();
}

function row(result) {
  const metrics = Object.entries(result.metrics ?? {});
  return h(
    "tr",
    { "data-status": result.status },
    h("td", { "data-label": "Status" }, statusBadge(result.status)),
    h("td", { "data-label": "Name", class: "name" }, result.name),
    h("td", { "data-label": "Attempt" }, result.attempt),
    h("td", { "data-label": "Duration" }, result.duration_ms === null ? "—" : formatDuration(result.duration_ms)),
    h("td", { "data-label": "Message", class: "message" }, result.message ?? ""),
    h(
      "td",
      { "data-label": "Metrics" },
      metrics.length ? h("ul", { class: "metrics" }, metrics.map(([k, v]) => h("li", {}, h("span", { class: "muted" }, `${k} `), formatMetric(v)))) : "",
    ),
  );
}

function formatMetric(value) {
  return typeof value === "number" && !Number.isInteger(value) ? String(Number(value.toPrecision(4))) : JSON.stringify(value);
}
