"""Opens a page in headless Chromium (Debian's) and prints its document.title once it
is no longer "pending" (at most 20 s), driving Chromium over the DevTools protocol.

  chromium_page.py URL NAME ADDR

NAME resolves to ADDR for Chromium (--host-resolver-rules). Chromium runs as the
tests do (root: no sandbox), without background networking (this machine's network
is closed), and accepts any certificate: the tests check what went over the wire,
not the browser's trust store.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

url, name, addr = sys.argv[1:4]
deadline = time.time() + 20

with tempfile.TemporaryDirectory() as profile:
    chromium = subprocess.Popen(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
            f"--host-resolver-rules=MAP {name} {addr}",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        while not os.path.exists(port_file) and time.time() < deadline:
            time.sleep(0.05)
        port = open(port_file).read().split()[0]
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = json.load(direct.open(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        devtools = websocket.create_connection(
            page["webSocketDebuggerUrl"], suppress_origin=True, timeout=20
        )
        ids = iter(range(1, 1_000_000))

        def call(method, **params):
            n = next(ids)
            devtools.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                answer = json.loads(devtools.recv())
                if answer.get("id") == n:
                    return answer.get("result", {})

        call("Page.navigate", url=url)
        title = "pending"
        while time.time() < deadline:
            result = call("Runtime.evaluate", expression="document.title", returnByValue=True)
            title = result.get("result", {}).get("value") or "pending"
            if title != "pending":
                break
            time.sleep(0.1)
        print(title)
    finally:
        chromium.terminate()
        try:
            chromium.wait(timeout=5)
        except subprocess.TimeoutExpired:
            chromium.kill()
