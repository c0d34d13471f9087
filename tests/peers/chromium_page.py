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
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

url, name, addr = sys.argv[1:4]
deadline = time.time() + 20

# Chromium's helper processes may still be writing to the profile as it goes.
with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
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
        ]
        # FT_NETLOG=FILE: Chromium's own log of what it did on the network.
        + ([f"--log-net-log={os.environ['FT_NETLOG']}"] if os.environ.get("FT_NETLOG") else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # A process group of its own, so that every helper process goes with it.
        start_new_session=True,
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
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(chromium.pid, sig)
                chromium.wait(timeout=5)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        # Helpers that outlived the browser process.
        try:
            os.killpg(chromium.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
