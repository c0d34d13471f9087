// One traffic entry (#/traffic/<id>): an HTTP exchange with its headers and bodies,
// or a WebSocket connection: its handshake, state and counters, and its messages or
// raw frames in a virtual list that follows live, with search, filters, a payload
// viewer, sending, and exports.
import { call, get, getBytes, nextLink, withToken } from "./api.js";
import { h, select, formatTime, formatOffset, formatBytes, fromBase64, toBase64 } from "./dom.js";
import { VirtualList } from "./virtual_list.js";
import { payloadView } from "./payload.js";

/**
 * What the page measures about live items, for `cargo xtask bench` (read over the
 * DevTools protocol): how many arrived, and capture-to-row latencies (ms) of the
 * last ones, in a fixed ring.
 */
const stats = (window.frametapUiStats = {
  received: 0,
  first: null,
  last: null,
  latencies: new Float64Array(20_000),
});

/** Items kept in memory while following live; the oldest go first. */
const MAX_ITEMS = 50_000;
/** Payloads kept with their item; a larger one is read again when opened. */
const KEPT_PAYLOAD = 64 * 1024;
const PAGE = 1000;
const OPCODES = { 0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong" };

export function connectionView(root, id, live) {
  const stops = [];
  const view = h("div", { class: "connection" }, h("p", { class: "muted" }, "loading…"));
  root.replaceChildren(view);
  show(view, id, live, stops).catch((e) => view.replaceChildren(h("p", { class: "error" }, e.message)));
  return () => stops.forEach((stop) => stop());
}

async function show(view, id, live, stops) {
  const entry = await get(`/api/traffic/${id}`);
  const websocket = entry.protocol === "ws" || entry.protocol === "wss";
  view.replaceChildren(
    h("p", null, h("a", { href: "#/traffic" }, "← Traffic")),
    h("h2", { class: "url" }, h("span", { class: "method" }, entry.method), " ", entry.url),
    facts(entry),
    headers("Request headers", entry.requestHeaders),
    headers("Response headers", entry.responseHeaders)
  );
  if (websocket) {
    await websocketPanel(view, entry, live, stops);
  } else {
    view.append(bodies(entry));
  }
}

function facts(e) {
  const rows = [
    ["Status", e.status ?? "none"],
    ["HTTP", e.httpVersion],
    ["Started", formatTime(e.timestamp)],
    ["Duration", e.duration != null ? `${Math.round(e.duration)} ms` : null],
    ["Client", e.clientAddress],
    ["Server", e.remoteAddress],
    ["Process", e.process ? `${e.process}${e.pid ? ` (pid ${e.pid})` : ""}` : null],
    ["Container", e.containerName || e.containerId],
    ["TLS", [e.tlsVersion, e.sni && `SNI ${e.sni}`].filter(Boolean).join(", ") || null],
    ["Error", e.error],
    ["Not intercepted", e.notIntercepted],
  ];
  return h(
    "dl",
    { class: "facts" },
    rows.filter(([, v]) => v != null && v !== "").map(([k, v]) => [h("dt", null, k), h("dd", { class: k === "Error" ? "error" : "" }, String(v))])
  );
}

function headers(title, map) {
  const pairs = Object.entries(map || {});
  return h(
    "details",
    { class: "headers" },
    h("summary", null, `${title} (${pairs.length})`),
    h("table", null, pairs.map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, Array.isArray(v) ? v.join(", ") : String(v)))))
  );
}

function bodies(entry) {
  const part = (which) => {
    const holder = h("div");
    const button = h(
      "button",
      {
        type: "button",
        onclick: async () => {
          button.disabled = true;
          try {
            const { bytes, headers } = await getBytes(`/api/traffic/${entry.id}/${which}/body`);
            const truncated = headers.get("X-Frametap-Truncated") === "true";
            holder.replaceChildren(payloadView(bytes, { name: `${entry.id}-${which}.bin`, note: truncated ? "truncated when recorded" : "" }));
          } catch (e) {
            holder.replaceChildren(h("p", { class: "error" }, e.message));
          }
        },
      },
      `Show the ${which} body`
    );
    return h("section", null, button, holder);
  };
  return h("div", { class: "bodies" }, part("request"), part("response"), exportLinks(entry.id, false));
}

