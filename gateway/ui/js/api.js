// The API as the dashboard uses it: the key from session storage as a Bearer header, problem
// details turned into ApiError, and the gateway's rate-limit answers obeyed by every caller.

const KEY = "modelruns.apiKey";
const WRITE = "modelruns.canWrite";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  get canWrite() {
    return sessionStorage.getItem(WRITE) === "1";
  },
  signIn(key, canWrite) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(WRITE, canWrite ? "1" : "0");
  },
  signOut() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(WRITE);
  },
};

export class ApiError extends Error {
  constructor(status, problem, retryAfter, requestId) {
    super(problem?.detail ?? (status ? `HTTP ${status}` : "the gateway cannot be reached"));
    this.status = status;
    this.code = problem?.code ?? null;
    this.detail = problem?.detail ?? null;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}

/** What an error means, in words for the person looking at the page. */
export function explain(error) {
  if (!(error instanceof ApiError)) return `Something went wrong in the dashboard: ${error.message}`;
  switch (error.status) {
    case 0:
      return "The gateway cannot be reached. Check that it is running; the page retries by itself.";
    case 401:
      return "This API key was not accepted (401): it is unknown, revoked or mistyped. Sign in with a valid key.";
    case 403:
      return `This API key is not allowed to do that (403): ${error.detail ?? "it lacks the scope needed"}.`;
    case 404:
      return "Not found (404): no such run or step for this key's tenant.";
    case 429:
      return `Too many requests (429): the rate limit was reached. Waiting ${error.retryAfter} s before trying again.`;
    case 503:
      return "The gateway cannot reach its database right now (503); trying again shortly.";
    default: {
      const id = error.requestId ? ` (request id ${error.requestId})` : "";
      return `The gateway answered ${error.status}: ${error.detail ?? "an error"}${id}.`;
    }
  }
}

// A 429 holds back every request of the page, not only the one that got it.
let blockedUntil = 0;
const waitListeners = new Set();

/** Called with what the page waits for (a rate limit, an outage), and with null once answers come. */
export function onWait(listener) {
  waitListeners.add(listener);
  return () => waitListeners.delete(listener);
}

function waiting(message) {
  for (const listener of waitListeners) listener(message);
}

export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, Math.max(0, ms));
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

async function respectRateLimit(signal) {
  const wait = blockedUntil - Date.now();
  if (wait > 0) await sleep(wait, signal);
}

function retryAfterOf(response) {
  const seconds = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  return Number.isFinite(seconds) && seconds > 0 ? seconds : 1;
}

async function failure(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    // a body that is not JSON still has a status that says enough
  }
  const retryAfter = retryAfterOf(response);
  if (response.status === 429) {
    blockedUntil = Math.max(blockedUntil, Date.now() + retryAfter * 1000);
  }
  return new ApiError(response.status, problem, retryAfter, response.headers.get("X-Request-Id"));
}

function url(path, query) {
  const target = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== null && value !== undefined && value !== "") target.searchParams.set(name, value);
  }
  return target;
}

async function send(method, path, { query, signal, key, accept = "application/json", headers = {} } = {}) {
  await respectRateLimit(signal);
  try {
    return await fetch(url(path, query), {
      method,
      signal,
      cache: "no-store",
      credentials: "omit",
      headers: { Authorization: `Bearer ${key ?? session.key ?? ""}`, Accept: accept, ...headers },
    });
  } catch (error) {
    if (signal?.aborted) throw error;
    throw new ApiError(0, null, 2, null);
  }
}

/** One call; its answer's JSON, or an ApiError. */
export async function call(method, path, options = {}) {
  const response = await send(method, path, options);
  if (!response.ok) throw await failure(response);
  const body = await response.json();
  waiting(null);
  return body;
}

const TRANSIENT = new Set([0, 429, 502, 503, 504]);

/** A GET that waits out rate limits and outages (as long as its view lives), then answers. */
export async function get(path, options = {}) {
  for (;;) {
    try {
      return await call("GET", path, options);
    } catch (error) {
      if (!(error instanceof ApiError) || !TRANSIENT.has(error.status)) throw error;
      waiting(explain(error));
      await sleep(error.retryAfter * 1000, options.signal);
    }
  }
}

/**
 * Reads /model-runs/{runId}/events with fetch, so the key travels as a header (EventSource cannot
 * send one) and never in a URL. Calls onEvent(cloudEvent) for each event; resolves when the
 * stream ends.
 */
export async function streamEvents(runId, { lastEventId, signal, onEvent }) {
  const headers = lastEventId ? { "Last-Event-ID": String(lastEventId) } : {};
  const response = await send("GET", `/model-runs/${encodeURIComponent(runId)}/events`, {
    signal,
    accept: "text/event-stream",
    headers,
  });
  if (!response.ok) throw await failure(response);
  waiting(null);
  const parser = new SseParser((message) => onEvent(JSON.parse(message.data)));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.push(value);
  }
}

/** The text/event-stream format: lines of `field: value`, a blank line ends an event. */
export class SseParser {
  constructor(dispatch) {
    this.dispatch = dispatch;
    this.buffer = "";
    this.data = [];
    this.id = null;
  }

  push(text) {
    this.buffer += text;
    const lines = this.buffer.split("\n");
    this.buffer = lines.pop();
    for (const raw of lines) this.line(raw.endsWith("\r") ? raw.slice(0, -1) : raw);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.dispatch({ id: this.id, data: this.data.join("\n") });
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
  }
}
