"""Drives frametap's web UI on a connection of a million frames (headless Chromium
over the DevTools protocol, or Firefox over WebDriver BiDi) and prints one JSON
report of what the page held and showed at each step.

  ui_big_connection.py chromium|firefox BASE_URL TOKEN TRAFFIC_ID SHOTS_DIR

TRAFFIC_ID is a connection whose frames are one-frame text messages numbered in
their payload ("seq":N). Steps: open it (the page should show its latest
messages), scroll to the top twice (earlier pages load in front, without a gap),
jump to the first messages, then back to the latest.
"""
import json
import os
import sys

from bidi import Firefox
from cdp import Chromium

browser_name, base, token, traffic, shots = sys.argv[1:6]
Browser = {"chromium": Chromium, "firefox": Firefox}[browser_name]
report = {}

# What the page holds: the window of items in memory, the rows drawn, every element.
STATE = """(() => {
    const rows = Array.from(document.querySelectorAll('.vlist-row .preview'));
    const seq = (t) => { const m = /"seq":(\\d+)/.exec(t || ''); return m ? Number(m[1]) : null; };
    return {
        window: window.frametapUiStats.window,
        rowsDrawn: rows.length,
        firstRowSeq: rows.length ? seq(rows[0].textContent) : null,
        lastRowSeq: rows.length ? seq(rows[rows.length - 1].textContent) : null,
        elements: document.getElementsByTagName('*').length,
        counter: document.querySelector('.list-controls > span.muted:last-child').textContent,
        follow: document.querySelector('input[name=follow]').checked,
    };
})()"""


def state(browser):
    return browser.evaluate(STATE)


def seq_of(item_id):
    return int(item_id.split("-")[1], 16)


def window_starts_before(browser, first_seq, what):
    browser.wait(
        f"(w => w.first && parseInt(w.first.split('-')[1], 16) < {first_seq})(window.frametapUiStats.window)",
        what,
    )


def scroll_to_top(browser):
    # As a user does: the wheel stops following, then the view reaches the top.
    browser.evaluate(
        """(v => (v.dispatchEvent(new WheelEvent('wheel', {deltaY: -500, bubbles: true})),
                  v.scrollTop = 0, v.dispatchEvent(new Event('scroll')), true))(
            document.querySelector('.vlist'))"""
    )


with Browser() as browser:
    browser.navigate(f"{base}/?token={token}#/traffic/{traffic}")
    browser.wait("document.querySelectorAll('.vlist-row').length > 10", "the connection's rows")
    browser.wait("!!window.frametapUiStats.window.last", "the first page")
    report["opened"] = state(browser)
    browser.screenshot(os.path.join(shots, "big-latest.png"))

    first = seq_of(report["opened"]["window"]["first"])
    scroll_to_top(browser)
    window_starts_before(browser, first, "an earlier page")
    report["earlier"] = state(browser)
    first = seq_of(report["earlier"]["window"]["first"])
    scroll_to_top(browser)
    window_starts_before(browser, first, "a second earlier page")
    browser.wait("document.querySelectorAll('.vlist-row').length > 10", "rows after scrolling up")
    report["earlier_again"] = state(browser)

    browser.evaluate("document.querySelector('button[name=first]').click(), true")
    browser.wait(
        "window.frametapUiStats.window.first && window.frametapUiStats.window.first.endsWith('-00000001')",
        "the first messages",
    )
    browser.wait("document.querySelectorAll('.vlist-row').length > 10", "the first rows")
    report["start"] = state(browser)
    browser.screenshot(os.path.join(shots, "big-first.png"))

    browser.evaluate("document.querySelector('button[name=latest]').click(), true")
    browser.wait(
        "window.frametapUiStats.window.first && !window.frametapUiStats.window.first.endsWith('-00000001')",
        "the latest messages again",
    )
    browser.wait("document.querySelectorAll('.vlist-row').length > 10", "the latest rows")
    report["latest"] = state(browser)
    report["problems"] = browser.problems

print(json.dumps(report))
