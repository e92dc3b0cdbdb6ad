// Operations: the tenant's services and storage, its alert rules (list, create from the
// current query, enable/disable, events) and its retention policy.

import { api } from "./api.js";
import { el, errorBox, fill, formatBytes, formatNumber, formatTime } from "./dom.js";
import { filterBody } from "./query.js";

function table(headers, rows) {
  return el(
    "div",
    { class: "table-scroll" },
    el(
      "table",
      { class: "data" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          headers.map((h) => el("th", { scope: "col" }, h)),
        ),
      ),
      el("tbody", {}, rows),
    ),
  );
}

function section(title, ...children) {
  return el("section", { class: "ops-section" }, el("h2", {}, title), ...children);
}

async function loadInto(slot, load) {
  try {
    fill(slot, await load());
  } catch (error) {
    if (error.name !== "AbortError") fill(slot, errorBox(error));
  }
}

async function servicesPanel(signal, navigate, state) {
  const answer = await api("GET", "/api/v1/logs/services", { signal });
  if (!answer.services.length)
    return el("p", { class: "muted" }, "No service has sent logs in the retention window.");
  return table(
    ["service", "entries", "last seen (UTC minute)"],
    answer.services.map((s) =>
      el(
        "tr",
        {},
        el(
          "td",
          {},
          el(
            "button",
            {
              type: "button",
              class: "link",
              onclick: () =>
                navigate({
                  ...state,
                  view: "logs",
                  id: "",
                  filters: { services: s.service_name },
                  metadata: [],
                }),
            },
            s.service_name,
          ),
        ),
        el("td", { class: "num" }, formatNumber(s.count)),
        el("td", {}, formatTime(s.last_seen)),
      ),
    ),
  );
}

async function storagePanel(signal) {
  const s = await api("GET", "/api/v1/logs/storage", { signal });
  const used =
    s.quota_used === null || s.quota_used === undefined
      ? "–"
      : `${(s.quota_used * 100).toFixed(1)} %`;
  return el(
    "dl",
    { class: "facts" },
    el("dt", {}, "tenant"),
    el("dd", {}, el("code", {}, s.tenant_id)),
    el("dt", {}, "rows"),
    el("dd", {}, formatNumber(s.rows)),
    el("dt", {}, "bytes"),
    el("dd", {}, formatBytes(s.bytes)),
    el("dt", {}, "quota"),
    el("dd", {}, s.quota_bytes ? `${formatBytes(s.quota_bytes)} (${s.quota_scope || ""})` : "none"),
    el("dt", {}, "quota used"),
    el("dd", {}, used),
  );
}

function eventsTable(events) {
  if (!events.length) return el("p", { class: "muted" }, "No events yet.");
  return table(
    ["kind", "group", "count", "threshold", "started", "resolved", "reason"],
    events.map((e) =>
      el(
        "tr",
        {},
        el("td", {}, e.kind),
        el("td", {}, JSON.stringify(e.group)),
        el("td", { class: "num" }, String(e.observed_count)),
        el("td", { class: "num" }, `${e.condition || ""} ${e.threshold}`),
        el("td", {}, formatTime(e.started_at)),
        el("td", {}, formatTime(e.resolved_at)),
        el("td", {}, e.reason || ""),
      ),
    ),
  );
}

function alertRow(rule, refresh, signal) {
  const events = el("tr", { hidden: true }, el("td", { colspan: "7" }));
  const message = el("span", { class: "form-error", role: "alert" });
  const act = async (path) => {
    try {
      await api("POST", `/api/v1/alerts/${rule.id}/${path}`, { signal });
      refresh();
    } catch (error) {
      message.textContent = error.message;
    }
  };
  const showEvents = async () => {
    if (!events.hidden) {
      events.hidden = true;
      return;
    }
    events.hidden = false;
    await loadInto(events.firstChild, async () => {
      const answer = await api("GET", `/api/v1/alerts/${rule.id}/events`, { signal });
      return eventsTable(answer.events);
    });
  };
  return [
    el(
      "tr",
      { class: "alert-rule", dataset: { id: rule.id } },
      el("td", {}, rule.name),
      el("td", {}, el("span", { class: `state state-${rule.state}` }, rule.state)),
      el("td", {}, rule.enabled ? "enabled" : "disabled"),
      el("td", {}, `${rule.condition || "above"} ${rule.threshold} in ${rule.window_mins} min`),
      el("td", {}, rule.severity),
      el("td", {}, JSON.stringify(rule.filter || {})),
      el(
        "td",
        {},
        el(
          "button",
          {
            type: "button",
            class: "small",
            onclick: () => act(rule.enabled ? "disable" : "enable"),
          },
          rule.enabled ? "Disable" : "Enable",
        ),
        el("button", { type: "button", class: "small", onclick: showEvents }, "Events"),
        message,
      ),
    ),
    events,
  ];
}

