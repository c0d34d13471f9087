// A WebSocket client over HTTP/2 (RFC 8441) from Node's own http2 module: extended
// CONNECT once the server allows it, then text messages (masked, as clients must),
// then a close (1000, "done"). Prints one JSON line:
// { status, echoes: [text...], close: { code, reason } }.
//
// node h2_ws_client.js HOST ADDR PORT CAFILE PATH MESSAGES [EXPECT]
//
// MESSAGES a number: that many messages, each awaited before the next.
// MESSAGES a JSON array: these messages, all sent at once; then the client waits for
// EXPECT messages (whatever they are: echoes, dropped ones missing, injected ones
// added) before closing. {"fill": "b", "len": N} in the array stands for N bytes of "b".
"use strict";
const fs = require("fs");
const http2 = require("http2");
const crypto = require("crypto");
const { encodeFrame, frameReader, closePayload } = require("./ws_frames.js");

const [host, addr, port, cafile, path, count, expect] = process.argv.slice(2);
const pipelined = count.startsWith("[");
const messages = pipelined
  ? JSON.parse(count).map((m) => (typeof m === "string" ? m : m.fill.repeat(m.len)))
  : Array.from({ length: Number(count) }, (_, i) => `message ${i + 1} over h2`);
const result = { status: null, echoes: [], close: null };

const session = http2.connect(`https://${addr}:${port}`, {
  ca: fs.readFileSync(cafile),
  servername: host,
});
session.on("error", (e) => fail(`session: ${e.message}`));
setTimeout(() => fail("timed out"), 20000).unref();

function fail(why) {
  console.log(JSON.stringify({ ...result, error: why }));
  process.exit(1);
}

function send(stream, opcode, payload) {
  stream.write(encodeFrame(opcode, payload, crypto.randomBytes(4)));
}

session.once("remoteSettings", (settings) => {
  if (!settings.enableConnectProtocol) fail("the server does not allow extended CONNECT");
  const stream = session.request({
    ":method": "CONNECT",
    ":protocol": "websocket",
    ":scheme": "https",
    ":path": path,
    ":authority": `${host}:${port}`,
    "sec-websocket-version": "13",
  });
  stream.on("error", (e) => fail(`stream: ${e.message}`));
  stream.on("response", (headers) => {
    result.status = headers[":status"];
    if (pipelined) messages.forEach((m) => send(stream, 0x1, Buffer.from(m)));
    else send(stream, 0x1, Buffer.from(messages[0]));
  });
  stream.on(
    "data",
    frameReader((frame) => {
      if (frame.opcode === 0x8) {
        result.close = {
          code: frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : null,
          reason: frame.payload.subarray(2).toString(),
        };
        stream.end();
        return;
      }
      result.echoes.push(frame.payload.toString());
      const next = messages[result.echoes.length];
      if (pipelined) {
        if (result.echoes.length === Number(expect)) send(stream, 0x8, closePayload(1000, "done"));
      } else if (next) send(stream, 0x1, Buffer.from(next));
      else send(stream, 0x8, closePayload(1000, "done"));
    })
  );
  stream.on("close", () => {
    session.close();
    console.log(JSON.stringify(result));
  });
});
