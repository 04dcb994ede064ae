// Building the page from values: text always goes in as text nodes, never as HTML.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attrs);
  element.append(...nodes(children));
  return element;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  setAttributes(element, attrs);
  element.append(...nodes(children));
  return element;
}

function setAttributes(element, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name === "className" ? "class" : name, value === true ? "" : String(value));
  }
}

function nodes(children) {
  return children
    .flat(Infinity)
    .filter((child) => child !== null && child !== undefined && child !== false)
    .map((child) => (child instanceof Node ? child : document.createTextNode(String(child))));
}

export function replace(element, ...children) {
  element.replaceChildren(...nodes(children));
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status);
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** From start to finish, or to now while it is still going. */
export function elapsed(startedAt, finishedAt) {
  if (!startedAt) return null;
  const end = finishedAt ? Date.parse(finishedAt) : Date.now();
  return end - Date.parse(startedAt);
}

export function formatTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function time(iso) {
  return iso ? h("time", { datetime: iso, title: iso }, formatTime(iso)) : "—";
}

export function shortId(id) {
  return id.slice(0, 8);
}

export const TERMINAL_RUN = new Set(["succeeded", "failed", "cancelled"]);
export const TERMINAL_STEP = new Set(["succeeded", "failed", "cancelled", "skipped"]);

export function countsText(counts, good, bad) {
  const done = counts[good] ?? 0;
  const failed = bad.reduce((sum, name) => sum + (counts[name] ?? 0), 0);
  return failed ? `${done}/${counts.total} · ${failed} failed` : `${done}/${counts.total}`;
}
