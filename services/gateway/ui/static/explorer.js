// The explorer: the query bar, the histogram, the facets and the results (or the live
// tail). Everything it shows follows from the state in the URL; every change of the
// query goes through `navigate`, so the back button and shared links work.

import { api } from "./api.js";
import { append, describe, el, errorBox, fill, formatNumber } from "./dom.js";
import { entryRow } from "./entries.js";
import { renderHistogram } from "./histogram.js";
import {
  LEVELS,
  RANGES,
  chooseInterval,
  copyState,
  filterBody,
  filterParams,
  windowSeconds,
  withFilter,
} from "./query.js";
import { renderTail } from "./tail.js";

const PAGE_SIZE = 100;
// Exact-value filters without a field of their own in the bar: shown as chips.
const CHIP_KEYS = ["trace_id", "span_id", "user_id", "request_id", "source"];

function input(name, label, value, attrs = {}) {
  const id = `q-${name}`;
  return el(
    "label",
    { class: "field", for: id },
    el("span", {}, label),
    el("input", {
      id,
      name,
      value: value || "",
      autocomplete: "off",
      spellcheck: "false",
      ...attrs,
    }),
  );
}

function chip(text, onRemove) {
  return el(
    "span",
    { class: "chip" },
    text,
    el(
      "button",
      {
        type: "button",
        class: "chip-remove",
        "aria-label": `Remove filter ${text}`,
        onclick: onRemove,
      },
      "×",
    ),
  );
}

function queryBar(state, navigate) {
  const levels = new Set((state.filters.levels || "").split(",").filter(Boolean));
  const form = el("form", { class: "query-bar", role: "search", "aria-label": "Query" });
  const search = input("search", "Search", state.filters.search, {
    type: "search",
    placeholder: 'words and "quoted phrases"',
    class: "wide",
  });
  const services = input("services", "Services", state.filters.services, {
    placeholder: "a,b",
    list: "known-services",
  });
  const levelBoxes = el(
    "fieldset",
    { class: "levels" },
    el("legend", {}, "Levels"),
    LEVELS.map((level) =>
      el(
        "label",
        { class: `level-check lvl-${level}` },
        el("input", { type: "checkbox", name: "levels", value: level, checked: levels.has(level) }),
        level,
      ),
    ),
  );
  const minLevel = el(
    "label",
    { class: "field", for: "q-min_level" },
    el("span", {}, "Min level"),
    el(
      "select",
      { id: "q-min_level", name: "min_level" },
      el("option", { value: "" }, "any"),
      LEVELS.map((level) =>
        el("option", { value: level, selected: state.filters.min_level === level }, level),
      ),
    ),
  );
  const picks = el(
    "div",
    { class: "quick-picks", role: "group", "aria-label": "Time range" },
    Object.keys(RANGES).map((range) =>
      el(
        "button",
        {
          type: "button",
          class: "pick",
          "aria-pressed": String(state.range === range),
          onclick: () => {
            const next = copyState(state);
            next.range = range;
            next.start_time = "";
            next.end_time = "";
            navigate(next);
          },
        },
        range,
      ),
    ),
  );
  const from = input("start_time", "From (UTC)", state.range ? "" : state.start_time, {
    placeholder: "2024-01-15T10:00:00Z or now-2h",
  });
  const to = input("end_time", "To (UTC)", state.range ? "" : state.end_time, {
    placeholder: "empty: now",
  });
  const meta = input("metadata", "Metadata", "", { placeholder: "key=value, Enter" });
  const chips = el("div", { class: "chips", "aria-label": "Other filters" });
  for (const [key, value] of state.metadata) {
    chips.append(
      chip(`metadata.${key}=${value}`, () => {
        const next = copyState(state);
        next.metadata = next.metadata.filter(([k, v]) => !(k === key && v === value));
        navigate(next);
      }),
    );
  }
  for (const key of CHIP_KEYS) {
    if (!state.filters[key]) continue;
    chips.append(
      chip(`${key}=${state.filters[key]}`, () => {
        const next = copyState(state);
        delete next.filters[key];
        navigate(next);
      }),
    );
  }
  const message = el("div", { class: "form-error", role: "alert" });
  const readForm = () => {
    const data = new FormData(form);
    const next = copyState(state);
    for (const key of ["search", "services", "environment", "host", "min_level"]) {
      const value = String(data.get(key) || "").trim();
      if (value) next.filters[key] = value;
      else delete next.filters[key];
    }
    const picked = data.getAll("levels").map(String);
    if (picked.length) next.filters.levels = picked.join(",");
    else delete next.filters.levels;
    const start = String(data.get("start_time") || "").trim();
    const end = String(data.get("end_time") || "").trim();
    if (start || end) {
      next.range = "";
      next.start_time = start;
      next.end_time = end;
    }
    const pair = String(data.get("metadata") || "").trim();
    if (pair) {
      const eq = pair.indexOf("=");
      if (eq <= 0) {
        message.textContent = "metadata filters are key=value";
        return null;
      }
      next.metadata.push([pair.slice(0, eq).trim(), pair.slice(eq + 1).trim()]);
    }
    if (!next.range && !next.start_time && !next.end_time) next.range = "1h";
    return next;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = readForm();
    if (next) navigate(next);
  });
  // Fresh answers, not the query cache's (Cache-Control: no-cache).
  const refresh = () => {
    const next = readForm();
    if (next) navigate(next, { fresh: true });
  };
  const tailToggle = el(
    "button",
    {
      type: "button",
      class: "tail-toggle",
      "aria-pressed": String(state.tail),
      onclick: () => {
        const next = readForm() || copyState(state);
        next.tail = !state.tail;
        navigate(next);
      },
    },
    state.tail ? "Stop live tail" : "Live tail",
  );
  append(form, [
    el(
      "div",
      { class: "row" },
      search,
      el("button", { type: "submit", class: "primary" }, "Run"),
      el("button", { type: "button", onclick: refresh }, "Refresh"),
      tailToggle,
    ),
    el(
      "div",
      { class: "row" },
      services,
      input("environment", "Environment", state.filters.environment),
      input("host", "Host", state.filters.host),
      minLevel,
      levelBoxes,
    ),
    el("div", { class: "row" }, picks, from, to, meta),
    chips,
    message,
    el("datalist", { id: "known-services" }),
  ]);
  return form;
}

