"""Headless Firefox (Debian's firefox-esr) driven over WebDriver BiDi, the protocol
built into Firefox (no geckodriver): start it, open a page, evaluate JavaScript,
wait for a condition, take screenshots, and end it with every helper process. The
same interface as cdp.py's Chromium, so a test runs in either browser.

Firefox gets a fresh profile that keeps it off the network (this machine's is
closed): no telemetry, experiments, remote settings or captive-portal checks.
"""
import base64
import json
import os
import subprocess
import tempfile
import threading

import websocket

from browser import Browser

PREFS = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.normandy.enabled": False,
    "app.update.disabledForTesting": True,
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
}


class Firefox(Browser):
    def __init__(self, timeout=20):
        super().__init__()
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        with open(os.path.join(self.profile.name, "user.js"), "w") as f:
            for name, value in PREFS.items():
                f.write(f"user_pref({json.dumps(name)}, {json.dumps(value)});\n")
        self.process = subprocess.Popen(
            [
                "firefox-esr",
                "--headless",
                "--no-remote",
                "--profile",
                self.profile.name,
                "--remote-debugging-port",
                "0",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.url = None
        self.ready = threading.Event()
        # Firefox says where BiDi listens on stderr; the rest is drained, never read.
        threading.Thread(target=self.read_stderr, daemon=True).start()
        self.ids = iter(range(1, 1_000_000))
        self.socket = None
        self.context = None

    def read_stderr(self):
        for line in self.process.stderr:
            if line.startswith("WebDriver BiDi listening on "):
                self.url = line.split()[-1]
                self.ready.set()

    def connect(self):
        if not self.ready.wait(self.timeout):
            raise TimeoutError("Firefox did not start WebDriver BiDi")
        self.socket = websocket.create_connection(
            f"{self.url}/session", suppress_origin=True, timeout=self.timeout
        )
        self.call("session.new", capabilities={"alwaysMatch": {"acceptInsecureCerts": True}})
        self.call("session.subscribe", events=["log.entryAdded"])
        self.context = self.call("browsingContext.getTree")["contexts"][0]["context"]

    def call(self, method, **params):
        n = next(self.ids)
        self.socket.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            answer = json.loads(self.socket.recv())
            if answer.get("type") == "event":
                self.note(answer)
            elif answer.get("id") == n:
                if answer.get("type") == "error":
                    raise RuntimeError(f"{method}: {answer.get('error')}: {answer.get('message')}")
                return answer.get("result", {})

    def note(self, event):
        if event.get("method") == "log.entryAdded":
            entry = event["params"]
            if entry.get("level") in ("error", "warn"):
                self.problems.append(entry.get("text"))

    def navigate(self, url):
        self.call("browsingContext.navigate", context=self.context, url=url, wait="none")

    def evaluate(self, expression):
        """The value of a JavaScript expression (awaited if it is a promise), as JSON."""
        result = self.call(
            "script.evaluate",
            expression=f"(async () => JSON.stringify(await ({expression})))()",
            target={"context": self.context},
            awaitPromise=True,
        )
        if result.get("type") == "exception":
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        value = result.get("result", {}).get("value")
        return None if value is None else json.loads(value)

    def screenshot(self, path):
        data = self.call("browsingContext.captureScreenshot", context=self.context)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        if self.socket is not None:
            try:
                self.call("session.end")
                self.socket.close()
            except Exception:
                pass
        self.end_processes()
        self.profile.cleanup()
