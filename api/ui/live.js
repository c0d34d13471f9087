// Live events from frametap-api over Socket.IO (protocol 5 on Engine.IO 4), spoken
// directly over one WebSocket: the handful of packets a listener needs, so the page
// loads no third-party code. Reconnects by itself; views subscribe by event name.
//
// Engine.IO packets: "0" open, "2" ping (answered "3"), "4" + Socket.IO packet:
// "0" connect (sent with the token as auth), "2" event ["name", data], "4" refused.

export class Live {
  constructor(getToken, onState) {
    this.getToken = getToken;
    this.onState = onState;
    this.listeners = new Map();
    this.ws = null;
    this.retry = null;
    this.stopped = false;
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
  }

  /** Calls `f(data)` for every `name` event until the returned function is called. */
  on(name, f) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(f);
    return () => this.listeners.get(name).delete(f);
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ws = ws;
    this.onState("connecting");
    ws.onmessage = (e) => this.packet(ws, String(e.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
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
      this.onState("live");
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
      for (const f of this.listeners.get(name) || []) f(data);
    }
  }
}
