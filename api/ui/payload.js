// A payload viewer: text, pretty-printed JSON (objects and arrays fold), or a hex
// dump for binary; copy and download.
import { h } from "./dom.js";

/** Bytes shown in the hex dump (a download has them all). */
const HEX_SHOWN = 64 * 1024;

/**
 * @param {Uint8Array} bytes the payload
 * @param {object} options isText (a text message), name (file name for download),
 *   note (what to say above it, e.g. "truncated")
 */
export function payloadView(bytes, { isText, name, note }) {
  const text = decodeUtf8(bytes);
  let json;
  try {
    json = text != null && text.trim() ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  const modes = [];
  if (json !== undefined && typeof json === "object" && json !== null) modes.push("json");
  if (text != null) modes.push("text");
  modes.push("hex");
  // Binary opens as hex unless it is JSON.
  let mode = isText === false && !modes.includes("json") ? "hex" : modes[0];
  const body = h("div", { class: "payload-body" });
  const tabs = h("div", { class: "tabs" });
  const show = (m) => {
    mode = m;
    for (const b of tabs.children) b.classList.toggle("active", b.dataset.mode === m);
    body.replaceChildren(
      m === "json" ? jsonTree(json) : m === "text" ? h("pre", { class: "text" }, text) : hexDump(bytes)
    );
  };
  for (const m of modes) {
    tabs.append(
      h("button", { type: "button", dataset: { mode: m }, onclick: () => show(m) }, m === "json" ? "JSON" : m === "text" ? "Text" : "Hex")
    );
  }
  const copy = h(
    "button",
    {
      type: "button",
      onclick: async () => {
        const what = mode === "hex" ? hexText(bytes) : mode === "json" ? JSON.stringify(json, null, 2) : text;
        try {
          await navigator.clipboard.writeText(what);
          copy.textContent = "Copied";
        } catch {
          copy.textContent = "Copy failed";
        }
        setTimeout(() => (copy.textContent = "Copy"), 1500);
      },
    },
    "Copy"
  );
  const download = h(
    "button",
    {
      type: "button",
      onclick: () => {
        const url = URL.createObjectURL(new Blob([bytes]));
        const a = h("a", { href: url, download: name || "payload.bin" });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 1000);
      },
    },
    "Download"
  );
  const view = h(
    "div",
    { class: "payload" },
    h("div", { class: "payload-bar" }, tabs, h("span", { class: "muted" }, `${bytes.length} bytes`, note ? ` · ${note}` : ""), copy, download),
    body
  );
  show(mode);
  return view;
}

/** UTF-8 text, or null when the bytes are not valid UTF-8. */
function decodeUtf8(bytes) {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

function jsonTree(value, key) {
  const label = key === undefined ? null : h("span", { class: "json-key" }, JSON.stringify(key), ": ");
  if (value === null || typeof value !== "object") {
    return h("div", { class: "json-leaf" }, label, h("span", { class: `json-${value === null ? "null" : typeof value}` }, JSON.stringify(value)));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const open = Array.isArray(value) ? "[" : "{";
  const close = Array.isArray(value) ? "]" : "}";
  return h(
    "details",
    { class: "json-node", open: true },
    h("summary", null, label, `${open} ${entries.length} ${Array.isArray(value) ? "items" : "keys"} ${close}`),
    entries.map(([k, v]) => jsonTree(v, Array.isArray(value) ? undefined : k))
  );
}

function hexText(bytes) {
  const lines = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const row = bytes.subarray(off, off + 16);
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${off.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

function hexDump(bytes) {
  const shown = bytes.subarray(0, HEX_SHOWN);
  const more = bytes.length > HEX_SHOWN ? `\n… ${bytes.length - HEX_SHOWN} more bytes (Download has them all)` : "";
  return h("pre", { class: "hex" }, hexText(shown) + more);
}
