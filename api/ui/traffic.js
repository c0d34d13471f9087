// The traffic list (#/traffic): every exchange and connection, newest first, with
// the API's filters, updated live from `traffic:batch` events.
import { get, withToken } from "./api.js";
import { h, select, formatTime, debounce } from "./dom.js";

/** Rows kept on the page; older ones are a "Load more" away. */
const PAGE = 200;
const MAX_ROWS = 2000;

const PROTOCOLS = [
  ["", "any protocol"],
  ["http", "http"],
  ["https", "https"],
  ["ws", "ws"],
  ["wss", "wss"],
  ["ws,wss", "WebSockets"],
  ["tls", "tls (untouched)"],
  ["tcp", "tcp (untouched)"],
];

/** Shows the list in `root`; returns what ends the view. */
export function trafficView(root, live) {
  const filters = {};
  let entries = [];
  let count = 0;
  let loading = null;
  const status = h("span", { class: "muted" });
  const body = h("tbody");
  const more = h("button", { type: "button", onclick: () => load(entries.length) }, "Load more");
  const field = (name, placeholder, size = 14) =>
    h("input", { name, placeholder, size, oninput: (e) => changed(name, e.target.value) });
  const form = h(
    "form",
    { class: "filters", onsubmit: (e) => e.preventDefault() },
    field("search", "host, path or URL", 24),
    field("methods", "methods: GET,POST", 16),
    select("protocol", PROTOCOLS, "", { onchange: (e) => changed("protocol", e.target.value) }),
    field("status", "status: 101,4xx", 12),
    field("process", "process", 12),
    field("container", "container", 12)
  );
  const exportRange = harRange();
  root.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", null, "Traffic"), status),
    form,
    h(
      "table",
      { class: "traffic" },
      h("thead", null, h("tr", null, ["Time", "Method", "Protocol", "Status", "Host", "Path", "Process", "Container", "Duration"].map((t) => h("th", null, t)))),
      body
    ),
    h("div", { class: "toolbar" }, more),
    exportRange
  );

  const reload = debounce(() => load(0), 300);
  function changed(name, value) {
    if (value.trim()) filters[name] = value.trim();
    else delete filters[name];
    reload();
  }

  function query(offset, limit) {
    const q = new URLSearchParams(filters);
    q.set("limit", limit);
    q.set("offset", offset);
    return `/api/traffic?${q}`;
  }

  async function load(offset) {
    const mine = (loading = {});
    status.textContent = "loading…";
    let page;
    try {
      page = await get(query(offset, PAGE));
    } catch (e) {
      if (loading === mine) status.textContent = e.message;
      return;
    }
    if (loading !== mine) return;
    entries = offset === 0 ? page.entries : entries.concat(page.entries);
    count = page.count;
    draw();
  }

  function draw() {
    if (entries.length > MAX_ROWS) entries.length = MAX_ROWS;
    body.replaceChildren(...entries.map(row));
    status.textContent = `${count} entr${count === 1 ? "y" : "ies"}${Object.keys(filters).length ? " match" : ""}, ${entries.length} shown`;
    more.hidden = entries.length >= count || entries.length >= MAX_ROWS;
  }

  // Live: without filters new entries go on top; with filters the page is asked
  // again (the API decides what matches), at most every 300 ms.
  const stop = live.on("traffic:batch", (batch) => {
    if (Object.keys(filters).length) return reload();
    const known = new Set(batch.map((e) => e.id));
    entries = batch
      .slice()
      .reverse()
      .concat(entries.filter((e) => !known.has(e.id)));
    count += batch.length;
    draw();
  });
  load(0);
  return stop;
}

function row(e) {
  const open = () => (location.hash = `#/traffic/${e.id}`);
  return h(
    "tr",
    { class: e.error ? "failed" : "", dataset: { id: e.id }, onclick: open },
    h("td", null, h("a", { href: `#/traffic/${e.id}` }, formatTime(e.timestamp))),
    h("td", null, e.method),
    h("td", null, e.protocol, e.httpVersion === "HTTP/2" ? h("span", { class: "badge" }, "h2") : null),
    h("td", null, e.status ?? (e.error ? "error" : "")),
    h("td", null, e.host),
    h("td", { class: "path", title: e.url }, e.path),
    h("td", null, e.process ? `${e.process}${e.pid ? ` (${e.pid})` : ""}` : ""),
    h("td", null, e.containerName || ""),
    h("td", null, e.duration != null ? `${Math.round(e.duration)} ms` : "")
  );
}

/** HAR of everything captured in a time range. */
function harRange() {
  const from = h("input", { type: "datetime-local", step: "1", name: "from" });
  const to = h("input", { type: "datetime-local", step: "1", name: "to" });
  const link = h("a", { class: "button", download: "frametap.har" }, "Download HAR");
  const update = () => {
    const q = new URLSearchParams();
    if (from.value) q.set("from", new Date(from.value).getTime());
    if (to.value) q.set("to", new Date(to.value).getTime());
    link.href = withToken(`/api/har?${q}`);
  };
  from.onchange = update;
  to.onchange = update;
  update();
  return h("div", { class: "toolbar export" }, "Export a time range:", from, "to", to, link);
}
