// Small DOM helpers shared by the views: element building (no HTML strings, so no
// captured text is ever parsed as markup) and formatting.

/** An element: `h("a", {href: "#/x", onclick: f, class: "c"}, "text", child)`. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" || key === "checked" || key === "selected") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A <select> with `options` ([value, label] pairs), `value` selected. */
export function select(name, options, value, props = {}) {
  return h(
    "select",
    { name, ...props },
    options.map(([v, label]) => h("option", { value: v, selected: v === value }, label))
  );
}

/** Unix milliseconds as local date and time, to the millisecond. */
export function formatTime(ms) {
  if (ms == null) return "";
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}

/** Milliseconds after a start, as "+1.234 s". */
export function formatOffset(ms, start) {
  if (ms == null || start == null) return "";
  return `+${((ms - start) / 1000).toFixed(3)} s`;
}

export function formatBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** Calls `f` once, `ms` after the last of a burst of calls. */
export function debounce(f, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => f(...args), ms);
  };
}

/** Base64 (as the API sends binary data) to bytes. */
export function fromBase64(text) {
  const raw = atob(text || "");
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** Bytes to base64, for sending binary messages. */
export function toBase64(bytes) {
  let raw = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    raw += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(raw);
}
