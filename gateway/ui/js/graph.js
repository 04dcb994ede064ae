// The step graph: the DAG of depends_on, left to right. A step's column is the length of the
// longest chain of dependencies before it; within a column steps keep their definition order.

import { elapsed, formatDuration, h, svg } from "./dom.js";

const NODE_WIDTH = 200;
const NODE_HEIGHT = 92;
const COLUMN_GAP = 56;
const ROW_GAP = 16;

/** Pure: {name → {column, row}} for steps given in definition order. */
export function layout(steps) {
  const byName = new Map(steps.map((step) => [step.name, step]));
  const columns = new Map();
  const visiting = new Set();
  function column(step) {
    if (columns.has(step.name)) return columns.get(step.name);
    if (visiting.has(step.name)) return 0; // a cycle cannot pass validation; never loop on one
    visiting.add(step.name);
    let found = 0;
    for (const name of step.depends_on) {
      const dependency = byName.get(name);
      if (dependency) found = Math.max(found, column(dependency) + 1);
    }
    visiting.delete(step.name);
    columns.set(step.name, found);
    return found;
  }
  const rows = new Map();
  const placed = new Map();
  for (const step of steps) {
    const c = column(step);
    const r = rows.get(c) ?? 0;
    rows.set(c, r + 1);
    placed.set(step.name, { column: c, row: r });
  }
  return placed;
}

function position({ column, row }) {
  return { x: column * (NODE_WIDTH + COLUMN_GAP), y: row * (NODE_HEIGHT + ROW_GAP) };
}

/** Draws the graph once; update(steps) then changes the nodes in place, keeping focus. */
export function stepGraph(runId, steps) {
  const placed = layout(steps);
  const spots = [...placed.values()];
  const width = (Math.max(...spots.map((p) => p.column)) + 1) * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP;
  const height = (Math.max(...spots.map((p) => p.row)) + 1) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP;
  const edges = svg("svg", { class: "edges", width, height, viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true" });
  for (const step of steps) {
    const to = position(placed.get(step.name));
    for (const name of step.depends_on) {
      if (!placed.has(name)) continue;
      const from = position(placed.get(name));
      const x1 = from.x + NODE_WIDTH;
      const y1 = from.y + NODE_HEIGHT / 2;
      const x2 = to.x;
      const y2 = to.y + NODE_HEIGHT / 2;
      const bend = COLUMN_GAP / 2;
      edges.append(svg("path", { d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}` }));
    }
  }
  const canvas = h("div", { class: "graph-canvas" }, edges);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const nodes = new Map();
  for (const step of steps) {
    const { x, y } = position(placed.get(step.name));
    const node = h("a", { class: "node", href: `#/runs/${runId}/steps/${step.id}`, "data-step": step.name });
    node.style.left = `${x}px`;
    node.style.top = `${y}px`;
    node.style.width = `${NODE_WIDTH}px`;
    node.style.height = `${NODE_HEIGHT}px`;
    canvas.append(node);
    nodes.set(step.id, node);
  }
  const element = h("div", { class: "graph", role: "group", "aria-label": "Steps and their dependencies" }, canvas);

  function update(current) {
    for (const step of current) {
      const node = nodes.get(step.id);
      if (!node) continue;
      node.className = `node status-${step.status}`;
      node.dataset.status = step.status;
      const attempt = `attempt ${step.attempt}/${step.max_attempts}`;
      const duration = formatDuration(elapsed(step.started_at, step.finished_at));
      const worker = step.worker_id ? `worker ${step.worker_id}` : "no worker yet";
      node.setAttribute("aria-label", `${step.name}: ${step.status}, ${attempt}, ${duration}, ${worker}`);
      node.replaceChildren(
        h("span", { class: "node-name" }, step.name),
        h("span", { class: "node-status" }, step.status),
        h("span", { class: "node-detail" }, `${attempt} · ${duration}`),
        h("span", { class: "node-detail" }, worker),
      );
    }
  }
  update(steps);
  return { element, update };
}
