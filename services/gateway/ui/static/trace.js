// The trace and request views: every entry of one trace_id (or request_id), across
// services, oldest first, on a timeline: one lane per service, the time since the first
// entry and since the previous one.

import { api } from "./api.js";
import { el, errorBox, fill, formatTime } from "./dom.js";
import { entryRow, levelBadge } from "./entries.js";

const PAGE_SIZE = 1000;
// Enough for any real trace; a larger one says so rather than loading without end.
const MAX_ENTRIES = 10_000;

/** Microseconds since the epoch: the API's timestamps carry microseconds, which
 * Date.parse would drop. */
function micros(iso) {
  const match = /\.(\d+)/.exec(iso);
  const fraction = match ? Number(match[1].slice(0, 6).padEnd(6, "0")) : 0;
  const whole = Date.parse(match ? iso.replace(match[0], "") : iso);
  return whole * 1000 + fraction;
}

export function formatDuration(us) {
  if (us < 1000) return `${us} µs`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(1)} ms`;
  if (us < 60_000_000) return `${(us / 1_000_000).toFixed(3)} s`;
  const seconds = Math.round(us / 1_000_000);
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

async function fetchAll(kind, id, signal) {
  const entries = [];
  let cursor = null;
  do {
    const params = new URLSearchParams({ page_size: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    const answer = await api("GET", `/api/v1/logs/${kind}/${encodeURIComponent(id)}`, {
      params,
      signal,
    });
    entries.push(...answer.entries);
    cursor = answer.has_more ? answer.next_cursor : null;
  } while (cursor && entries.length < MAX_ENTRIES);
  return { entries, truncated: Boolean(cursor) };
}

export async function renderTrace(root, kind, id, { signal, navigate, onFilter, onOpen }) {
  const label = kind === "trace" ? "Trace" : "Request";
  const back = el("button", { type: "button", onclick: () => history.back() }, "← Back");
  const body = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  fill(
    root,
    el("div", { class: "view-head" }, back, el("h2", {}, `${label} `, el("code", {}, id))),
    body,
  );
  let result;
  try {
    result = await fetchAll(kind, id, signal);
  } catch (error) {
    if (error.name !== "AbortError") fill(body, errorBox(error));
    return;
  }
  const { entries, truncated } = result;
  if (!entries.length) {
    fill(body, el("p", {}, `No entries with ${kind}_id ${id}.`));
    return;
  }
  const lanes = [];
  for (const entry of entries)
    if (!lanes.includes(entry.service_name)) lanes.push(entry.service_name);
  const start = micros(entries[0].timestamp);
  const end = micros(entries[entries.length - 1].timestamp);
  const rows = [];
  let previous = start;
  entries.forEach((entry, index) => {
    const at = micros(entry.timestamp);
    const row = el(
      "tr",
      { class: "trace-entry", dataset: { id: entry.id } },
      el("td", { class: "num" }, `+${formatDuration(at - start)}`),
      el("td", { class: "num muted" }, index ? `+${formatDuration(at - previous)}` : ""),
      lanes.map((lane) =>
        el(
          "td",
          { class: "lane" },
          lane === entry.service_name
            ? el("span", { class: `dot lvl-bg-${entry.level}`, title: lane })
            : null,
        ),
      ),
      el("td", {}, levelBadge(entry.level)),
      el("td", { class: "service" }, entry.service_name),
      el("td", { class: "message" }, entry.message),
    );
    const detail = el(
      "tr",
      { class: "trace-detail", hidden: true },
      el("td", { colspan: String(lanes.length + 5) }),
    );
    row.tabIndex = 0;
    const toggle = () => {
      if (detail.hidden)
        fill(
          detail.firstChild,
          el("ol", { class: "entries" }, entryRow(entry, { onFilter, onOpen, expanded: true })),
        );
      detail.hidden = !detail.hidden;
    };
    row.addEventListener("click", toggle);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        toggle();
      }
    });
    rows.push(row, detail);
    previous = at;
  });
  fill(
    body,
    el(
      "p",
      { class: "results-summary" },
      `${entries.length} entries across ${lanes.length} service${lanes.length > 1 ? "s" : ""}, `,
      `from ${formatTime(entries[0].timestamp)} over ${formatDuration(end - start)}`,
      truncated ? ` (the first ${MAX_ENTRIES} only)` : "",
    ),
    el(
      "div",
      { class: "table-scroll" },
      el(
        "table",
        { class: "trace-table" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { scope: "col" }, "since start"),
            el("th", { scope: "col" }, "since previous"),
            lanes.map((lane) => el("th", { scope: "col", class: "lane" }, lane)),
            el("th", { scope: "col" }, "level"),
            el("th", { scope: "col" }, "service"),
            el("th", { scope: "col" }, "message"),
          ),
        ),
        el("tbody", {}, rows),
      ),
    ),
  );
  void navigate;
}
