"""Headless Chromium (Debian's) driven over the DevTools protocol, for the
end-to-end tests: start it, open a page, evaluate JavaScript, wait for a condition,
take screenshots, and end it with every helper process.

Chromium runs as the tests do (root: no sandbox), without background networking
(this machine's network is closed), and accepts any certificate: the tests check
what went over the wire, not the browser's trust store. host_rules maps names to
addresses (--host-resolver-rules). FT_NETLOG=FILE makes it write its net log.
"""
import base64
import json
import os
import subprocess
import tempfile
import time
import urllib.request

import websocket

from browser import Browser


class Chromium(Browser):
    def __init__(self, host_rules=None, timeout=20):
        super().__init__()
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        args = [
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
            "--window-size=1400,1000",
            f"--user-data-dir={self.profile.name}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        if host_rules:
            args.insert(1, f"--host-resolver-rules={host_rules}")
        if os.environ.get("FT_NETLOG"):
            args.insert(1, f"--log-net-log={os.environ['FT_NETLOG']}")
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # A process group of its own, so that every helper process goes with it.
            start_new_session=True,
        )
        self.ids = iter(range(1, 1_000_000))
        self.devtools = None

    def connect(self):
        deadline = time.time() + self.timeout
        port_file = os.path.join(self.profile.name, "DevToolsActivePort")
        while not os.path.exists(port_file) and time.time() < deadline:
            time.sleep(0.05)
        port = open(port_file).read().split()[0]
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = json.load(direct.open(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.devtools = websocket.create_connection(
            page["webSocketDebuggerUrl"], suppress_origin=True, timeout=self.timeout
        )
        self.call("Runtime.enable")

    def call(self, method, **params):
        n = next(self.ids)
        self.devtools.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            answer = json.loads(self.devtools.recv())
            self.note(answer)
            if answer.get("id") == n:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def note(self, event):
        method = event.get("method")
        if method == "Runtime.exceptionThrown":
            details = event["params"]["exceptionDetails"]
            self.problems.append(details.get("exception", {}).get("description") or details.get("text"))
        elif method == "Runtime.consoleAPICalled" and event["params"]["type"] in ("error", "warning"):
            self.problems.append(" ".join(str(a.get("value", a.get("description"))) for a in event["params"]["args"]))

    def navigate(self, url):
        self.call("Page.navigate", url=url)

    def evaluate(self, expression):
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        if self.devtools is not None:
            try:
                self.devtools.close()
            except Exception:
                pass
        self.end_processes()
        # Chromium's helper processes may still be writing to the profile as it goes.
        self.profile.cleanup()
