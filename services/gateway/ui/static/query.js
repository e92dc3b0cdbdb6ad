// What the explorer shows lives in the page's URL, so a view can be shared: the
// query string holds the API's own filter names (the URL says what the API is asked),
// plus `view`, `range` (a quick pick), `id` (trace / request view) and `tail`.

export const FILTER_KEYS = [
  "search",
  "services",
  "levels",
  "min_level",
  "environment",
  "host",
  "trace_id",
  "span_id",
  "user_id",
  "request_id",
  "source",
];
export const LEVELS = ["DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
export const RANGES = { "15m": 15 * 60, "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
const RANGE_TEXT = { "15m": "now-15m", "1h": "now-1h", "24h": "now-24h", "7d": "now-7d" };

export function readState(search = location.search) {
  const params = new URLSearchParams(search);
  const filters = {};
  for (const key of FILTER_KEYS) {
    const value = params.get(key);
    if (value) filters[key] = value;
  }
  const metadata = [];
  for (const [key, value] of params) {
    if (key.startsWith("metadata.") && key.length > 9) metadata.push([key.slice(9), value]);
  }
  const start = params.get("start_time") || "";
  const end = params.get("end_time") || "";
  let range = params.get("range") || "";
  if (!range && !start && !end) range = "1h";
  return {
    view: params.get("view") || "logs",
    id: params.get("id") || "",
    tail: params.get("tail") === "1",
    range: RANGES[range] ? range : "",
    start_time: start,
    end_time: end,
    filters,
    metadata,
  };
}

export function stateUrl(state) {
  const params = new URLSearchParams();
  if (state.view && state.view !== "logs") params.set("view", state.view);
  if (state.id) params.set("id", state.id);
  for (const key of FILTER_KEYS) {
    if (state.filters[key]) params.set(key, state.filters[key]);
  }
  for (const [key, value] of state.metadata) params.append(`metadata.${key}`, value);
  if (state.range) params.set("range", state.range);
  else {
    if (state.start_time) params.set("start_time", state.start_time);
    if (state.end_time) params.set("end_time", state.end_time);
  }
  if (state.tail) params.set("tail", "1");
  const text = String(params);
  return `${location.pathname}${text ? `?${text}` : ""}`;
}

export function copyState(state) {
  return {
    ...state,
    filters: { ...state.filters },
    metadata: state.metadata.map(([k, v]) => [k, v]),
  };
}

/** The window as the API reads it: a quick pick is relative to now. */
export function timeWindow(state) {
  if (state.range) return { start_time: RANGE_TEXT[state.range], end_time: "" };
  return { start_time: state.start_time, end_time: state.end_time };
}

/** Query parameters of GET /api/v1/logs, /stats, /services (and /stream without times). */
export function filterParams(state, { withTime = true } = {}) {
  const params = new URLSearchParams();
  for (const key of FILTER_KEYS) {
    if (state.filters[key]) params.set(key, state.filters[key]);
  }
  for (const [key, value] of state.metadata) params.append(`metadata.${key}`, value);
  if (withTime) {
    const { start_time, end_time } = timeWindow(state);
    if (start_time) params.set("start_time", start_time);
    if (end_time) params.set("end_time", end_time);
  }
  return params;
}

const NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/;

/** A metadata value typed as the query string types it (true/false, numbers; quotes
 * force a string), so that the JSON bodies (aggregate, alert rules) match the same. */
export function metadataValue(text) {
  if (text === "true" || text === "false") return text === "true";
  if (NUMBER.test(text)) return Number(text);
  if (text.length >= 2 && text.startsWith('"') && text.endsWith('"')) {
    try {
      const value = JSON.parse(text);
      if (typeof value === "string") return value;
    } catch {
      return text;
    }
  }
  return text;
}

function list(text) {
  return text
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
}

/** The filter as a JSON body (POST /aggregate; an alert rule's `filter` without times). */
export function filterBody(state, { withTime = true } = {}) {
  const body = {};
  for (const key of FILTER_KEYS) {
    const value = state.filters[key];
    if (!value) continue;
    if (key === "services" || key === "levels") body[key] = list(value);
    else body[key] = value;
  }
  if (state.metadata.length) {
    body.metadata = Object.fromEntries(state.metadata.map(([k, v]) => [k, metadataValue(v)]));
  }
  if (withTime) {
    const { start_time, end_time } = timeWindow(state);
    if (start_time) body.start_time = start_time;
    if (end_time) body.end_time = end_time;
  }
  return body;
}

function parseTime(text, now) {
  if (!text || text === "now") return now;
  const relative = /^now-(\d+)([smhdw])$/.exec(text);
  if (relative) {
    const unit = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[relative[2]];
    return now - Number(relative[1]) * unit * 1000;
  }
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
}

/** How many seconds the window spans (for the histogram's interval). */
export function windowSeconds(state, now = Date.now()) {
  const { start_time, end_time } = timeWindow(state);
  const end = parseTime(end_time, now);
  const start = start_time ? parseTime(start_time, now) : (end ?? now) - 86400 * 1000;
  if (start === null || end === null) return 86400;
  return Math.max(1, (end - start) / 1000);
}

const INTERVALS = [
  ["1m", 60],
  ["5m", 300],
  ["15m", 900],
  ["1h", 3600],
  ["6h", 21600],
  ["1d", 86400],
];

/** The finest interval that keeps the histogram at most ~240 bars. */
export function chooseInterval(seconds) {
  for (const [name, width] of INTERVALS) {
    if (seconds / width <= 240) return [name, width];
  }
  return INTERVALS[INTERVALS.length - 1];
}

/** Add a value as a filter: lists (services, levels) gain it, others take it. */
export function withFilter(state, key, value) {
  const next = copyState(state);
  if (key.startsWith("metadata.")) {
    const name = key.slice(9);
    const text = typeof value === "string" ? value : JSON.stringify(value);
    next.metadata = next.metadata.filter(([k]) => k !== name);
    // A string that looks like a number or a boolean is quoted to stay a string.
    const typed =
      typeof value === "string" && metadataValue(value) !== value ? JSON.stringify(value) : text;
    next.metadata.push([name, typed]);
  } else if (key === "services" || key === "levels") {
    const values = list(next.filters[key] || "");
    if (!values.includes(value)) values.push(value);
    next.filters[key] = values.join(",");
  } else {
    next.filters[key] = String(value);
  }
  return next;
}
