#!/usr/bin/env python3
"""Misbehaving TLS clients for frametap's bad-input tests.

half-hello: send the first half of a real ClientHello, then vanish.
garbage:    send a complete ClientHello followed by garbage, read until closed.
silent:     send a complete ClientHello, then nothing; print how many seconds passed
            until the other end closed (or "held" after 60 s).
"""
import socket
import ssl
import sys
import time

mode, host, port, sni = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

# A real ClientHello from Python's TLS stack, without a socket.
ctx = ssl.create_default_context()
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outgoing.read()

s = socket.create_connection((host, port), timeout=5)
if mode == "half-hello":
    s.sendall(hello[: len(hello) // 2])
    s.close()
    print("vanished")
elif mode == "silent":
    s.sendall(hello)
    start = time.monotonic()
    s.settimeout(60)
    try:
        while s.recv(4096):
            pass
        print(f"closed after {time.monotonic() - start:.1f}")
    except socket.timeout:
        print("held")
    except OSError:
        print(f"closed after {time.monotonic() - start:.1f}")
else:
    s.sendall(hello + b"\x17\x03\x03\x00\x10" + b"this is not tls!" * 4)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    print("closed")
