// Builds the page from data without ever parsing markup: every string becomes a text
// node or an attribute value. Log lines are hostile input, so nothing here (or anywhere
// in the explorer) assigns innerHTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else {
      node.setAttribute(name === "className" ? "class" : name, value === true ? "" : String(value));
    }
  }
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** An HTML element: el("button", {class: "x", onclick: f}, "text", otherNode). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  apply(node, attrs);
  return append(node, children);
}

/** An SVG element (the histogram). */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  apply(node, attrs);
  return append(node, children);
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** An error box that says what went wrong in words (the problem's detail). */
export function errorBox(error) {
  const box = el("div", { class: "error", role: "alert" }, describe(error));
  if (error && error.status === 401) {
    // The key was revoked or the session is stale: offer the way back in.
    box.append(
      " ",
      el(
        "button",
        {
          type: "button",
          class: "small",
          onclick: () => document.dispatchEvent(new Event("minisource:signout")),
        },
        "Sign in again",
      ),
    );
  }
  return box;
}

export function describe(error) {
  return error && error.message ? error.message : String(error);
}

export async function copyText(text) {
  // The Clipboard API needs a secure context (https or localhost); elsewhere the old
  // selection-based copy still works.
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = el("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

export function formatTime(iso) {
  if (!iso) return "";
  // The API's timestamps are UTC RFC 3339 with microseconds: shown as they are, UTC.
  return iso.replace("T", " ");
}

export function formatNumber(n) {
  return Number(n).toLocaleString("en-US");
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}
