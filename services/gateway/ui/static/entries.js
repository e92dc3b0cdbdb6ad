// One log entry as a row: a summary line that expands to the whole entry (formatted
// JSON with copy buttons, and every value clickable to filter by it). Text only: the
// entry's fields reach the page as text nodes, whatever they contain.

import { copyText, el, formatTime } from "./dom.js";

// Entry field → the filter it becomes when clicked.
const FILTER_OF = {
  service_name: "services",
  level: "levels",
  environment: "environment",
  host: "host",
  trace_id: "trace_id",
  span_id: "span_id",
  user_id: "user_id",
  request_id: "request_id",
  source: "source",
};

function copyButton(label, text) {
  const button = el("button", { type: "button", class: "small" }, label);
  button.addEventListener("click", async () => {
    try {
      await copyText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  });
  return button;
}

function valueText(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function fieldRow(name, value, onFilter) {
  const text = valueText(value);
  const cell = onFilter
    ? el(
        "button",
        {
          type: "button",
          class: "link value",
          title: `Filter by ${name} = ${text}`,
          onclick: () => onFilter(name, value),
        },
        text,
      )
    : el("span", { class: "value" }, text);
  return el("tr", {}, el("th", { scope: "row" }, name), el("td", {}, cell));
}

function details(entry, { onFilter, onOpen }) {
  const rows = [];
  for (const [name, value] of Object.entries(entry)) {
    if (value === null || value === undefined || name === "metadata") continue;
    const filterKey = FILTER_OF[name];
    rows.push(
      fieldRow(name, value, filterKey && onFilter ? () => onFilter(filterKey, value) : null),
    );
  }
  for (const [name, value] of Object.entries(entry.metadata || {})) {
    const simple = value === null || ["string", "number", "boolean"].includes(typeof value);
    rows.push(
      fieldRow(
        `metadata.${name}`,
        value,
        simple && onFilter ? () => onFilter(`metadata.${name}`, value) : null,
      ),
    );
  }
  const json = JSON.stringify(entry, null, 2);
  return el(
    "div",
    { class: "entry-details" },
    el(
      "div",
      { class: "toolbar" },
      copyButton("Copy JSON", json),
      copyButton("Copy message", entry.message || ""),
      entry.id ? copyButton("Copy id", entry.id) : null,
      entry.trace_id && onOpen
        ? el(
            "button",
            { type: "button", class: "small", onclick: () => onOpen("trace", entry.trace_id) },
            "Open trace",
          )
        : null,
      entry.request_id && onOpen
        ? el(
            "button",
            { type: "button", class: "small", onclick: () => onOpen("request", entry.request_id) },
            "Open request",
          )
        : null,
    ),
    el("table", { class: "fields" }, el("tbody", {}, rows)),
    el("pre", { class: "json" }, json),
  );
}

export function levelBadge(level) {
  return el("span", { class: `level lvl-${level}` }, level);
}

/** A list item for `entry`; `onFilter(key, value)` adds a filter, `onOpen(kind, id)`
 * opens the trace or request view; `expanded` shows it open. */
export function entryRow(entry, handlers = {}) {
  const item = el("li", { class: "entry", dataset: { id: entry.id || "" } });
  const summary = el(
    "button",
    { type: "button", class: "entry-summary", "aria-expanded": "false" },
    el("time", { datetime: entry.timestamp }, formatTime(entry.timestamp)),
    levelBadge(entry.level),
    el("span", { class: "service" }, entry.service_name),
    el("span", { class: "message" }, entry.message),
  );
  let open = null;
  summary.addEventListener("click", () => {
    if (open) {
      open.remove();
      open = null;
      summary.setAttribute("aria-expanded", "false");
    } else {
      open = details(entry, handlers);
      item.append(open);
      summary.setAttribute("aria-expanded", "true");
    }
  });
  item.append(summary);
  if (handlers.expanded) summary.click();
  return item;
}
