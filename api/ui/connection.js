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
  // The items in memory: ids of the first and last, and how many.
  window: { first: null, last: null, items: 0 },
});

/** Items kept in memory while following live; the oldest go first. */
const MAX_ITEMS = 50_000;
/** Payloads kept with their item; a larger one is read again when opened. */
const KEPT_PAYLOAD = 64 * 1024;
const PAGE = 1000;
/** Frame `seq` of connection `traffic`, as the API writes ids (also cursors). */
const frameId = (traffic, seq) => `${traffic}-${seq.toString(16).padStart(8, "0")}`;
/** The frame number in a frame or message id (a message's is its first frame's). */
const seqOf = (itemId) => parseInt(itemId.split("-")[1], 16);
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
    ["Replay of", e.replayOf ? h("a", { href: `#/traffic/${e.replayOf}` }, e.replayOf) : null],
    ["Error", e.error],
    ["Not intercepted", e.notIntercepted],
  ];
  return h(
    "dl",
    { class: "facts" },
    rows
      .filter(([, v]) => v != null && v !== "")
      .map(([k, v]) => [h("dt", null, k), h("dd", { class: k === "Error" ? "error" : "" }, v instanceof Node ? v : String(v))])
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

  // The list shows a window of at most MAX_ITEMS items of the connection: it opens
  // on the latest (or the first, when not following) and moves both ways by pages
  // as the view reaches either end, so a connection of any length costs the same.
  let kind = "messages";
  let all = [];
  let next = null; // the page after the window, as the API linked it
  let atEnd = false; // the window reaches the connection's last item
  let atStart = false; // the window starts at its first stored item
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
      if (next && !loading) loadNext();
    },
    nearStart: () => {
      if (!atStart && !loading) loadEarlier();
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
    // Following shows the latest: a window elsewhere jumps there.
    if (on && !atEnd && !server) reload("end");
    list.schedule();
  };
  followBox.onchange = () => setFollow(followBox.checked);

  function refilter() {
    list.setItems(all.filter(visible));
    runSearch();
  }

  /** A page of the current kind, from the frame after `afterSeq` (0: the first). */
  function pagePath(afterSeq = 0) {
    const q = new URLSearchParams({ limit: PAGE });
    if (afterSeq > 0) q.set("after", frameId(id, afterSeq));
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
      h("button", { type: "button", name: "show-all", onclick: () => { server = null; serverNote.hidden = true; reload(list.follow ? "end" : "start"); } }, "Show all")
    );
    serverNote.hidden = false;
    reload("start");
  }

  /** Runs one page load at a time; drops its result if the view changed meanwhile. */
  async function loadOne(path, use) {
    loading = true;
    const mine = generation;
    try {
      const { json, headers } = await call("GET", path);
      if (mine !== generation) return;
      use(json.map((x) => item(kind, x)), nextLink(headers));
      showCounts();
      runSearch();
    } catch (e) {
      if (mine === generation) counter.textContent = e.message;
    } finally {
      if (mine === generation) loading = false;
    }
  }

  function showCounts() {
    counter.textContent =
      `${all.length} ${kind} loaded` + (atStart ? "" : ", earlier ones on scrolling up") + (atEnd ? "" : ", later ones on scrolling down");
    stats.window = { first: all.length ? all[0].id : null, last: all.length ? all[all.length - 1].id : null, items: all.length };
  }

  /** Frames deleted (retention, DELETE) come first: no page starts before them. */
  const firstStored = () => conn.deletedFrameCount || 0;

  /** The window from the connection's first item, or its last page. */
  async function loadFirst(where) {
    let afterSeq = 0;
    if (where === "end" && !server) {
      const mine = generation;
      try {
        conn = await get(`/api/websocket/${id}`);
      } catch (e) {
        counter.textContent = e.message;
        return;
      }
      if (mine !== generation) return;
      drawState();
      afterSeq = Math.max(0, conn.recordedFrameCount - PAGE);
    }
    await loadOne(pagePath(afterSeq), (items, link) => {
      all = items;
      atStart = afterSeq <= firstStored();
      next = link;
      atEnd = link == null;
      list.setItems(all.filter(visible));
    });
  }

  async function loadNext() {
    await loadOne(next, (items, link) => {
      const last = all.length ? all[all.length - 1].id : "";
      const fresh = items.filter((it) => it.id > last);
      all.push(...fresh);
      next = link;
      atEnd = link == null;
      list.append(fresh.filter(visible));
      trimFront();
    });
  }

  /**
   * The items before the window: those of the PAGE frames before its first, which
   * are at most PAGE items, so one page of that range holds them all (no gap).
   */
  async function loadEarlier() {
    if (!all.length || server) return;
    const firstId = all[0].id;
    const afterSeq = Math.max(firstStored(), seqOf(firstId) - 1 - PAGE);
    await loadOne(pagePath(afterSeq), (items) => {
      const earlier = items.filter((it) => it.id < firstId);
      all = earlier.concat(all);
      atStart = afterSeq <= firstStored();
      list.prepend(earlier.filter(visible));
      trimBack();
    });
  }

  function reload(where) {
    generation += 1;
    loading = false;
    all = [];
    next = null;
    atEnd = false;
    atStart = false;
    list.setItems([]);
    list.viewport.scrollTop = 0;
    detail.replaceChildren();
    listenLive();
    loadFirst(where);
  }

  /** Keeps memory bounded going forward (and following): the oldest items go. */
  function trimFront() {
    const over = all.length - MAX_ITEMS;
    if (over <= 0) return;
    const dropped = all.splice(0, over);
    atStart = false;
    list.dropFront(dropped.filter(visible).length);
  }

  /** Keeps memory bounded going back: the newest items go, to be paged in again. */
  function trimBack() {
    const over = all.length - MAX_ITEMS;
    if (over <= 0) return;
    const dropped = all.splice(MAX_ITEMS);
    next = pagePath(seqOf(all[all.length - 1].id));
    atEnd = false;
    list.dropBack(dropped.filter(visible).length);
  }

  // Live: items of this connection arrive in capture order; once the pages reached
  // the end, they are appended (batched by the list, once per animation frame).
  const pending = [];
  const onLive = (x) => {
    if (!atEnd || server) return;
    const last = all.length ? all[all.length - 1].id : "";
    if (x.id <= last) return;
    pending.push(item(kind, x));
    if (pending.length === 1) {
      requestAnimationFrame(() => {
        const batch = pending.splice(0);
        all.push(...batch);
        list.append(batch.filter(visible));
        trimFront();
        const now = Date.now();
        stats.first ??= now;
        stats.last = now;
        for (const it of batch) {
          stats.latencies[stats.received % stats.latencies.length] = now - it.timestamp;
          stats.received += 1;
        }
        showCounts();
        if (search.text) runSearch();
      });
    }
  };
  // The page subscribes to this connection's events of the kind shown, nothing more.
  let stopLive = null;
  function listenLive() {
    if (stopLive) stopLive();
    stopLive = live.on(kind === "messages" ? "websocket:message" : "websocket:frame", onLive, id);
  }
  stops.push(() => stopLive && stopLive());
  stops.push(
    live.on(
      "websocket:close",
      async () => {
        conn = await get(`/api/websocket/${id}`);
        drawState();
      },
      id
    )
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
        reload(list.follow ? "end" : "start");
      },
    }),
    select("direction", [["", "both directions"], ["to-server", "▲ client → server"], ["to-client", "▼ server → client"]], "", {
      onchange: (e) => {
        filters.direction = e.target.value;
        reload(list.follow ? "end" : "start");
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
    h("button", { type: "button", name: "first", title: "the connection's first items", onclick: () => { setFollow(false); reload("start"); } }, "⇤ first"),
    h("button", { type: "button", name: "latest", title: "the latest items, following", onclick: () => setFollow(true) }, "latest ⇥"),
    h("label", null, followBox, "follow"),
    counter
  );

  view.append(state, exportLinks(id, true), sendForm(id), replayForm(id), controls, serverNote, listHolder, detail);
  reload("end");
}

function stateView(c) {
  let state = "open";
  if (!c.open) {
    const by = c.closedBy || (c.closedByClient === true ? "client" : c.closedByClient === false ? "server" : null);
    state = `closed${by === "frametap" ? " by frametap (a close rule)" : by ? ` by the ${by}` : ""}`;
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
  const seq = seqOf(it.id);
  const after = seq > 1 ? `&after=${frameId(id, seq - 1)}` : "";
  const [m] = await get(`/api/websocket/${id}/messages?limit=1${after}`);
  return m.contentEncoding === "base64" ? fromBase64(m.content) : new TextEncoder().encode(m.content);
}

/**
 * Plays the conversation again (to its server or another URL, at the recorded pace,
 * at once, or as the server answers), then links the new connection and its
 * comparison with this one.
 */
function replayForm(id) {
  const result = h("span", { class: "muted" });
  const target = h("input", { type: "url", name: "target", placeholder: "the original server, or wss://…" });
  const timing = select("timing", [["recorded", "as recorded"], ["fast", "at once"], ["answers", "as the server answers"]], "recorded");
  const form = h(
    "form",
    {
      class: "replay",
      onsubmit: async (e) => {
        e.preventDefault();
        const body = { timing: timing.value };
        if (target.value.trim()) body.target = target.value.trim();
        result.className = "muted";
        result.textContent = "connecting…";
        try {
          const { json } = await call("POST", `/api/websocket/${id}/replay`, body);
          result.className = "ok";
          const copy = json.trafficId;
          result.replaceChildren(
            h(
              "span",
              null,
              `replaying ${json.messagesTotal} messages`,
              copy ? [": ", h("a", { href: `#/traffic/${copy}` }, "the new connection"), " · "] : "",
              copy ? h("a", { href: `#/compare/${id}/${copy}`, name: "compare" }, "compare") : ""
            )
          );
        } catch (err) {
          result.className = "error";
          result.textContent = err.message;
        }
      },
    },
    h("strong", null, "Replay"),
    target,
    timing,
    h("button", { type: "submit", name: "replay" }, "Replay"),
    result
  );
  return form;
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
