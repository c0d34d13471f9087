#!/usr/bin/env python3
"""Benchmark peers (Python `websockets`), used by frametap-bench.

server:    TLS WebSocket echo server (no compression, no keepalive pings).
echo:      keep --inflight messages of --size bytes in flight for --seconds and
           report {"messages_per_s", "mb_per_s", "messages", "machine_busy"} as JSON
           (machine_busy: share of all CPUs not idle during the timed window).
handshake: --count sequential TLS handshakes (TCP connect + TLS, then close),
           offering --alpn (with --unique-alpn, plus an id of its own each time);
           report {"micros": [...]}.
stamped:   --count messages "t:<time.time_ns()> ..." of --size bytes, one at a time
           (each after the previous echo) every --interval seconds, for a listener
           to measure wire-to-event latency; report {"messages"}. --delay seconds
           of silence first, once connected (for a listener to get ready).
"""
import argparse
import asyncio
import json
import socket
import ssl
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def server(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    # An HTTP/1.1 server: it selects http/1.1 when a client offers it (with h2).
    ctx.set_alpn_protocols(["http/1.1"])

    async def handler(ws):
        async for msg in ws:
            await ws.send(msg)

    async with serve(handler, args.host, args.port, ssl=ctx, compression=None,
                     max_size=None, ping_interval=None, write_limit=1 << 20):
        open(args.ready, "w").write("ready")
        await asyncio.Future()


def cpu_ticks():
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields)
    return total - idle, total


async def echo(args):
    ctx = ssl.create_default_context(cafile=args.cafile)
    host, port = args.connect.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = bytes(args.size)
    async with connect(f"wss://{args.host}:{port}/bench", sock=sock, ssl=ctx,
                       server_hostname=args.host, compression=None, max_size=None,
                       ping_interval=None, write_limit=1 << 20) as ws:
        for _ in range(args.inflight):
            await ws.send(payload)
        received = 0
        ticks_before = cpu_ticks()
        start = time.perf_counter()
        deadline = start + args.seconds
        while True:
            await ws.recv()
            received += 1
            now = time.perf_counter()
            if now >= deadline:
                break
            await ws.send(payload)
        elapsed = now - start
        ticks_after = cpu_ticks()
    busy = (ticks_after[0] - ticks_before[0]) / max(1, ticks_after[1] - ticks_before[1])
    print(json.dumps({"messages": received,
                      "machine_busy": busy,
                      "messages_per_s": received / elapsed,
                      "mb_per_s": received * args.size / elapsed / 1e6}))


async def stamped(args):
    ctx = ssl.create_default_context(cafile=args.cafile)
    host, port = args.connect.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    async with connect(f"wss://{args.host}:{port}/stamped", sock=sock, ssl=ctx,
                       server_hostname=args.host, compression=None, max_size=None,
                       ping_interval=None) as ws:
        await asyncio.sleep(args.delay)
        for _ in range(args.count):
            stamp = f"t:{time.time_ns()} ".encode()
            await ws.send(stamp + b"x" * max(0, args.size - len(stamp)))
            await ws.recv()
            await asyncio.sleep(args.interval)
    print(json.dumps({"messages": args.count}))


def handshake(args):
    ctx = ssl.create_default_context(cafile=args.cafile)
    host, port = args.connect.rsplit(":", 1)
    alpn = [p for p in args.alpn.split(",") if p]
    samples = []
    for i in range(args.count):
        if alpn:
            # A protocol id of its own per connection makes every offer new to the
            # agent (a cold start); the server ignores ids it does not know.
            extra = [f"x-{time.time_ns()}-{i}"] if args.unique_alpn else []
            ctx.set_alpn_protocols(alpn + extra)
        start = time.perf_counter()
        raw = socket.create_connection((host, int(port)))
        tls = ctx.wrap_socket(raw, server_hostname=args.host)
        samples.append((time.perf_counter() - start) * 1e6)
        tls.close()
    print(json.dumps({"micros": samples}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    for a in ("--host", "--cert", "--key", "--ready"):
        s.add_argument(a, required=True)
    s.add_argument("--port", type=int, required=True)
    for name in ("echo", "handshake", "stamped"):
        c = sub.add_parser(name)
        c.add_argument("--connect", required=True)
        c.add_argument("--host", required=True)
        c.add_argument("--cafile", required=True)
        c.add_argument("--size", type=int, default=100)
        c.add_argument("--inflight", type=int, default=64)
        c.add_argument("--seconds", type=float, default=5)
        c.add_argument("--count", type=int, default=200)
        c.add_argument("--interval", type=float, default=0.005)
        c.add_argument("--delay", type=float, default=0)
        c.add_argument("--alpn", default="", help="handshake: ALPN ids to offer, comma-separated")
        c.add_argument("--unique-alpn", action="store_true",
                       help="handshake: add an ALPN id of its own to each connection's offer")
    args = p.parse_args()
    if args.mode == "server":
        asyncio.run(server(args))
    elif args.mode == "echo":
        asyncio.run(echo(args))
    elif args.mode == "stamped":
        asyncio.run(stamped(args))
    else:
        handshake(args)


if __name__ == "__main__":
    main()
