// Writes the HTTP/2 fuzz targets' seeds (fuzz/corpus/h2_frames, fuzz/corpus/h2_entry)
// from real traffic: Node's own http2 client and server (h2c on loopback, through a
// recording TCP relay): a GET, a POST with a body and trailers, a pushed stream, a
// reset stream, and a WebSocket over HTTP/2 (RFC 8441) with a few messages and a
// close. Run again to refresh: `node fuzz/seeds/h2_capture.js`.
//
// h2_entry input: client length (2 bytes, big-endian), the client's bytes, the
// server's bytes, then one byte that chooses read sizes and the ending.
// h2_frames input: one direction's bytes, then the same choice byte.
// hpack input: header blocks, each after a length byte: RFC 7541's examples (C.3,
// C.4 and a size update followed by literals).
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const http2 = require("http2");
const net = require("net");
const path = require("path");
const { encodeFrame, frameReader, closePayload } = require("../../tests/peers/ws_frames.js");

const ROOT = path.join(__dirname, "..", "corpus");

function save(target, data) {
  const dir = path.join(ROOT, target);
  fs.mkdirSync(dir, { recursive: true });
  const name = crypto.createHash("sha1").update(data).digest("hex");
  fs.writeFileSync(path.join(dir, name), data);
}

const server = http2.createServer({ settings: { enableConnectProtocol: true } });
server.on("stream", (stream, headers) => {
  stream.on("error", () => {});
  if (headers[":method"] === "CONNECT") {
    stream.respond({ ":status": 200, "sec-websocket-protocol": "chat" });
    stream.on(
      "data",
      frameReader((f) => {
        if (f.opcode === 0x8) stream.end(encodeFrame(0x8, f.payload));
        else stream.write(encodeFrame(f.opcode, f.payload));
      })
    );
    return;
  }
  if (headers[":path"] === "/slow") return; // the client resets it
  const chunks = [];
  stream.on("data", (c) => chunks.push(c));
  stream.on("end", () => {
    if (headers[":path"] === "/page" && stream.pushAllowed) {
      stream.pushStream({ ":path": "/style.css" }, (err, push) => {
        if (!err) {
          push.respond({ ":status": 200, "content-type": "text/css" });
          push.end("body { color: red }");
        }
      });
    }
    stream.respond({ ":status": 200, "content-type": "text/plain" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(`got ${Buffer.concat(chunks).length} bytes for ${headers[":path"]}`);
  });
});

// One connection through the relay; resolves with both directions' bytes.
function relayed(upstreamPort, talk) {
  return new Promise((resolve) => {
    const up = [];
    const down = [];
    const relay = net.createServer((client) => {
      const upstream = net.connect(upstreamPort, "127.0.0.1");
      client.on("data", (d) => (up.push(d), upstream.write(d)));
      upstream.on("data", (d) => (down.push(d), client.write(d)));
      client.on("end", () => upstream.end());
      upstream.on("end", () => client.end());
      client.on("close", () => {
        relay.close();
        setTimeout(() => resolve([Buffer.concat(up), Buffer.concat(down)]), 50);
      });
    });
    relay.listen(0, "127.0.0.1", () => talk(`http://127.0.0.1:${relay.address().port}`));
  });
}

function requests(url) {
  const session = http2.connect(url);
  let left = 3;
  const done = () => --left === 0 && session.close();
  session.on("stream", (push) => push.resume());
  const get = session.request({ ":path": "/page" });
  get.resume();
  get.on("end", done);
  const post = session.request({ ":method": "POST", ":path": "/upload", "content-type": "application/json" });
  post.end(JSON.stringify({ items: Array.from({ length: 50 }, (_, i) => i) }));
  post.resume();
  post.on("end", done);
  const slow = session.request({ ":path": "/slow" });
  slow.on("error", () => {});
  setTimeout(() => {
    slow.close(http2.constants.NGHTTP2_CANCEL);
    done();
  }, 100);
}

function websocket(url) {
  const session = http2.connect(url);
  session.once("remoteSettings", () => {
    const ws = session.request({
      ":method": "CONNECT",
      ":protocol": "websocket",
      ":scheme": "http",
      ":path": "/live",
      "sec-websocket-version": "13",
    });
    let n = 0;
    const send = (op, p) => ws.write(encodeFrame(op, p, crypto.randomBytes(4)));
    ws.on("response", () => send(0x1, Buffer.from("hello 0")));
    ws.on(
      "data",
      frameReader((f) => {
        if (f.opcode === 0x8) return ws.end();
        if (++n < 4) send(n % 2 ? 0x2 : 0x1, Buffer.from(`hello ${n}`));
        else send(0x8, closePayload(1000, "bye"));
      })
    );
    ws.on("close", () => session.close());
  });
}

// RFC 7541 Appendix C: requests without and with Huffman coding, then a size update.
const RFC_BLOCKS = [
  ["828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865",
   "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"],
  ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
   "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"],
  ["3fe11f48826402", "48033330325807707269766174 65"],
];
for (const blocks of RFC_BLOCKS) {
  const parts = blocks.map((h) => Buffer.from(h.replace(/ /g, ""), "hex"));
  save("hpack", Buffer.concat(parts.flatMap((b) => [Buffer.from([b.length]), b])));
}

server.listen(0, "127.0.0.1", async () => {
  const port = server.address().port;
  for (const talk of [requests, websocket]) {
    const [up, down] = await relayed(port, talk);
    for (const choice of [0x00, 0x49, 0x92]) {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(up.length);
      save("h2_entry", Buffer.concat([len, up, down, Buffer.from([choice])]));
    }
    save("h2_frames", Buffer.concat([up, Buffer.from([0x00])]));
    save("h2_frames", Buffer.concat([down, Buffer.from([0x81])]));
  }
  server.close();
});
