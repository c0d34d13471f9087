"""What the end-to-end tests' browser drivers share (cdp.py for Chromium, bidi.py for
Firefox): waiting for a condition in the page, and saying what the page showed and
complained about when it never came."""
import os
import signal
import subprocess
import time


class Browser:
    timeout = 20

    def __init__(self):
        # The page's uncaught exceptions and console errors, for failure messages.
        self.problems = []

    def evaluate(self, expression):
        raise NotImplementedError

    def wait(self, expression, what, timeout=None):
        """Waits until the expression is truthy; its value, or an error naming `what`.
        (A DOM node is not a value: test for it with !!.)"""
        deadline = time.time() + (timeout or self.timeout)
        last = None
        while time.time() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as e:
                value, last = None, e
            if value:
                return value
            time.sleep(0.1)
        try:
            page = self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
        except RuntimeError:
            page = "?"
        raise TimeoutError(
            f"timed out waiting for {what} ({expression}){f': {last}' if last else ''}\n"
            f"the page's errors: {self.problems}\nthe page shows: {page}"
        )

    def end_processes(self):
        """Ends the browser (`self.process`, started in a process group of its own)
        and every helper process it started, politely first."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=5)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        # Helpers that outlived the browser process.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self):
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_):
        self.close()