function facetList(title, counts, key, state, navigate) {
  const items = Object.entries(counts)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
  return el(
    "div",
    { class: "facet" },
    el("h3", {}, title),
    items.length
      ? el(
          "ul",
          {},
          items.map(([value, n]) =>
            el(
              "li",
              {},
              el(
                "button",
                {
                  type: "button",
                  class: `link facet-value${key === "levels" ? ` lvl-${value}` : ""}`,
                  title: `Filter by ${value}`,
                  onclick: () => navigate(withFilter(state, key, value)),
                },
                el("span", {}, value),
                el("span", { class: "count" }, formatNumber(n)),
              ),
            ),
          ),
        )
      : el("p", { class: "muted" }, "none"),
  );
}

async function loadHistogram(slot, state, { navigate, signal, fresh }) {
  const [interval, width] = chooseInterval(windowSeconds(state));
  try {
    const answer = await api("POST", "/api/v1/logs/aggregate", {
      body: { ...filterBody(state), interval },
      signal,
      fresh,
    });
    fill(
      slot,
      renderHistogram({
        buckets: answer.buckets,
        intervalName: interval,
        intervalSeconds: width,
        onSelect: (start, end) => {
          const next = copyState(state);
          next.range = "";
          next.start_time = start;
          next.end_time = end;
          navigate(next);
        },
      }),
    );
  } catch (error) {
    if (error.name !== "AbortError") fill(slot, errorBox(error));
  }
}

async function loadFacets(slot, state, { navigate, signal, fresh }) {
  try {
    const stats = await api("GET", "/api/v1/logs/stats", {
      params: filterParams(state),
      signal,
      fresh,
    });
    fill(
      slot,
      facetList("Levels", stats.by_level, "levels", state, navigate),
      facetList("Services", stats.by_service, "services", state, navigate),
    );
    const known = document.getElementById("known-services");
    if (known)
      fill(
        known,
        Object.keys(stats.by_service).map((name) => el("option", { value: name })),
      );
  } catch (error) {
    if (error.name !== "AbortError") fill(slot, errorBox(error));
  }
}

async function loadResults(slot, state, { navigate, signal, fresh, onOpen }) {
  const list = el("ol", { class: "entries", "aria-label": "Log entries, newest first" });
  const summary = el("p", { class: "results-summary", role: "status" }, "Loading…");
  const more = el("button", { type: "button", class: "load-more", hidden: true }, "Load more");
  const status = el("div");
  fill(slot, summary, list, more, status);
  const onFilter = (key, value) => navigate(withFilter(state, key, value));
  let shown = 0;
  let cursor = null;
  let loading = false;
  const page = async () => {
    loading = true;
    more.disabled = true;
    const params = filterParams(state);
    params.set("page_size", String(PAGE_SIZE));
    if (cursor) params.set("cursor", cursor);
    try {
      const answer = await api("GET", "/api/v1/logs", { params, signal, fresh: fresh && !cursor });
      for (const entry of answer.entries) list.append(entryRow(entry, { onFilter, onOpen }));
      shown += answer.entries.length;
      cursor = answer.has_more ? answer.next_cursor : null;
      const total = answer.total_count;
      const totalText = answer.total_is_estimate
        ? `about ${formatNumber(total)}`
        : formatNumber(total);
      summary.textContent = shown
        ? `${formatNumber(shown)} shown of ${totalText} matching, newest first`
        : "No entries match this query in this time range.";
      more.hidden = !cursor;
      fill(status);
    } catch (error) {
      if (error.name === "AbortError") return;
      if (!shown) summary.textContent = "";
      fill(status, errorBox(error));
    } finally {
      loading = false;
      more.disabled = false;
    }
  };
  more.addEventListener("click", () => {
    if (!loading && cursor) page();
  });
  // Scrolling to the end fetches the next page (keyset cursor: as fast at page 1,000
  // as at page 1); the button stays for the keyboard.
  const observer = new IntersectionObserver((seen) => {
    if (seen.some((e) => e.isIntersecting) && !loading && cursor) page();
  });
  observer.observe(more);
  signal.addEventListener("abort", () => observer.disconnect());
  await page();
}

export function renderExplorer(root, state, { navigate, signal, fresh, onOpen }) {
  const histogramSlot = el(
    "div",
    { class: "histogram-slot" },
    el("p", { class: "muted" }, "Loading histogram…"),
  );
  const facetSlot = el("aside", { class: "facets", "aria-label": "Facets" });
  const resultSlot = el("section", { class: "results", "aria-label": "Results" });
  fill(
    root,
    queryBar(state, navigate),
    histogramSlot,
    el("div", { class: "explorer-body" }, facetSlot, resultSlot),
  );
  const context = { navigate, signal, fresh, onOpen };
  loadHistogram(histogramSlot, state, context);
  loadFacets(facetSlot, state, context);
  if (state.tail) {
    renderTail(resultSlot, state, {
      signal,
      onFilter: (key, value) => navigate(withFilter(state, key, value)),
      onOpen,
    });
  } else {
    loadResults(resultSlot, state, context).catch((error) =>
      fill(resultSlot, el("p", {}, describe(error))),
    );
  }
}