function exportLinks(id, websocket) {
  return h(
    "p",
    { class: "toolbar" },
    h("a", { class: "button", href: withToken(`/api/har?trafficId=${id}`), download: `${id}.har` }, "Download HAR"),
    websocket ? h("a", { class: "button", href: withToken(`/api/websocket/${id}/frames.ndjson`), download: `${id}.ndjson` }, "Download frames (NDJSON)") : null
  );
}

/** A frame or message as a list item. */
function item(kind, x) {
  const fromClient = x.direction === "client-to-server";
  let bytes = null;
  let text = null;
  if (kind === "frames") {
    if (x.data != null) bytes = fromBase64(x.data);
    if (bytes && !x.isBinary && x.opcode !== 8) text = new TextDecoder().decode(bytes);
    if (x.opcode === 8) text = x.closeCode != null ? `close ${x.closeCode}${x.closeReason ? ` ${x.closeReason}` : ""}` : "close";
  } else if (x.contentEncoding === "base64") {
    bytes = fromBase64(x.content);
  } else {
    text = x.content;
  }
  const type = kind === "frames" ? OPCODES[x.opcode] || `opcode ${x.opcode}` : x.type;
  const flags = [];
  if (kind === "frames") {
    if (!x.fin) flags.push("no FIN");
    if (x.compressed) flags.push("compressed");
    if (x.masked) flags.push("masked");
  } else if (x.frameCount > 1) flags.push(`${x.frameCount} frames`);
  for (const f of ["truncated", "dropped", "injected", "modified", "incomplete"]) if (x[f]) flags.push(f);
  const size = (text != null ? text.length : bytes ? bytes.length : 0);
  const big = size > KEPT_PAYLOAD;
  return {
    id: x.id,
    fromClient,
    timestamp: x.timestamp,
    type,
    length: x.length,
    wireLength: x.wireLength,
    flags,
    isText: text != null && (kind === "messages" ? x.type === "text" : !x.isBinary),
    text: big ? text.slice(0, KEPT_PAYLOAD) : text,
    bytes: big && bytes ? bytes.subarray(0, KEPT_PAYLOAD) : bytes,
    partial: big,
    lastFrameId: x.lastFrameId,
  };
}

