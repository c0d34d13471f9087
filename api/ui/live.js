// Live events from frametap-api over Socket.IO (protocol 5 on Engine.IO 4), spoken
// directly over one WebSocket: the handful of packets a listener needs, so the page
// loads no third-party code. Reconnects by itself. Views listen by event name,
// optionally for one connection only, and the page subscribes to just that: the API
// then sends nothing else (a busy connection's frames reach only a page showing them).
//
// Engine.IO packets: "0" open, "2" ping (answered "3"), "4" + Socket.IO packet:
// "0" connect (sent with the token as auth), "2" event ["name", data], "3" ack,
// "4" refused.

export class Live {
  constructor(getToken, onState) {
    this.getToken = getToken;
    this.onState = onState;
    /** Event name -> Set of {f, trafficId}. */
    this.listeners = new Map();
    this.ws = null;
    this.connected = false;
    this.retry = null;
    this.stopped = false;
    this.subscribeQueued = false;
    this.ackId = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retry);
    if (this.ws) this.ws.close();
    this.ws = null;
    this.connected = false;
  }

  /**
   * Calls `f(data)` for every `name` event (of connection `trafficId` only, when
   * given) until the returned function is called.
   */
  on(name, f, trafficId = null) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    const listener = { f, trafficId };
    this.listeners.get(name).add(listener);
    this.resubscribe();
    return () => {
      this.listeners.get(name).delete(listener);
      this.resubscribe();
    };
  }

  /** What the views listen to, as the API's `subscribe` takes it. */
  subscriptions() {
    const seen = new Map();
    for (const [event, set] of this.listeners) {
      for (const { trafficId } of set) {
        const key = `${event}@${trafficId ?? ""}`;
        if (!seen.has(key)) seen.set(key, trafficId ? { event, trafficId } : { event });
      }
    }
    // A listener of every connection covers the ones of one.
    const all = new Set([...seen.values()].filter((s) => !s.trafficId).map((s) => s.event));
    return [...seen.values()]
      .filter((s) => !s.trafficId || !all.has(s.event))
      .sort((a, b) => a.event.localeCompare(b.event) || (a.trafficId || "").localeCompare(b.trafficId || ""));
  }

  /** Sends the subscriptions once the current task is over (views change several at once). */
  resubscribe() {
    if (this.subscribeQueued) return;
    this.subscribeQueued = true;
    queueMicrotask(() => {
      this.subscribeQueued = false;
      if (!this.connected) return;
      this.ackId += 1;
      this.ws.send(`42${this.ackId}` + JSON.stringify(["subscribe", this.subscriptions()]));
    });
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ws = ws;
    this.connected = false;
    this.onState("connecting");
    ws.onmessage = (e) => this.packet(ws, String(e.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.connected = false;
      this.onState("offline");
      if (!this.stopped) this.retry = setTimeout(() => this.connect(), 2000);
    };
  }

  packet(ws, p) {
    if (p[0] === "0") {
      ws.send("40" + JSON.stringify({ token: this.getToken() }));
    } else if (p === "2") {
      ws.send("3");
    } else if (p.startsWith("40")) {
      this.connected = true;
      this.resubscribe();
      this.onState("live");
    } else if (p.startsWith("43")) {
      // The answer to `subscribe`: an error only if the page asked for something
      // the API does not have, which is a bug here.
      const answer = p.slice(2).replace(/^\d+/, "");
      if (answer.includes('"error"')) console.error("frametap live events:", answer);
    } else if (p.startsWith("44")) {
      let why = "refused";
      try {
        why = JSON.parse(p.slice(2)).message || why;
      } catch {
        // keep "refused"
      }
      this.onState("refused", why);
    } else if (p.startsWith("42")) {
      let name, data;
      try {
        [name, data] = JSON.parse(p.slice(2));
      } catch {
        return;
      }
      for (const { f, trafficId } of this.listeners.get(name) || []) {
        if (!trafficId || (data && data.trafficId === trafficId)) f(data);
      }
    }
  }
}
