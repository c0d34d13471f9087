#!/usr/bin/env python3
"""WebSocket peers for frametap's end-to-end tests, built on the `websockets`
library (an implementation we did not write).

server: echo server. Every message is echoed back unchanged (as one frame). A text
        message "close:CODE:REASON" makes the server close with that code and
        reason; "ping:DATA" makes the server send a ping with that payload.
        Each received message is logged to --log as a JSON line, and each
        opening handshake (path, request headers, extensions agreed).
client: runs a script (JSON list of steps: text, binary, fragments, big, many,
        ping, recv (wait for one more message), send (no reply expected),
        fragments_around_recv (a message left open while one is received),
        send_expect_close, close, drain (stay open, taking every message, until
        closed), sleep (ms), ...) and prints one JSON line per event:
        {"echo": i, "type": "text"|"binary", "data": base64} for each reply, and
        {"closed": {"code": .., "reason": ..}} at the end.
"""
import argparse
import asyncio
import base64
import json
import socket
import struct
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


async def run_server(args):
    log = open(args.log, "a", buffering=1)
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)

    async def handler(ws):
        # The opening handshake as the server saw it (headers, extensions agreed).
        log.write(json.dumps({"handshake": {
            "path": ws.request.path,
            "headers": {k.lower(): v for k, v in ws.request.headers.raw_items()},
            "extensions": ws.response.headers.get("Sec-WebSocket-Extensions"),
        }}) + "\n")
        try:
            async for msg in ws:
                kind = "text" if isinstance(msg, str) else "binary"
                log.write(json.dumps({"type": kind, "data": b64(msg)}) + "\n")
                if kind == "text" and msg.startswith("close:"):
                    _, code, reason = msg.split(":", 2)
                    await ws.close(int(code), reason)
                    return
                if kind == "text" and msg.startswith("reset-mid-frame:"):
                    # Half of a text frame's payload, then a reset (SO_LINGER 0).
                    sock = ws.transport.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                    ws.transport.write(b"\x81\x7e\x10\x00" + b"h" * 2048)
                    ws.transport.abort()
                    return
                if kind == "text" and msg.startswith("ping:"):
                    await ws.ping(msg[5:].encode())
                await ws.send(msg)
        except ConnectionClosed:
            pass

    compression = None if args.no_deflate else "deflate"
    async with serve(handler, args.host, args.port, ssl=ctx, compression=compression,
                     max_size=None, ping_interval=None):
        log.write(json.dumps({"event": "ready"}) + "\n")
        await asyncio.Future()


async def run_client(args):
    steps = json.loads(args.script)
    ctx = None
    scheme = "ws"
    if args.cafile:
        ctx = ssl.create_default_context(cafile=args.cafile)
        scheme = "wss"
    host, port = args.connect.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)))
    if args.print_peer:
        # What the application sees as its peer (the original destination, captured
        # or not), as the first line.
        peer_host, peer_port = sock.getpeername()[:2]
        sys.stdout.write(json.dumps({"peer": f"{peer_host}:{peer_port}"}) + "\n")
    uri = f"{scheme}://{args.host}:{port}{args.path}"
    kwargs = dict(sock=sock, ssl=ctx, max_size=None, ping_interval=None,
                  compression=None if args.no_deflate else "deflate")
    if ctx is not None:
        kwargs["server_hostname"] = args.host
    out = sys.stdout
    echo = 0

    async def expect_reply(ws):
        nonlocal echo
        msg = await ws.recv()
        kind = "text" if isinstance(msg, str) else "binary"
        out.write(json.dumps({"echo": echo, "type": kind, "data": b64(msg)}) + "\n")
        out.flush()
        echo += 1

    async with connect(uri, **kwargs) as ws:
        for step in steps:
            op = step["op"]
            if op == "text":
                await ws.send(step["data"])
                await expect_reply(ws)
            elif op == "binary":
                await ws.send(base64.b64decode(step["data"]))
                await expect_reply(ws)
            elif op == "fragments":
                await ws.send(step["parts"])
                await expect_reply(ws)
            elif op == "binary_fragments":
                await ws.send([base64.b64decode(p) for p in step["parts"]])
                await expect_reply(ws)
            elif op == "fragments_around_recv":
                # The first part, then (with "ping") a ping inside the message, then
                # one message received while this one is still open (e.g. the echo
                # of a "send" before), then the other parts.
                parts = step["parts"]

                async def chunks():
                    yield parts[0]
                    if "ping" in step:
                        await ws.ping(step["ping"].encode())
                    await expect_reply(ws)
                    for part in parts[1:]:
                        yield part

                await ws.send(chunks())
                await expect_reply(ws)
            elif op == "big":
                size = step["size"]
                data = bytes((i * 31 + 7) % 251 for i in range(size)) if step.get("varied") else b"x" * size
                await ws.send(data)
                await expect_reply(ws)
            elif op == "many":
                for i in range(step["count"]):
                    await ws.send(f"message {i}")
                    await expect_reply(ws)
            elif op == "ping":
                waiter = await ws.ping(step["data"].encode())
                await waiter
                out.write(json.dumps({"pong": step["data"]}) + "\n")
            elif op == "server_ping":
                await ws.send("ping:" + step["data"])
                await expect_reply(ws)
            elif op == "drain":
                # Stay open, taking whatever arrives (injected messages, echoes),
                # until the server or the agent closes the connection.
                try:
                    async for _ in ws:
                        pass
                except ConnectionClosed:
                    pass
            elif op == "recv":
                # A message nobody asked for (injected, or an echo of one).
                await expect_reply(ws)
            elif op == "send":
                await ws.send(step["data"])
            elif op == "sleep":
                await asyncio.sleep(step["ms"] / 1000)
            elif op == "send_expect_close":
                await ws.send(step["data"])
                try:
                    while True:
                        await expect_reply(ws)
                except ConnectionClosed:
                    pass
            elif op == "close":
                await ws.close(step["code"], step["reason"])
            elif op == "server_close":
                await ws.send(f"close:{step['code']}:{step['reason']}")
                try:
                    await ws.recv()
                except ConnectionClosed:
                    pass
        # Close unless the script already did (close() is a no-op then).
        await ws.close()
        out.write(json.dumps({"closed": {"code": ws.close_code,
                                         "reason": ws.close_reason}}) + "\n")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cert")
    s.add_argument("--key")
    s.add_argument("--log", required=True)
    s.add_argument("--no-deflate", action="store_true")
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True, help="address to dial, host:port")
    c.add_argument("--host", required=True, help="name in the URL and SNI")
    c.add_argument("--path", default="/chat")
    c.add_argument("--cafile")
    c.add_argument("--no-deflate", action="store_true")
    c.add_argument("--script", required=True)
    c.add_argument("--print-peer", action="store_true",
                   help="print the connected socket's getpeername() first")
    args = p.parse_args()
    asyncio.run(run_server(args) if args.mode == "server" else run_client(args))


if __name__ == "__main__":
    main()
