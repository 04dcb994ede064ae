// The shell: the header, a live status line, and a hash router (#/runs, #/runs/ID,
// #/runs/ID/steps/ID) so that no route needs the server and the key never enters a URL.

import { ApiError, explain, onWait, session } from "./api.js";
import { h, replace } from "./dom.js";
import { showResults } from "./results.js";
import { showRun } from "./run.js";
import { showRuns } from "./runs.js";
import { showSignIn } from "./signin.js";

const main = document.getElementById("main");
const account = document.getElementById("account");
const notice = document.getElementById("notice");

let current = null; // { controller } of the view on screen

function setNotice(text) {
  notice.hidden = !text;
  replace(notice, text ?? "");
}

onWait(setNotice);

function parseRoute() {
  const hash = window.location.hash.replace(/^#/, "") || "/runs";
  const [path, search = ""] = hash.split("?");
  const query = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "runs" && parts.length === 1) return { view: showRuns, params: { query } };
  if (parts[0] === "runs" && parts.length === 2) return { view: showRun, params: { runId: parts[1] } };
  if (parts[0] === "runs" && parts[2] === "steps" && parts.length === 4) {
    return { view: showResults, params: { runId: parts[1], stepId: parts[3], query } };
  }
  return null;
}

function renderAccount() {
  if (!session.key) {
    replace(account);
    return;
  }
  replace(
    account,
    h("span", { class: "muted" }, session.canWrite ? "read and write" : "read only"),
    h("button", { type: "button", class: "link", onclick: () => signOut(null) }, "Sign out"),
  );
}

/** Every view reports a 401 here: the key is dropped and the sign-in form says why. */
function signOut(error) {
  session.signOut();
  route(error ? explain(error) : null);
}

function route(message = null) {
  current?.controller.abort();
  const controller = new AbortController();
  current = { controller };
  setNotice(null);
  renderAccount();
  main.replaceChildren();
  const context = {
    signal: controller.signal,
    unauthorized: (error) => signOut(error),
    fail(error, where) {
      if (controller.signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) return signOut(error);
      replace(where ?? main, h("p", { class: "error", role: "alert" }, explain(error)));
    },
  };
  let shown;
  if (!session.key) {
    shown = showSignIn(main, { ...context, message, signedIn: () => route() });
  } else {
    const found = parseRoute();
    if (found) shown = found.view(main, found.params, context);
    else replace(main, h("p", { class: "error", role: "alert" }, "There is no such page."));
  }
  // A new page's heading takes the focus, unless the page gave it to a field of its own.
  Promise.resolve(shown).then(() => {
    if (!controller.signal.aborted && !main.contains(document.activeElement)) {
      main.querySelector("h1")?.focus({ preventScroll: true });
    }
  });
}

// The skip link moves focus only: following its #main would read as a route.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", () => route());
route();
