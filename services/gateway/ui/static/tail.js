// Live tail: GET /api/v1/logs/stream with the query's filters, read as Server-Sent
// Events from a fetch body (the key goes in a header, which EventSource cannot send).
// Pause closes the stream and keeps the last event id; resume reconnects with
// Last-Event-ID, so the server replays what arrived meanwhile: nothing is lost.

import { readEvents } from "./api.js";
import { el, errorBox, fill, formatNumber } from "./dom.js";
import { entryRow } from "./entries.js";
import { filterParams } from "./query.js";

// Rows kept on screen; older ones are still in the query results.
const MAX_ROWS = 1000;
const DEFAULT_RETRY_MS = 2000;

function wait(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export function renderTail(slot, state, { signal, onFilter, onOpen }) {
  const status = el(
    "span",
    { class: "tail-status", role: "status", "data-testid": "tail-status" },
    "Connecting…",
  );
  const pause = el("button", { type: "button", "aria-pressed": "false" }, "Pause");
  const clear = el("button", { type: "button" }, "Clear");
  const notices = el("div", { class: "tail-notices", "aria-live": "polite" });
  const list = el("ol", { class: "entries tail", "aria-label": "Live entries, newest first" });
  const counter = el("span", { class: "muted" });
  fill(
    slot,
    el("div", { class: "tail-head" }, el("strong", {}, "Live tail"), status, pause, clear, counter),
    notices,
    list,
  );
  let lastEventId = null;
  let received = 0;
  let paused = false;
  let connection = null;

  const onEvent = (event) => {
    if (event.id) lastEventId = event.id;
    if (event.type === "log") {
      const entry = JSON.parse(event.data);
      list.prepend(entryRow(entry, { onFilter, onOpen }));
      while (list.childElementCount > MAX_ROWS) list.lastElementChild.remove();
      received += 1;
      counter.textContent = `${formatNumber(received)} received`;
    } else if (event.type === "dropped") {
      const info = JSON.parse(event.data);
      const count = info.dropped ? `, ${formatNumber(info.dropped)} events not delivered` : "";
      const resume = info.resume_from ? ` (resuming from ${info.resume_from})` : "";
      notices.prepend(
        el(
          "div",
          { class: "notice", role: "alert", "data-testid": "tail-dropped" },
          `The server dropped events: ${info.reason}${count}. ${info.detail || ""}${resume}`,
        ),
      );
    }
  };

  const run = async () => {
    while (!signal.aborted && !paused) {
      connection = new AbortController();
      const stop = () => connection.abort();
      signal.addEventListener("abort", stop);
      let retry = DEFAULT_RETRY_MS;
      try {
        status.textContent = lastEventId ? "Resuming…" : "Connecting…";
        retry =
          (await readEvents("/api/v1/logs/stream", filterParams(state, { withTime: false }), {
            lastEventId,
            signal: connection.signal,
            onOpen: () => {
              status.textContent = "Live";
            },
            onEvent,
          })) ?? DEFAULT_RETRY_MS;
      } catch (error) {
        if (error.name === "AbortError") return;
        if (error.status && error.status < 500 && error.status !== 429) {
          // The request itself is wrong (key, filter): retrying will not help.
          status.textContent = "Stopped";
          notices.prepend(errorBox(error));
          return;
        }
        notices.prepend(errorBox(error));
      } finally {
        signal.removeEventListener("abort", stop);
      }
      if (signal.aborted || paused) return;
      status.textContent = `Reconnecting in ${Math.round(retry / 1000)} s…`;
      await wait(retry, signal);
    }
  };

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (paused) {
      if (connection) connection.abort();
      status.textContent = "Paused";
    } else {
      run();
    }
  });
  clear.addEventListener("click", () => {
    fill(list);
    received = 0;
    counter.textContent = "";
  });
  run();
}
