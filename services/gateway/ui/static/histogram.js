// Counts over time, stacked by level (POST /api/v1/logs/aggregate). Dragging across
// the bars (or clicking one) selects that time range; the from/to fields of the query
// bar are the keyboard's way to do the same.

import { el, formatNumber, svg } from "./dom.js";
import { LEVELS } from "./query.js";

const WIDTH = 1000;
const HEIGHT = 120;
// Severe levels at the bottom, where the eye finds them first.
const STACK = [...LEVELS].reverse();

function isoPlus(iso, seconds) {
  return new Date(Date.parse(iso) + seconds * 1000).toISOString();
}

function axisTime(iso) {
  return iso ? new Date(Date.parse(iso)).toISOString().replace(".000Z", "Z").replace("T", " ") : "";
}

export function renderHistogram({ buckets, intervalName, intervalSeconds, onSelect }) {
  const total = buckets.reduce((sum, b) => sum + b.count, 0);
  const peak = Math.max(1, ...buckets.map((b) => b.count));
  const n = Math.max(1, buckets.length);
  const barWidth = WIDTH / n;
  const chart = svg("svg", {
    class: "histogram-chart",
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": `${total} entries over time, ${n} bars of ${intervalName}`,
  });
  buckets.forEach((bucket, index) => {
    const group = svg("g", { class: "bar", dataset: { index: String(index) } });
    let y = HEIGHT;
    for (const level of STACK) {
      const count = bucket.by_level[level] || 0;
      if (!count) continue;
      const h = (count / peak) * (HEIGHT - 4);
      y -= h;
      group.append(
        svg("rect", {
          class: `lvl-fill-${level}`,
          x: index * barWidth + barWidth * 0.08,
          y,
          width: Math.max(barWidth * 0.84, 0.5),
          height: h,
        }),
      );
    }
    const counts = STACK.filter((l) => bucket.by_level[l]).map((l) => `${l} ${bucket.by_level[l]}`);
    group.append(
      svg(
        "title",
        {},
        `${bucket.time}: ${bucket.count}${counts.length ? ` (${counts.join(", ")})` : ""}`,
      ),
    );
    chart.append(group);
  });
  const selection = svg("rect", {
    class: "selection",
    x: 0,
    y: 0,
    width: 0,
    height: HEIGHT,
    visibility: "hidden",
  });
  chart.append(selection);

  const indexAt = (clientX) => {
    const box = chart.getBoundingClientRect();
    const ratio = Math.min(Math.max((clientX - box.left) / box.width, 0), 0.999999);
    return Math.floor(ratio * n);
  };
  let anchor = null;
  const show = (a, b) => {
    const lo = Math.min(a, b);
    const hi = Math.max(a, b);
    selection.setAttribute("x", String(lo * barWidth));
    selection.setAttribute("width", String((hi - lo + 1) * barWidth));
    selection.setAttribute("visibility", "visible");
  };
  chart.addEventListener("pointerdown", (event) => {
    if (!buckets.length || event.button !== 0) return;
    anchor = indexAt(event.clientX);
    chart.setPointerCapture(event.pointerId);
    show(anchor, anchor);
    event.preventDefault();
  });
  chart.addEventListener("pointermove", (event) => {
    if (anchor !== null) show(anchor, indexAt(event.clientX));
  });
  chart.addEventListener("pointerup", (event) => {
    if (anchor === null) return;
    const current = indexAt(event.clientX);
    const lo = Math.min(anchor, current);
    const hi = Math.max(anchor, current);
    anchor = null;
    onSelect(buckets[lo].time, isoPlus(buckets[hi].time, intervalSeconds));
  });
  chart.addEventListener("pointercancel", () => {
    anchor = null;
    selection.setAttribute("visibility", "hidden");
  });

  const first = buckets.length ? buckets[0].time : "";
  const last = buckets.length ? isoPlus(buckets[buckets.length - 1].time, intervalSeconds) : "";
  return el(
    "section",
    { class: "histogram", "aria-label": "Histogram" },
    el(
      "div",
      { class: "histogram-head" },
      el(
        "span",
        {},
        el("strong", { "data-testid": "histogram-total" }, formatNumber(total)),
        " entries, by ",
        intervalName,
      ),
      el(
        "span",
        { class: "legend" },
        LEVELS.map((level) => el("span", { class: `legend-item lvl-${level}` }, level)),
      ),
    ),
    chart,
    el(
      "div",
      { class: "histogram-axis" },
      el("span", {}, axisTime(first)),
      el("span", {}, "drag to zoom"),
      el("span", {}, axisTime(last)),
    ),
  );
}
