#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/) from real traffic
on loopback and from the RFC examples. Run again to refresh: `python3 fuzz/seeds/capture.py`.

Real traffic: a Python `websockets` client and server talking through a recording
TCP relay (with and without permessage-deflate), curl against a plain HTTP server
(GET, POST with a chunked body, a 100-continue), and curl's TLS ClientHello.
"""
import asyncio
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def save(target, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


class Relay:
    """Accepts one connection at a time and relays it to `upstream`, recording both directions."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.conversations = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            record = {"client": bytearray(), "server": bytearray()}
            self.conversations.append(record)
            done = threading.Barrier(3)

            def pump(src, dst, key):
                while True:
                    try:
                        data = src.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        break
                    record[key] += data
                    dst.sendall(data)
                done.wait()

            threading.Thread(target=pump, args=(client, server, "client"), daemon=True).start()
            threading.Thread(target=pump, args=(server, client, "server"), daemon=True).start()
            done.wait()
            client.close()
            server.close()


async def websocket_conversations():
    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    recorded = []
    for compression in [None, "deflate"]:
        async with websockets.serve(echo, "127.0.0.1", 0, compression=compression) as server:
            port = server.sockets[0].getsockname()[1]
            relay = Relay(("127.0.0.1", port))
            uri = f"ws://127.0.0.1:{relay.port}/chat?room=1"
            async with websockets.connect(uri, compression=compression, max_size=None) as ws:
                for message in ["hello", "a secret message", "x" * 300, b"\x00\x01\x02binary", "hello hello hello",
                                json.dumps({"type": "update", "id": 42, "items": list(range(20))}), b"\xff" * 70000]:
                    await ws.send(message)
                    await ws.recv()
                await ws.send(["frag", "mented", " message"])  # a fragmented message
                await ws.recv()
                await ws.ping(b"ping")
            await asyncio.sleep(0.2)
            relay.sock.close()
            recorded.extend((compression, c) for c in relay.conversations)
    return recorded


def http_conversations():
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"hello from the server\n" * 5
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(size)
                    self.rfile.readline()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(201)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in [body[:10], body[10:]]:
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    relay = Relay(("127.0.0.1", httpd.server_address[1]))
    base = f"http://127.0.0.1:{relay.port}"
    runs = [
        ["curl", "-s", f"{base}/index.html?x=1", f"{base}/second"],
        ["curl", "-s", "-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", "a chunked request body " * 4, f"{base}/upload"],
        ["curl", "-s", "-X", "POST", "-H", "Expect: 100-continue", "--data-binary", "x" * 2000, f"{base}/big"],
    ]
    for cmd in runs:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=10)
    import time
    time.sleep(0.3)
    httpd.shutdown()
    relay.sock.close()
    return relay.conversations


def client_hellos():
    """The first bytes curl and openssl send to a TLS server (the server never answers)."""
    hellos = []
    for cmd in (["curl", "-s", "-m", "2", "--http1.1", "https://chat.test:{port}/"],
                ["curl", "-s", "-m", "2", "https://chat.test:{port}/"],
                ["openssl", "s_client", "-connect", "127.0.0.1:{port}", "-servername", "chat.test", "-alpn", "h2,http/1.1"]):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        args = [a.format(port=port) for a in cmd]
        if args[0] == "curl":
            args += ["--resolve", f"chat.test:{port}:127.0.0.1"]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn, _ = sock.accept()
        conn.settimeout(2)
        data = b""
        try:
            while len(data) < 5 or len(data) < 5 + struct.unpack(">H", data[3:5])[0]:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        conn.close()
        sock.close()
        proc.kill()
        proc.wait()
        hellos.append(data)
    return hellos


