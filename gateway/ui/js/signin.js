// Sign-in: the key is checked against the API before it is kept, and its write scope is found
// out once so that the Cancel button appears only for keys that may use it.

import { ApiError, call, explain, session } from "./api.js";
import { h } from "./dom.js";

// Cancelling a run that cannot exist changes nothing: a key with runs:write gets 404, one
// without it 403 (the scope is checked before the run is looked up).
const NO_RUN = "/model-runs/00000000-0000-0000-0000-000000000000/cancel";

async function canWrite(key) {
  try {
    await call("POST", NO_RUN, { key });
    return true;
  } catch (error) {
    return error instanceof ApiError && error.status === 404;
  }
}

export function showSignIn(main, { message, signedIn }) {
  const input = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const button = h("button", { type: "submit" }, "Sign in");
  const error = h("p", { class: "error", role: "alert", id: "signin-error", hidden: !message }, message ?? "");
  const form = h(
    "form",
    { class: "signin", onsubmit: submit },
    h("label", { for: "api-key" }, "API key"),
    input,
    button,
    error,
  );

  async function submit(event) {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    error.hidden = true;
    try {
      await call("GET", "/model-runs", { key, query: { max_results: 1 } });
      session.signIn(key, await canWrite(key));
      signedIn();
    } catch (failure) {
      error.textContent =
        failure instanceof ApiError && failure.status === 403
          ? "This API key lacks the scope runs:read, which the dashboard needs to show runs (403)."
          : explain(failure);
      error.hidden = false;
      button.disabled = false;
      input.focus();
    }
  }

  main.append(
    h(
      "section",
      { class: "card narrow" },
      h("h1", { tabindex: "-1" }, "Sign in"),
      h(
        "p",
        {},
        "Paste an API key with the scope runs:read (and runs:write to cancel runs). ",
        "It is kept in this tab only and sent to the gateway as a Bearer header.",
      ),
      h("p", { class: "muted" }, "Create one with: ", h("code", {}, "modelruns api-keys create --tenant T --scope runs:read")),
      form,
    ),
  );
  input.focus();
}
