// Minimal RFC 6455 framing for the Node test peers that speak WebSockets over
// HTTP/2 (RFC 8441), where Node has no WebSocket module of its own.
"use strict";

// One frame: { fin, opcode, payload, length } (length: bytes it took), or null
// when `buf` does not hold a whole frame yet. Masked payloads are unmasked.
function parseFrame(buf) {
  if (buf.length < 2) return null;
  const fin = (buf[0] & 0x80) !== 0;
  const opcode = buf[0] & 0x0f;
  const masked = (buf[1] & 0x80) !== 0;
  let len = buf[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (buf.length < 4) return null;
    len = buf.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (buf.length < 10) return null;
    len = Number(buf.readBigUInt64BE(2));
    off = 10;
  }
  const maskAt = off;
  if (masked) off += 4;
  if (buf.length < off + len) return null;
  const payload = Buffer.from(buf.subarray(off, off + len));
  if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[maskAt + (i & 3)];
  return { fin, opcode, payload, length: off + len };
}

// The bytes of one final frame; masked with `mask` (4 bytes) when given.
function encodeFrame(opcode, payload, mask) {
  const len = payload.length;
  const head = [0x80 | opcode];
  const bit = mask ? 0x80 : 0;
  if (len < 126) head.push(bit | len);
  else if (len < 65536) head.push(bit | 126, len >> 8, len & 0xff);
  else {
    head.push(bit | 127);
    const big = Buffer.alloc(8);
    big.writeBigUInt64BE(BigInt(len));
    head.push(...big);
  }
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const body = Buffer.from(payload);
  for (let i = 0; i < len; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([Buffer.from(head), Buffer.from(mask), body]);
}

// Calls `onFrame` for each whole frame as chunks arrive.
function frameReader(onFrame) {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const frame = parseFrame(buf);
      if (!frame) return;
      buf = buf.subarray(frame.length);
      onFrame(frame);
    }
  };
}

function closePayload(code, reason) {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return Buffer.concat([b, Buffer.from(reason)]);
}

module.exports = { parseFrame, encodeFrame, frameReader, closePayload };
