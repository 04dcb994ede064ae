// One run: its step graph, facts, labels and parameters, the timeline of its events and a Cancel
// button. After one read of the run and its steps, everything comes from the event stream.

import { ApiError, call, explain, get, session, sleep, streamEvents } from "./api.js";
import { elapsed, formatDuration, h, replace, statusBadge, TERMINAL_RUN, time } from "./dom.js";
import { stepGraph } from "./graph.js";

// Run statuses only move forward in this order, so a cancel's answer is never undone by an
// older event that arrives after it.
const RANK = { queued: 0, running: 1, cancelling: 2, succeeded: 3, failed: 3, cancelled: 3 };
const STEP_STATUSES = ["pending", "queued", "running", "succeeded", "failed", "cancelled", "skipped"];
const TEST_STATUSES = ["passed", "failed", "error", "skipped"];
const MAX_TEST_ENTRIES = 500;
// Events named for a move take the colour of where it leads.
const COLOUR = { started: "running", retrying: "queued" };

export async function showRun(main, { runId }, context) {
  const base = `/model-runs/${encodeURIComponent(runId)}`;
  let run;
  let steps;
  try {
    [run, steps] = await Promise.all([
      get(base, { signal: context.signal }),
      get(`${base}/steps`, { signal: context.signal }).then((body) => body.steps),
    ]);
  } catch (error) {
    context.fail(error);
    return;
  }
  if (context.signal.aborted) return;

  const state = {
    run,
    steps: new Map(steps.map((step) => [step.id, step])),
    // step id → attempt → status → count, from test_result events (the stream starts at the
    // run's first event, so these are complete once it has caught up)
    results: new Map(),
    streamed: false,
    lastEventId: 0,
  };

  const badge = h("span");
  const cancelButton = h("button", { type: "button", class: "danger", id: "cancel", onclick: cancel }, "Cancel run");
  const cancelMessage = h("p", { class: "error", role: "alert", hidden: true });
  const live = h("span", { class: "live muted", role: "status" });
  const facts = h("dl", { class: "facts" });
  const graph = stepGraph(run.id, steps);
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const showTests = h("input", {
    type: "checkbox",
    id: "show-tests",
    onchange: () => timeline.classList.toggle("with-tests", showTests.checked),
  });
  let testEntries = 0;
  const testOverflow = h("li", { class: "test-result muted", hidden: true });

  const model = run.model ?? {};
  main.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/runs" }, "Runs"), " › ", model.name),
    h(
      "div",
      { class: "heading" },
      h("h1", { tabindex: "-1" }, model.name, model.version ? h("span", { class: "version" }, ` ${model.version}`) : null),
      badge,
      live,
      session.canWrite ? cancelButton : null,
    ),
    cancelMessage,
    facts,
    h("section", {}, h("h2", {}, "Steps"), graph.element),
    h("section", { class: "columns" }, labelsAndParameters(run)),
    h(
      "section",
      {},
      h("div", { class: "heading" }, h("h2", {}, "Events, newest first"), h("label", { class: "filter" }, showTests, " show test results")),
      timeline,
    ),
  );

  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      render();
    });
  }

  function render() {
    const current = state.run;
    replace(badge, statusBadge(current.status));
    badge.dataset.status = current.status;
    cancelButton.hidden = current.status !== "queued" && current.status !== "running";
    const stepList = [...state.steps.values()];
    const stepCounts = { total: stepList.length };
    for (const status of STEP_STATUSES) stepCounts[status] = stepList.filter((s) => s.status === status).length;
    const tests = testCounts(stepList) ?? current.test_counts;
    replace(
      facts,
      fact("Run id", h("code", {}, current.id)),
      fact("Created", time(current.created_at)),
      fact("Started", time(current.started_at)),
      fact("Finished", time(current.finished_at)),
      fact("Duration", formatDuration(elapsed(current.started_at, current.finished_at))),
      fact("Steps", STEP_STATUSES.filter((s) => stepCounts[s]).map((s) => `${stepCounts[s]} ${s}`).join(", ")),
      fact("Tests", tests.total ? TEST_STATUSES.filter((s) => tests[s]).map((s) => `${tests[s]} ${s}`).join(", ") : "none yet"),
      current.cancel_requested_at ? fact("Cancel requested", time(current.cancel_requested_at)) : null,
      current.error ? fact("Error", h("span", { class: "error-text" }, `${current.error.code}: ${current.error.message}`)) : null,
    );
    graph.update(stepList);
  }

  function testCounts(stepList) {
    if (!state.streamed) return null;
    const counts = { total: 0, passed: 0, failed: 0, error: 0, skipped: 0 };
    for (const step of stepList) {
      const latest = state.results.get(step.id)?.get(step.attempt);
      if (!latest) continue;
      for (const status of TEST_STATUSES) counts[status] += latest[status] ?? 0;
    }
    counts.total = TEST_STATUSES.reduce((sum, s) => sum + counts[s], 0);
    return counts;
  }

  function applyRun(next) {
    if (RANK[next.status] >= RANK[state.run.status]) state.run = next;
  }

  function apply(event) {
    const [, entity, what] = event.type.split(".");
    const data = event.data;
    state.lastEventId = event.runseq;
    state.streamed = true;
    let label;
    if (entity === "run") {
      applyRun(data);
      label = `run ${what}`;
    } else if (entity === "step") {
      state.steps.set(data.id, data);
      label = `step ${data.name} ${what}${what === "retrying" ? ` (attempt ${data.attempt})` : ""}`;
    } else if (entity === "test_result") {
      const attempts = state.results.get(data.step_id) ?? new Map();
      const counts = attempts.get(data.attempt) ?? {};
      counts[data.status] = (counts[data.status] ?? 0) + 1;
      attempts.set(data.attempt, counts);
      state.results.set(data.step_id, attempts);
      label = `test ${data.name} ${data.status}`;
    } else {
      label = event.type;
    }
    addEntry(event, entity, entity === "test_result" ? data.status : what, label);
    schedule();
  }

  function addEntry(event, entity, status, label) {
    const entry = h(
      "li",
      { class: entity === "test_result" ? "test-result" : "", "data-type": event.type },
      h("time", { datetime: event.time, title: event.time }, new Date(event.time).toLocaleTimeString()),
      " ",
      h("span", { class: `dot status-${COLOUR[status] ?? status}`, "aria-hidden": "true" }),
      " ",
      label,
    );
    if (entity === "test_result") {
      testEntries += 1;
      if (testEntries > MAX_TEST_ENTRIES) {
        testOverflow.hidden = false;
        testOverflow.textContent = `… and ${testEntries - MAX_TEST_ENTRIES} more test results: open the step to see them all.`;
        timeline.prepend(testOverflow);
        return;
      }
    }
    timeline.prepend(entry);
  }

  async function cancel() {
    cancelButton.disabled = true;
    cancelMessage.hidden = true;
    try {
      applyRun(await call("POST", `${base}/cancel`, { signal: context.signal }));
      render();
    } catch (error) {
      if (context.signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) return context.unauthorized(error);
      cancelMessage.textContent = explain(error);
      cancelMessage.hidden = false;
    } finally {
      cancelButton.disabled = false;
    }
  }

  async function follow() {
    let backoff = 1;
    while (!context.signal.aborted) {
      live.textContent = "● live";
      try {
        await streamEvents(run.id, { lastEventId: state.lastEventId, signal: context.signal, onEvent: apply });
        backoff = 1;
        if (TERMINAL_RUN.has(state.run.status)) break;
        await sleep(1000, context.signal); // ended early (a gateway going away): resume after the last event
      } catch (error) {
        if (context.signal.aborted) return;
        if (error instanceof ApiError && [401, 403, 404].includes(error.status)) {
          if (error.status === 401) return context.unauthorized(error);
          live.textContent = explain(error);
          return;
        }
        const wait = error instanceof ApiError && error.status === 429 ? error.retryAfter : backoff;
        live.textContent = `live updates interrupted; reconnecting in ${wait} s`;
        backoff = Math.min(backoff * 2, 30);
        try {
          await sleep(wait * 1000, context.signal);
        } catch {
          return;
        }
      }
    }
    live.textContent = "";
  }

  // Durations of what is still running grow without any message saying so.
  const ticker = setInterval(() => {
    if (!TERMINAL_RUN.has(state.run.status)) schedule();
  }, 1000);
  context.signal.addEventListener("abort", () => clearInterval(ticker), { once: true });

  render();
  follow();
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}

function labelsAndParameters(run) {
  const labels = Object.entries(run.labels ?? {});
  return [
    h(
      "div",
      {},
      h("h2", {}, "Labels"),
      labels.length
        ? h("dl", { class: "labels" }, labels.map(([key, value]) => fact(key, value)))
        : h("p", { class: "muted" }, "none"),
    ),
    h(
      "div",
      {},
      h("h2", {}, "Parameters"),
      Object.keys(run.parameters ?? {}).length
        ? h("pre", { class: "json" }, JSON.stringify(run.parameters, null, 2))
        : h("p", { class: "muted" }, "none"),
    ),
  ];
}