function alertForm(state, refresh, signal) {
  const filter = filterBody(state, { withTime: false });
  const message = el("div", { class: "form-error", role: "alert" });
  const form = el(
    "form",
    { class: "alert-form", "aria-label": "New alert rule" },
    el(
      "p",
      {},
      "New rule counting the current query's entries: ",
      el("code", {}, JSON.stringify(filter)),
    ),
    el(
      "label",
      { class: "field" },
      el("span", {}, "Name"),
      el("input", { name: "name", required: true, maxlength: "128" }),
    ),
    el(
      "label",
      { class: "field" },
      el("span", {}, "Condition"),
      el(
        "select",
        { name: "condition" },
        el("option", { value: "above" }, "at least"),
        el("option", { value: "below" }, "fewer than"),
      ),
    ),
    el(
      "label",
      { class: "field" },
      el("span", {}, "Threshold"),
      el("input", { name: "threshold", type: "number", min: "1", value: "1", required: true }),
    ),
    el(
      "label",
      { class: "field" },
      el("span", {}, "Window (min)"),
      el("input", { name: "window_mins", type: "number", min: "1", value: "5", required: true }),
    ),
    el(
      "label",
      { class: "field" },
      el("span", {}, "Severity"),
      el(
        "select",
        { name: "severity" },
        ["warning", "critical", "info"].map((s) => el("option", { value: s }, s)),
      ),
    ),
    el("button", { type: "submit", class: "primary" }, "Create rule"),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      await api("POST", "/api/v1/alerts", {
        signal,
        body: {
          name: String(data.get("name")),
          condition: String(data.get("condition")),
          threshold: Number(data.get("threshold")),
          window_mins: Number(data.get("window_mins")),
          severity: String(data.get("severity")),
          filter,
        },
      });
      form.reset();
      message.textContent = "";
      refresh();
    } catch (error) {
      message.textContent = error.message;
    }
  });
  return form;
}

function alertsPanel(slot, state, signal) {
  const list = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  const refresh = () =>
    loadInto(list, async () => {
      const answer = await api("GET", "/api/v1/alerts", {
        signal,
        params: new URLSearchParams({ limit: "1000" }),
      });
      if (!answer.alerts.length) return el("p", { class: "muted" }, "No alert rules.");
      return table(
        ["name", "state", "enabled", "condition", "severity", "filter", ""],
        answer.alerts.map((rule) => alertRow(rule, refresh, signal)),
      );
    });
  fill(slot, list, alertForm(state, refresh, signal));
  refresh();
}

async function retentionPanel(slot, signal) {
  const storage = await api("GET", "/api/v1/logs/storage", { signal });
  const policy = await api("GET", `/api/v1/retention/tenant/${storage.tenant_id}`, { signal });
  const message = el("div", { class: "form-error", role: "alert" });
  const form = el(
    "form",
    { class: "retention-form", "aria-label": "Retention policy" },
    el(
      "label",
      { class: "field" },
      el("span", {}, "Keep days"),
      el("input", {
        name: "retention_days",
        type: "number",
        min: "1",
        max: "3650",
        value: String(policy.retention_days),
        required: true,
      }),
    ),
    el(
      "label",
      { class: "field" },
      el("span", {}, "Max size (GB)"),
      el("input", {
        name: "max_size_gb",
        type: "number",
        min: "0.001",
        step: "0.001",
        value: policy.max_size_gb ?? "",
      }),
    ),
    el("button", { type: "submit", class: "primary" }, policy.is_default ? "Set a policy" : "Save"),
    message,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const size = String(data.get("max_size_gb") || "");
    const body = {
      retention_days: Number(data.get("retention_days")),
      max_size_gb: size ? Number(size) : null,
      archive_enabled: Boolean(policy.archive_enabled),
      archive_path: policy.archive_path ?? null,
    };
    try {
      if (policy.is_default)
        await api("POST", "/api/v1/retention", {
          signal,
          body: { tenant_id: storage.tenant_id, ...body },
        });
      else await api("PUT", `/api/v1/retention/${policy.id}`, { signal, body });
      await loadInto(slot, () => retentionPanel(slot, signal));
    } catch (error) {
      message.textContent = error.message;
    }
  });
  return el(
    "div",
    {},
    el(
      "dl",
      { class: "facts" },
      el("dt", {}, "policy"),
      el("dd", {}, policy.is_default ? "the deployment's defaults" : "the tenant's own"),
      el("dt", {}, "keeps"),
      el(
        "dd",
        {},
        `${policy.retention_days} days (rows before ${formatTime(policy.cutoff)} are removed)`,
      ),
      el("dt", {}, "size limit"),
      el("dd", {}, policy.max_size_gb ? `${policy.max_size_gb} GB` : "none of its own"),
      el("dt", {}, "archive"),
      el("dd", {}, policy.archive_enabled ? `to ${policy.archive_path}` : "off"),
    ),
    form,
  );
}

export function renderOps(root, state, { signal, navigate }) {
  const services = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  const storage = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  const alerts = el("div");
  const retention = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  fill(
    root,
    section("Services", services),
    section("Storage", storage),
    section("Alert rules", alerts),
    section(
      "Retention",
      el("p", { class: "muted" }, "Needs a key with the admin scope."),
      retention,
    ),
  );
  loadInto(services, () => servicesPanel(signal, navigate, state));
  loadInto(storage, () => storagePanel(signal));
  alertsPanel(alerts, state, signal);
  loadInto(retention, () => retentionPanel(retention, signal));
}