# RFC 6455 5.7 and RFC 7692 7.2.3 examples: (sender is client, deflate, bytes).
RFC_FRAMES = [
    (False, False, bytes.fromhex("810548656c6c6f")),  # unmasked "Hello"
    (True, False, bytes.fromhex("818537fa213d7f9f4d5158")),  # masked "Hello"
    (False, False, bytes.fromhex("010348656c" "80026c6f")),  # fragmented "Hel" "lo"
    (False, False, bytes.fromhex("890548656c6c6f")),  # unmasked ping
    (True, False, bytes.fromhex("8a8537fa213d7f9f4d5158")),  # masked pong
    (False, False, bytes.fromhex("827e0100") + bytes(256)),  # 256-byte binary
    (False, False, bytes.fromhex("827f0000000000010000") + bytes(65536)),  # 64 KiB binary
    (False, True, bytes.fromhex("c107f248cdc9c90700")),  # compressed "Hello"
    (False, True, bytes.fromhex("4103f248cd" "8004c9c90700")),  # fragmented, compressed
    (False, True, bytes.fromhex("c107f248cdc9c90700" "c105f200110000")),  # shared window
    (False, True, bytes.fromhex("c10b0005" "00faff48656c6c6f00")),  # stored block
    (False, True, bytes.fromhex("c108f348cdc9c9070000")),  # BFINAL set
    (False, True, bytes.fromhex("c10df248050000" "00ffffcac9c90700")),  # two deflate blocks
    (False, False, bytes.fromhex("880203e8")),  # close 1000
]


def main():
    for path in [os.path.join(ROOT, t) for t in ("ws_frames", "ws_gate", "http1_stream", "http_entry", "tls_hello", "control_codec", "store_codec")]:
        os.makedirs(path, exist_ok=True)

    # ws_frames: selector (bit 0: server sender, bit 1: deflate), bytes.
    # ws_gate raw mode: flags with bit 7, chunk, bytes; rule sets 0 to 7.
    for from_client, deflate, frames in RFC_FRAMES:
        selector = (0 if from_client else 1) | (2 if deflate else 0)
        save("ws_frames", bytes([selector]) + frames)
        for rules in (0, 1, 3):
            save("ws_gate", bytes([128 | selector | rules << 3, 5]) + frames)

    conversations = asyncio.run(websocket_conversations())
    for compression, c in conversations:
        client, server = bytes(c["client"]), bytes(c["server"])
        deflate = 2 if compression else 0
        # The handshake, then each direction's frames.
        head_end = client.find(b"\r\n\r\n") + 4
        resp_end = server.find(b"\r\n\r\n") + 4
        client_frames, server_frames = client[head_end:], server[resp_end:]
        save("ws_frames", bytes([0 | deflate]) + client_frames[:4096])
        save("ws_frames", bytes([1 | deflate]) + server_frames[:4096])
        for rules in (0, 2, 3):
            save("ws_gate", bytes([128 | deflate | rules << 3, 0]) + client_frames[:2048])
            save("ws_gate", bytes([128 | 1 | deflate | rules << 3, 0]) + server_frames[:2048])
        # Both halves for the HTTP targets: client | server (split in the middle).
        both = client[:2048] + server[:2048]
        save("http1_stream", both)
        save("http_entry", client[:2048] + server[:2048] + bytes([0]))

    for c in http_conversations():
        client, server = bytes(c["client"]), bytes(c["server"])
        n = max(len(client), len(server))
        save("http1_stream", client.ljust(n, b"\r") + server.ljust(n, b"\r"))
        save("http_entry", client.ljust(n, b"\r") + server.ljust(n, b"\r") + bytes([9]))
        save("http_entry", client + bytes([65]))  # the server never answers

    for hello in client_hellos():
        if hello:
            save("tls_hello", hello)

    # ws_gate structured mode: a conversation of text, binary, fragmented messages
    # and injections, under each rule set, with and without deflate.
    ops = bytes([0, 5, 0, 1, 2, 3, 4]) + bytes([0, 6, 1, 2, 0, 1, 0, 2]) + bytes([2, 0]) + \
        bytes([4, 3, 255, 0, 7]) + bytes([8 | 32, 9] + list(range(9))) + bytes([3, 0]) + bytes([0, 4, 2, 2, 2, 2])
    for rules in range(8):
        for deflate in (0, 2, 6):
            save("ws_gate", bytes([deflate | rules << 3, 0]) + ops)
            save("ws_gate", bytes([1 | deflate | rules << 3, 7]) + ops)

    # Control socket messages and store values are written by the Rust side:
    # FRAMETAP_FUZZ_SEEDS=fuzz/corpus cargo test --release -p frametap-control fuzz_seeds
    print("seeds written under", os.path.abspath(ROOT))


if __name__ == "__main__":
    sys.exit(main())
