// TLS servers from Node's own modules, for frametap's TLS tests (peers we did not
// write):
//
//   h2-only: http2.createSecureServer with allowHTTP1: false: offers only h2 and
//            refuses clients that don't (alert no_application_protocol). It enables
//            extended CONNECT (RFC 8441) and serves:
//              CONNECT :protocol websocket: a WebSocket echo (text and binary
//                messages echoed, a close answered with the same code and reason);
//              /echo: the request body back, with a trailer x-body-length;
//              /ws-page: a page whose script opens a WebSocket to /chat on the same
//                origin (browsers then use RFC 8441 on this h2 connection), echoes
//                MESSAGES (query, default 3) messages, closes with 1000 and puts
//                the outcome, as JSON, in document.title;
//              anything else: the answer below.
//   h2-h1:   http2.createSecureServer with allowHTTP1: true: selects h2 or http/1.1,
//            whichever the client prefers, and gives the answer below.
//   http1:   https.createServer with ALPNProtocols ['http/1.1'].
//
// Every other answer is "<mode> saw <method> <url> over HTTP/<version>\n". Writes
// "ready" to the ready file once listening.
//
// node tls_server.js MODE HOST PORT CERT KEY READY
"use strict";
const fs = require("fs");
const http2 = require("http2");
const https = require("https");
const { encodeFrame, frameReader } = require("./ws_frames.js");

const [mode, host, port, cert, key, ready] = process.argv.slice(2);
const tls = { cert: fs.readFileSync(cert), key: fs.readFileSync(key) };

function answer(req, res) {
  res.setHeader("content-type", "text/plain");
  res.end(`${mode} saw ${req.method} ${req.url} over HTTP/${req.httpVersion}\n`);
}

function websocket(stream) {
  stream.respond({ ":status": 200 });
  stream.on(
    "data",
    frameReader((frame) => {
      if (frame.opcode === 0x8) {
        stream.end(encodeFrame(0x8, frame.payload));
      } else if (frame.opcode === 0x1 || frame.opcode === 0x2) {
        stream.write(encodeFrame(frame.opcode, frame.payload));
      }
    })
  );
  stream.on("error", () => {});
}

const WS_PAGE = `<!doctype html><meta charset="utf-8"><title>pending</title><script>
const count = Number(new URLSearchParams(location.search).get("messages") || 3);
const ws = new WebSocket("wss://" + location.host + "/chat");
const echoes = [];
const next = () => ws.send("hello from chromium " + (echoes.length + 1));
ws.onopen = next;
ws.onmessage = (e) => {
  echoes.push(e.data);
  if (echoes.length < count) next();
  else ws.close(1000, "done");
};
ws.onclose = (e) => (document.title = JSON.stringify({ echoes, code: e.code }));
ws.onerror = () => (document.title = JSON.stringify({ error: "websocket error", echoes }));
</script>`;

function h2stream(stream, headers) {
  const method = headers[":method"];
  const path = headers[":path"];
  if (method === "CONNECT" && headers[":protocol"] === "websocket") return websocket(stream);
  if (path.startsWith("/ws-page")) {
    stream.respond({ ":status": 200, "content-type": "text/html" });
    return stream.end(WS_PAGE);
  }
  const chunks = [];
  stream.on("data", (c) => chunks.push(c));
  stream.on("error", () => {});
  stream.on("end", () => {
    const body = Buffer.concat(chunks);
    if (path === "/echo") {
      stream.respond(
        { ":status": 200, "content-type": "application/octet-stream" },
        { waitForTrailers: true }
      );
      stream.on("wantTrailers", () =>
        stream.sendTrailers({ "x-body-length": String(body.length) })
      );
      stream.end(body);
    } else {
      stream.respond({ ":status": 200, "content-type": "text/plain" });
      stream.end(`${mode} saw ${method} ${path} over HTTP/2.0\n`);
    }
  });
}

let server;
if (mode === "h2-only") {
  server = http2.createSecureServer({
    ...tls,
    allowHTTP1: false,
    settings: { enableConnectProtocol: true },
  });
  server.on("stream", h2stream);
} else if (mode === "h2-h1") {
  server = http2.createSecureServer({ ...tls, allowHTTP1: true }, answer);
} else if (mode === "http1") {
  server = https.createServer({ ...tls, ALPNProtocols: ["http/1.1"] }, answer);
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
server.listen(Number(port), host, () => fs.writeFileSync(ready, "ready"));
