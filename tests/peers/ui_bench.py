"""The web UI under a live flood, for `cargo xtask bench`: headless Chromium (cdp.py)
opens the page, waits for the bench's connection (path /stamped) to appear in the
traffic list, opens it (following live), and waits until EXPECTED messages arrived
live or none came for 15 s. Prints one JSON report: messages received, their rate,
capture-to-row latency percentiles (the page's own measure), the longest gap between
animation frames during the flood (how long the page was unresponsive at worst), the
share of the time the page's main thread was busy, the JS heap after a forced
garbage collection, and the elements in the document.

  ui_bench.py BASE_URL TOKEN EXPECTED
"""
import json
import os
import sys
import time

from cdp import Chromium

base, token, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])

with Chromium(timeout=120) as browser:
    browser.navigate(f"{base}/?token={token}")
    traffic = browser.wait(
        """(r => r && r.dataset.id)(Array.from(document.querySelectorAll('table.traffic tbody tr'))
            .find(r => r.textContent.includes('/stamped')))""",
        "the bench's connection in the list",
    )
    browser.evaluate(f"location.hash = '#/traffic/{traffic}', true")
    browser.wait("!!document.querySelector('.vlist') && !!window.frametapUiStats", "the connection view")
    browser.call("Performance.enable")

    def busy():
        metrics = browser.call("Performance.getMetrics")["metrics"]
        return next(m["value"] for m in metrics if m["name"] == "TaskDuration")

    busy_before, wall_before = busy(), time.time()
    # FT_UI_PROFILE=FILE: where the page's main thread spends its time (self time).
    profile = os.environ.get("FT_UI_PROFILE")
    if profile:
        browser.call("Profiler.enable")
        browser.call("Profiler.start")
    # The longest gap between animation frames from now on.
    browser.evaluate(
        """(() => { window.benchGap = 0; let prev = performance.now();
            const tick = (t) => { window.benchGap = Math.max(window.benchGap, t - prev); prev = t;
              requestAnimationFrame(tick); };
            requestAnimationFrame(tick); return true; })()"""
    )
    last, last_change = 0, time.time()
    while True:
        received = browser.evaluate("window.frametapUiStats.received")
        if received >= expected:
            break
        if received != last:
            last, last_change = received, time.time()
        elif time.time() - last_change > 15 and received > 0:
            break
        elif time.time() - last_change > 120:
            break
        time.sleep(0.5)
    stats = browser.evaluate(
        """(s => {
            const n = Math.min(s.received, s.latencies.length);
            const l = Array.from(s.latencies.subarray(0, n)).sort((a, b) => a - b);
            const at = (q) => n ? l[Math.min(n - 1, Math.floor(q * n))] : null;
            return {received: s.received, seconds: (s.last - s.first) / 1000,
                    p50: at(0.5), p99: at(0.99), max: n ? l[n - 1] : null,
                    gap: window.benchGap, elements: document.getElementsByTagName('*').length,
                    rows: document.querySelectorAll('.vlist-row').length};
        })(window.frametapUiStats)"""
    )
    if profile:
        nodes = browser.call("Profiler.stop")["profile"]
        with open(profile, "w") as f:
            json.dump(nodes, f)
    # Busy share over the flood (from its first live item to the last).
    stats["busy"] = (busy() - busy_before) / max(time.time() - wall_before, 1e-9)
    browser.call("HeapProfiler.collectGarbage")
    heap = browser.call("Runtime.getHeapUsage")
    stats["heap_used"] = heap["usedSize"]
    stats["traffic"] = traffic
print(json.dumps(stats))