function preview(it) {
  if (it.text != null) return it.text.slice(0, 300).replace(/\s+/g, " ");
  if (it.bytes) return Array.from(it.bytes.subarray(0, 48), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return "";
}

async function websocketPanel(view, entry, live, stops) {
  const id = entry.id;
  let conn = await get(`/api/websocket/${id}`);
  const state = h("div", { class: "state" });
  const drawState = () => state.replaceChildren(stateView(conn));
  drawState();

  let kind = "messages";
  let all = [];
  let next = null;
  let atEnd = false;
  let loading = false;
  let generation = 0;
  const filters = { direction: "", type: "", flag: "" };
  // A search of the whole connection, by the API (`contains` or `regex`): only
  // matching messages are listed, paged like the rest.
  let server = null;
  const serverNote = h("p", { class: "server-search", hidden: true });
  const search = { text: "", regex: false, caseSensitive: false, hits: [], at: -1 };
  const counter = h("span", { class: "muted" });
  const searchStatus = h("span", { class: "muted search-status" });
  const detail = h("div", { class: "detail" });
  const listHolder = h("div", { class: "list-holder" });
  const followBox = h("input", { type: "checkbox", checked: true, name: "follow" });

  const visible = (it) =>
    (!filters.direction || (filters.direction === "to-server") === it.fromClient) &&
    (!filters.type || (filters.type === "control" ? !["text", "binary", "continuation"].includes(it.type) : it.type === filters.type)) &&
    (!filters.flag || it.flags.includes(filters.flag));

  const list = new VirtualList(listHolder, {
    rowHeight: 26,
    render: (it, i) =>
      h(
        "div",
        {
          class: `item ${it.fromClient ? "up" : "down"}${search.hits.includes(i) ? " match" : ""}`,
          dataset: { id: it.id },
          onclick: () => open(i),
        },
        h("span", { class: "dir", title: it.fromClient ? "client → server" : "server → client" }, it.fromClient ? "▲" : "▼"),
        h("span", { class: "time", title: formatTime(it.timestamp) }, formatOffset(it.timestamp, conn.timestamp)),
        h("span", { class: "type" }, it.type),
        h("span", { class: "len" }, formatBytes(it.length)),
        kind === "frames" ? h("span", { class: "len muted" }, formatBytes(it.wireLength)) : null,
        h("span", { class: "flags" }, it.flags.map((f) => h("span", { class: `badge ${f.replace(/\s/g, "-")}` }, f))),
        h("span", { class: "preview" }, preview(it))
      ),
    nearEnd: () => {
      if (next && !loading) loadPage();
    },
  });
  list.viewport.addEventListener("wheel", () => {
    // Scrolling up stops following; the checkbox says so.
    requestAnimationFrame(() => {
      const v = list.viewport;
      const bottom = v.scrollTop + v.clientHeight >= v.scrollHeight - 30;
      if (!bottom && list.follow) setFollow(false);
    });
  });
  const setFollow = (on) => {
    list.follow = on;
    followBox.checked = on;
    list.schedule();
  };
  followBox.onchange = () => setFollow(followBox.checked);

  function refilter() {
    list.setItems(all.filter(visible));
    runSearch();
  }

  function pagePath() {
    const q = new URLSearchParams({ limit: PAGE });
    if (filters.direction) q.set("direction", filters.direction);
    for (const [k, v] of Object.entries(server || {})) q.set(k, v);
    return `/api/websocket/${id}/${kind}?${q}`;
  }

  function searchEverything() {
    if (!search.text) return;
    if (search.regex) server = { regex: search.caseSensitive ? search.text : `(?i)${search.text}` };
    else if (search.caseSensitive) server = { contains: search.text };
    else server = { regex: `(?i)${search.text.replace(/[\\.+*?()|[\]{}^$#&\-~]/g, "\\$&")}` };
    if (kind !== "messages") {
      kind = "messages";
      controls.querySelector('select[name="kind"]').value = "messages";
    }
    serverNote.replaceChildren(
      `Only the messages of the whole connection that match ${JSON.stringify(search.text)}${search.regex ? " (regex)" : ""}; live updates wait. `,
      h("button", { type: "button", name: "show-all", onclick: () => { server = null; serverNote.hidden = true; reload(); } }, "Show all")
    );
    serverNote.hidden = false;
    reload();
  }

  async function loadPage(first) {
    loading = true;
    const mine = generation;
    try {
      const { json, headers } = await call("GET", first ? pagePath() : next);
      if (mine !== generation) return;
      const items = json.map((x) => item(kind, x));
      all.push(...items);
      next = nextLink(headers);
      atEnd = next == null;
      list.append(items.filter(visible));
      trim();
      counter.textContent = `${all.length} ${kind} loaded${atEnd ? "" : ", more on scroll"}`;
      runSearch();
    } catch (e) {
      counter.textContent = e.message;
    } finally {
      loading = false;
    }
  }

  function reload() {
    generation += 1;
    all = [];
    next = null;
    atEnd = false;
    list.setItems([]);
    detail.replaceChildren();
    loadPage(true);
  }

  /** Keeps memory bounded: when following, the oldest items go. */
  function trim() {
    const over = all.length - MAX_ITEMS;
    if (over <= 0) return;
    const dropped = all.splice(0, over);
    const gone = new Set(dropped.map((d) => d.id));
    let n = 0;
    while (n < list.items.length && gone.has(list.items[n].id)) n++;
    list.dropFront(n);
  }

  // Live: items of this connection arrive in capture order; once the pages reached
  // the end, they are appended (batched by the list, once per animation frame).
  const pending = [];
  const onLive = (which) => (x) => {
    if (x.trafficId !== id || kind !== which || !atEnd || server) return;
    const last = all.length ? all[all.length - 1].id : "";
    if (x.id <= last) return;
    pending.push(item(kind, x));
    if (pending.length === 1) {
      requestAnimationFrame(() => {
        const batch = pending.splice(0);
        all.push(...batch);
        list.append(batch.filter(visible));
        trim();
        const now = Date.now();
        stats.first ??= now;
        stats.last = now;
        for (const it of batch) {
          stats.latencies[stats.received % stats.latencies.length] = now - it.timestamp;
          stats.received += 1;
        }
        counter.textContent = `${all.length} ${kind} loaded`;
        if (search.text) runSearch();
      });
    }
  };
  stops.push(live.on("websocket:message", onLive("messages")));
  stops.push(live.on("websocket:frame", onLive("frames")));
  stops.push(
    live.on("websocket:close", async (x) => {
      if (x.trafficId !== id) return;
      conn = await get(`/api/websocket/${id}`);
      drawState();
    })
  );

  async function open(i) {
    const it = list.items[i];
    if (!it) return;
    list.show(i);
    let bytes = it.bytes || new TextEncoder().encode(it.text ?? "");
    let note = it.flags.includes("truncated") ? "truncated when recorded" : "";
    if (it.partial) {
      try {
        bytes = await fullPayload(id, kind, it);
      } catch (e) {
        note = `only the first ${KEPT_PAYLOAD} bytes: ${e.message}`;
      }
    }
    detail.replaceChildren(
      h(
        "div",
        { class: "detail-head" },
        h("strong", null, it.fromClient ? "client → server" : "server → client"),
        ` · ${it.type} · ${formatTime(it.timestamp)} (${formatOffset(it.timestamp, conn.timestamp)}) · ${it.id}`,
        it.flags.length ? ` · ${it.flags.join(", ")}` : ""
      ),
      payloadView(bytes, { isText: it.isText, name: `${it.id}.${it.isText ? "txt" : "bin"}`, note })
    );
  }

  function runSearch() {
    search.hits = [];
    if (search.text) {
      let test;
      if (search.regex) {
        let re;
        try {
          re = new RegExp(search.text, search.caseSensitive ? "" : "i");
        } catch (e) {
          searchStatus.textContent = `not a regular expression: ${e.message}`;
          list.schedule();
          return;
        }
        test = (s) => re.test(s);
      } else {
        const needle = search.caseSensitive ? search.text : search.text.toLowerCase();
        test = (s) => (search.caseSensitive ? s : s.toLowerCase()).includes(needle);
      }
      list.items.forEach((it, i) => {
        if (it.text != null && test(it.text)) search.hits.push(i);
      });
    }
    if (search.at >= search.hits.length) search.at = search.hits.length - 1;
    const where = atEnd ? "" : " (in what is loaded)";
    const n = search.hits.length;
    searchStatus.textContent = !search.text
      ? ""
      : n === 0
        ? `no match${where}`
        : search.at < 0
          ? `${n} match${n === 1 ? "" : "es"}${where}`
          : `${search.at + 1} of ${n}${where}`;
    list.schedule();
  }

  function step(delta) {
    if (!search.hits.length) return;
    setFollow(false);
    search.at = (search.at + delta + search.hits.length) % search.hits.length;
    searchStatus.textContent = `${search.at + 1} of ${search.hits.length}`;
    open(search.hits[search.at]);
  }

  const searchBox = h("input", {
    type: "search",
    name: "search",
    placeholder: "search messages",
    oninput: (e) => {
      search.text = e.target.value;
      search.at = -1;
      runSearch();
    },
    onkeydown: (e) => {
      if (e.key === "Enter") step(e.shiftKey ? -1 : 1);
    },
  });
  const check = (name, label, f) =>
    h("label", null, h("input", { type: "checkbox", name, onchange: (e) => f(e.target.checked) }), label);

  const controls = h(
    "div",
    { class: "toolbar list-controls" },
    select("kind", [["messages", "Messages"], ["frames", "Raw frames"]], kind, {
      onchange: (e) => {
        kind = e.target.value;
        reload();
      },
    }),
    select("direction", [["", "both directions"], ["to-server", "▲ client → server"], ["to-client", "▼ server → client"]], "", {
      onchange: (e) => {
        filters.direction = e.target.value;
        reload();
      },
    }),
    select("type", [["", "any type"], ["text", "text"], ["binary", "binary"], ["control", "control"]], "", {
      onchange: (e) => {
        filters.type = e.target.value;
        refilter();
      },
    }),
    select("flag", [["", "any flags"], ["injected", "injected"], ["dropped", "dropped"], ["modified", "modified"], ["truncated", "truncated"], ["compressed", "compressed"]], "", {
      onchange: (e) => {
        filters.flag = e.target.value;
        refilter();
      },
    }),
    searchBox,
    check("regex", "regex", (on) => {
      search.regex = on;
      runSearch();
    }),
    check("case", "case", (on) => {
      search.caseSensitive = on;
      runSearch();
    }),
    h("button", { type: "button", name: "search-all", title: "search the whole connection, not only what is loaded", onclick: searchEverything }, "Search all"),
    h("button", { type: "button", name: "previous", onclick: () => step(-1) }, "↑"),
    h("button", { type: "button", name: "next", onclick: () => step(1) }, "↓"),
    searchStatus,
    h("label", null, followBox, "follow"),
    counter
  );

  view.append(state, exportLinks(id, true), sendForm(id), controls, serverNote, listHolder, detail);
  loadPage(true);
}

function stateView(c) {
  let state = "open";
  if (!c.open) {
    const by = c.closedByClient === true ? "client" : c.closedByClient === false ? "server" : null;
    state = `closed${by ? ` by the ${by}` : ""}`;
    if (c.closeCode != null) state += `, ${c.closeCode}${c.closeReason ? ` “${c.closeReason}”` : ""}`;
  }
  return h(
    "dl",
    { class: "facts" },
    h("dt", null, "State"),
    h("dd", { class: c.open ? "open" : "closed" }, state, c.abnormal ? h("span", { class: "error" }, ` (${c.abnormal})`) : null),
    c.subprotocol ? [h("dt", null, "Subprotocol"), h("dd", null, c.subprotocol)] : null,
    c.extensions ? [h("dt", null, "Extensions"), h("dd", null, c.extensions)] : null,
    h("dt", null, "Frames"),
    h(
      "dd",
      null,
      `${c.frameCount} recorded`,
      c.framesFromClient != null ? ` · ${c.framesFromClient} from the client, ${c.framesFromServer} from the server` : "",
      c.framesFromFrametap ? ` · ${c.framesFromFrametap} from frametap` : ""
    ),
    c.bytesFromClient != null ? [h("dt", null, "Bytes"), h("dd", null, `${formatBytes(c.bytesFromClient)} from the client, ${formatBytes(c.bytesFromServer)} from the server`)] : null,
    c.timestampEnd ? [h("dt", null, "Ended"), h("dd", null, formatTime(c.timestampEnd))] : null
  );
}

/** The whole payload of an item kept only in part. */
async function fullPayload(id, kind, it) {
  if (kind === "frames") {
    const f = await get(`/api/websocket/frame/${it.id}`);
    return fromBase64(f.data);
  }
  // The message that starts right after the frame before its first one.
  const [traffic, seq] = it.id.split("-");
  const before = `${traffic}-${(parseInt(seq, 16) - 1).toString(16).padStart(8, "0")}`;
  const after = parseInt(seq, 16) > 1 ? `&after=${before}` : "";
  const [m] = await get(`/api/websocket/${id}/messages?limit=1${after}`);
  return m.contentEncoding === "base64" ? fromBase64(m.content) : new TextEncoder().encode(m.content);
}

/** Sends a message into the live connection, to either peer. */
function sendForm(id) {
  const result = h("span", { class: "muted" });
  const data = h("textarea", { name: "data", rows: 2, placeholder: "message to send" });
  const direction = select("direction", [["to-client", "to the client"], ["to-server", "to the server"]], "to-client");
  const format = select("format", [["text", "text"], ["hex", "binary from hex"], ["base64", "binary from base64"]], "text");
  const form = h(
    "form",
    {
      class: "send",
      onsubmit: async (e) => {
        e.preventDefault();
        let body;
        try {
          body = { direction: direction.value, ...payloadOf(format.value, data.value) };
        } catch (err) {
          result.textContent = err.message;
          result.className = "error";
          return;
        }
        try {
          const { json } = await call("POST", `/api/websocket/${id}/send`, body);
          result.textContent = `sent: frame ${json.frameId}`;
          result.className = "ok";
        } catch (err) {
          result.textContent = err.message;
          result.className = "error";
        }
      },
    },
    h("strong", null, "Send"),
    direction,
    format,
    data,
    h("button", { type: "submit", name: "send" }, "Send"),
    result
  );
  return form;
}

function payloadOf(format, value) {
  if (format === "text") return { data: value, isBinary: false };
  if (format === "base64") return { data: value.trim(), isBinary: true };
  const hex = value.replace(/\s+/g, "");
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error("hex: pairs of hex digits, spaces allowed");
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return { data: toBase64(bytes), isBinary: true };
}
