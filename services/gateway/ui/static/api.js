// The REST API, as the browser calls it: credentials from sessionStorage sent as
// headers (never in a URL, where logs and history would keep them), errors turned into
// the problem JSON's words.

const STORE_KEY = "minisource.credentials";

export function credentials() {
  const raw = sessionStorage.getItem(STORE_KEY);
  if (!raw) return null;
  try {
    return JSON.parse(raw);
  } catch {
    return null;
  }
}

export function saveCredentials(key, tenant) {
  sessionStorage.setItem(STORE_KEY, JSON.stringify({ key: key || "", tenant: tenant || "" }));
}

export function forgetCredentials() {
  sessionStorage.removeItem(STORE_KEY);
}

function authHeaders(creds = credentials()) {
  const headers = {};
  if (creds && creds.key) headers["Authorization"] = `Bearer ${creds.key}`;
  if (creds && creds.tenant) headers["X-Tenant-ID"] = creds.tenant;
  return headers;
}

/** An answer that was not 2xx: its problem JSON (RFC 9457) in words. */
export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title || (status ? `HTTP ${status}` : "no answer");
    let message = problem.detail ? `${title}: ${problem.detail}` : title;
    if (Array.isArray(problem.errors) && problem.errors.length) {
      message += ` (${problem.errors.map((e) => `${e.field}: ${e.reason}`).join("; ")})`;
    }
    super(message);
    this.status = status;
    this.problem = problem;
  }
}

async function problemOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object") return body;
  } catch {
    // not JSON: a proxy's page, say
  }
  return { detail: text.slice(0, 300) || response.statusText };
}

/**
 * Call the API. `params` (URLSearchParams) go in the query string, `body` as JSON.
 * `fresh`: ask for an answer computed now rather than a cached one.
 */
export async function api(method, path, { params, body, signal, fresh, creds } = {}) {
  const query = params && String(params) ? `?${params}` : "";
  const headers = { ...authHeaders(creds), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (fresh) headers["Cache-Control"] = "no-cache";
  let response;
  try {
    response = await fetch(path + query, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { title: "The gateway did not answer", detail: error.message });
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (response.status === 204) return null;
  return response.json();
}

/**
 * Read Server-Sent Events from `path` until the stream ends or `signal` aborts.
 *
 * Not EventSource: it cannot send headers, and the key must not go in the URL. This is
 * the same protocol read from a fetch body: `lastEventId` goes out as Last-Event-ID, and
 * each event reaches `onEvent({type, id, data})`. Returns the server's `retry:` hint.
 */
export async function readEvents(path, params, { lastEventId, signal, onOpen, onEvent }) {
  const headers = { ...authHeaders(), Accept: "text/event-stream" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  const query = String(params) ? `?${params}` : "";
  const response = await fetch(path + query, {
    headers,
    signal,
    cache: "no-store",
    credentials: "omit",
  });
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let retry = null;
  let event = { type: "message", id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return retry;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (event.data.length || event.id !== null) {
          onEvent({ type: event.type, id: event.id, data: event.data.join("\n") });
        }
        event = { type: "message", id: null, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "data") event.data.push(text);
      else if (field === "event") event.type = text;
      else if (field === "id") event.id = text;
      else if (field === "retry" && /^\d+$/.test(text)) retry = Number(text);
    }
  }
}
