#!/usr/bin/env python3
"""Socket.IO listener for frametap's end-to-end tests and benchmarks, built on
python-socketio's client (an implementation we did not write).

Prints one JSON line per event: {"event": NAME, "data": PAYLOAD, "t": UNIX_SECONDS};
{"event": "connected"} once connected, {"event": "connect_error", ...} and exit 2
when the server refuses the connection.

--bench N: print nothing per event; after N `websocket:frame` events (or --seconds),
print one summary line: events, seconds, events/s, and the latency of frames whose
payload is "t:<time.time_ns() of the sender>" (wire-to-event, same host clock).

--ordered: print events in the order the server sent them. The default client
(python-socketio's threaded one) runs each event handler on a thread of its own, so
it may print them in any order; --ordered uses its asyncio client instead, which
starts one task per event in arrival order, and the handler never awaits.

--many N --expect TEXT: N concurrent subscribers on bare Engine.IO WebSockets (the
`websockets` library, one asyncio process). Prints {"event": "connected", "count",
"failed"} once every one has connected or failed, then waits (at most --seconds)
until each has received a `websocket:frame` event whose payload is TEXT and prints
{"summary": true, "received": K} (K: how many did).

--raw (with --bench): count `websocket:frame` events on a bare Engine.IO WebSocket
(websocket-client, no Socket.IO client library, no JSON decoding), so that the
measured rate is the server's rather than a Python client's.
"""
import argparse
import asyncio
import base64
import json
import sys
import threading
import time

import socketio


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token")
    p.add_argument("--bench", type=int)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--raw", action="store_true")
    p.add_argument("--ordered", action="store_true")
    p.add_argument("--many", type=int)
    p.add_argument("--expect")
    args = p.parse_args()
    if args.many:
        asyncio.run(many(args))
        return
    if args.raw:
        raw_rate(args)
        return
    if args.ordered:
        asyncio.run(ordered(args))
        return

    sio = socketio.Client(reconnection=False)
    done = threading.Event()
    stats = {"frames": 0, "first": None, "last": None, "latencies": []}

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    @sio.on("*")
    def any_event(event, data):
        now = time.time()
        if args.bench is None:
            emit({"event": event, "data": data, "t": now})
            return
        if event != "websocket:frame":
            return
        stats["frames"] += 1
        if stats["first"] is None:
            stats["first"] = now
        stats["last"] = now
        payload = data.get("data")
        if payload and data.get("direction") == "client-to-server":
            raw = base64.b64decode(payload)
            if raw.startswith(b"t:"):
                sent_ns = int(raw[2:].split(b" ")[0])
                stats["latencies"].append(time.time_ns() - sent_ns)
        if stats["frames"] >= args.bench:
            done.set()

    @sio.event
    def connect():
        emit({"event": "connected"})

    @sio.event
    def connect_error(data):
        emit({"event": "connect_error", "data": data})

    auth = {"token": args.token} if args.token else None
    try:
        sio.connect(args.url, auth=auth, transports=["websocket"], wait_timeout=10)
    except socketio.exceptions.ConnectionError as e:
        emit({"event": "connect_failed", "data": str(e)})
        sys.exit(2)

    if args.bench is None:
        sio.wait()
        return
    done.wait(args.seconds)
    sio.disconnect()
    lat = sorted(stats["latencies"])

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else None

    span = (stats["last"] - stats["first"]) if stats["first"] else 0.0
    emit({
        "summary": True,
        "frames": stats["frames"],
        "seconds": span,
        "events_per_second": stats["frames"] / span if span > 0 else None,
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "latency_samples": len(lat),
    })


async def ordered(args):
    sio = socketio.AsyncClient(reconnection=False)

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    @sio.on("*")
    def any_event(event, data):
        # Not a coroutine: it runs to the end before the next event's task starts.
        emit({"event": event, "data": data, "t": time.time()})

    @sio.event
    def connect():
        emit({"event": "connected"})

    @sio.event
    def connect_error(data):
        emit({"event": "connect_error", "data": data})

    auth = {"token": args.token} if args.token else None
    try:
        await sio.connect(args.url, auth=auth, transports=["websocket"], wait_timeout=10)
    except socketio.exceptions.ConnectionError as e:
        emit({"event": "connect_failed", "data": str(e)})
        sys.exit(2)
    await sio.wait()


async def many(args):
    import websockets

    url = args.url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
    wanted = base64.b64encode(args.expect.encode()).decode()
    connected = asyncio.Event()
    ready = {"ok": 0, "failed": 0}
    errors = []

    def settle():
        if ready["ok"] + ready["failed"] == args.many:
            connected.set()

    async def subscriber():
        try:
            async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
                opened = await ws.recv()
                assert opened.startswith("0"), opened
                await ws.send("40" + json.dumps({"token": args.token}))
                while True:
                    msg = await ws.recv()
                    if msg == "2":
                        await ws.send("3")
                        continue
                    break
                if not msg.startswith("40"):
                    raise RuntimeError(f"refused: {msg[:200]}")
                ready["ok"] += 1
                settle()
                while True:
                    msg = await ws.recv()
                    if msg == "2":
                        await ws.send("3")
                    elif msg.startswith('42["websocket:frame"') and wanted in msg:
                        return True
        except Exception as e:  # reported, counted as not received
            if len(errors) < 5:
                errors.append(repr(e)[:200])
            if not connected.is_set():
                ready["failed"] += 1
                settle()
            return False

    tasks = [asyncio.create_task(subscriber()) for _ in range(args.many)]
    await asyncio.wait_for(connected.wait(), args.seconds)
    print(json.dumps({"event": "connected", "count": ready["ok"],
                      "failed": ready["failed"], "errors": errors}), flush=True)
    done, pending = await asyncio.wait(tasks, timeout=args.seconds)
    for t in pending:
        t.cancel()
    received = sum(1 for t in done if t.result())
    print(json.dumps({"summary": True, "received": received, "errors": errors}), flush=True)


def raw_rate(args):
    import websocket

    url = args.url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
    started = time.time()
    ws = websocket.create_connection(url, timeout=60)
    opened = ws.recv()
    assert opened.startswith("0"), opened
    ws.send("40" + json.dumps({"token": args.token}))
    ack = ws.recv()
    while ack == "2":
        # An Engine.IO ping can come before the namespace's answer: pong, keep waiting.
        ws.send("3")
        ack = ws.recv()
    if not ack.startswith("40"):
        print(json.dumps({"event": "connect_error", "data": ack}), flush=True)
        sys.exit(2)
    print(json.dumps({"event": "connected", "after_seconds": time.time() - started}), flush=True)
    ws.settimeout(0.5)
    frames, first, last = 0, None, None
    deadline = time.time() + args.seconds
    while time.time() < deadline and frames < args.bench:
        try:
            msg = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        if msg == "2":
            ws.send("3")
        elif msg.startswith('42["websocket:frame"'):
            frames += 1
            last = time.time()
            if first is None:
                first = last
    ws.close()
    span = (last - first) if first else 0.0
    print(json.dumps({
        "summary": True,
        "frames": frames,
        "seconds": span,
        "events_per_second": frames / span if span > 0 else None,
    }), flush=True)


if __name__ == "__main__":
    main()
