// The explorer's entry point: sign-in, the header, and which view the URL asks for.

import { api, credentials, forgetCredentials, saveCredentials } from "./api.js";
import { el, errorBox, fill } from "./dom.js";
import { renderExplorer } from "./explorer.js";
import { renderOps } from "./ops.js";
import { copyState, readState, stateUrl, withFilter } from "./query.js";
import { renderTrace } from "./trace.js";

const root = document.getElementById("app");
// Aborted whenever the page is drawn anew: pending requests and the live tail stop.
let lifecycle = null;

function navigate(state, { fresh = false } = {}) {
  history.pushState(null, "", stateUrl(state));
  render({ fresh });
}

function who(creds) {
  const parts = [];
  if (creds.key) parts.push(`key ${creds.key.slice(0, 12)}…`);
  if (creds.tenant) parts.push(`tenant ${creds.tenant}`);
  return parts.join(", ");
}

function header(state, creds) {
  const link = (label, view) =>
    el(
      "button",
      {
        type: "button",
        class: "nav",
        "aria-current": state.view === view ? "page" : false,
        onclick: () => navigate({ ...copyState(state), view, id: "", tail: false }),
      },
      label,
    );
  return el(
    "header",
    { class: "top" },
    el("h1", {}, "Minisource Log"),
    el("nav", { "aria-label": "Pages" }, link("Explorer", "logs"), link("Operations", "ops")),
    el("span", { class: "who muted" }, who(creds)),
    el(
      "button",
      {
        type: "button",
        onclick: () => {
          forgetCredentials();
          render();
        },
      },
      "Sign out",
    ),
  );
}

function renderSignIn(signal) {
  const message = el("div", { "aria-live": "assertive" });
  const key = el("input", {
    id: "signin-key",
    name: "key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
  });
  const tenant = el("input", {
    id: "signin-tenant",
    name: "tenant",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "123e4567-e89b-12d3-a456-426614174000",
  });
  const form = el(
    "form",
    { class: "signin", "aria-label": "Sign in" },
    el("h1", {}, "Minisource Log"),
    el("label", { for: "signin-key" }, "API key"),
    key,
    el(
      "label",
      { for: "signin-tenant" },
      "Tenant ID (trusted-header mode, or an admin key acting for a tenant)",
    ),
    tenant,
    el(
      "p",
      { class: "muted" },
      "Kept in this tab's session storage and sent as a header, never in a URL.",
    ),
    el("button", { type: "submit", class: "primary" }, "Sign in"),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const creds = { key: key.value.trim(), tenant: tenant.value.trim() };
    if (!creds.key && !creds.tenant) {
      fill(
        message,
        errorBox(new Error("Enter an API key, or a tenant ID in trusted-header mode.")),
      );
      return;
    }
    fill(message, el("p", { class: "muted" }, "Checking…"));
    try {
      // Any query route proves the credential; storage is one of the cheapest.
      await api("GET", "/api/v1/logs/storage", { creds, signal });
    } catch (error) {
      if (error.name !== "AbortError") fill(message, errorBox(error));
      return;
    }
    saveCredentials(creds.key, creds.tenant);
    render();
  });
  fill(root, el("main", { id: "main", class: "signin-page" }, form));
  key.focus();
}

function render({ fresh = false } = {}) {
  if (lifecycle) lifecycle.abort();
  lifecycle = new AbortController();
  const signal = lifecycle.signal;
  const creds = credentials();
  if (!creds) {
    renderSignIn(signal);
    return;
  }
  const state = readState();
  const main = el("main", { id: "main" });
  fill(root, header(state, creds), main);
  const onOpen = (kind, id) => navigate({ ...copyState(state), view: kind, id, tail: false });
  const onFilter = (key, value) =>
    navigate({ ...withFilter(state, key, value), view: "logs", id: "" });
  if (state.view === "trace" || state.view === "request") {
    document.title = `${state.view} ${state.id} · Minisource Log`;
    renderTrace(main, state.view, state.id, { signal, navigate, onFilter, onOpen });
  } else if (state.view === "ops") {
    document.title = "Operations · Minisource Log";
    renderOps(main, state, { signal, navigate });
  } else {
    document.title = "Explorer · Minisource Log";
    renderExplorer(main, state, { navigate, signal, fresh, onOpen });
  }
}

window.addEventListener("popstate", () => render());
document.addEventListener("minisource:signout", () => {
  forgetCredentials();
  render();
});
document.addEventListener("keydown", (event) => {
  // "/" jumps to the search field, as in most log tools.
  const target = event.target;
  if (event.key !== "/" || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return;
  const search = document.getElementById("q-search");
  if (search) {
    event.preventDefault();
    search.focus();
  }
});
render();
