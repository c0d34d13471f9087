"""Drives frametap's web UI in a headless browser (Chromium over the DevTools
protocol, cdp.py; Firefox over WebDriver BiDi, bidi.py) the way a user would, and
prints one JSON report of what the page showed.

  ui_driver.py chromium|firefox BASE_URL TOKEN TRAFFIC_ID SEND_TEXT SHOTS_DIR READY_FILE

BASE_URL is frametap-api's (http://127.0.0.1:PORT); TRAFFIC_ID a live WebSocket
connection that has exchanged "message 1" to "message 3". Steps: the sign-in page
(and a wrong token), the link with the token, the traffic list (READY_FILE is
created once it shows, and a second connection must then appear in it live, without
a reload), the connection's
messages, a search (in the page, then of the whole connection by the API), a message sent to the client from the page, a replay, and a rule added
(with a mistake first) and deleted. A screenshot of each view goes to SHOTS_DIR.
"""
import json
import os
import sys
import time
import urllib.request

from bidi import Firefox
from cdp import Chromium

browser_name, base, token, traffic, send_text, shots, ready = sys.argv[1:8]
Browser = {"chromium": Chromium, "firefox": Firefox}[browser_name]
report = {}


def js(value):
    return json.dumps(value)


def set_value(browser, selector, value, event="input"):
    browser.evaluate(
        f"""(() => {{
        const el = document.querySelector({js(selector)});
        el.value = {js(value)};
        el.dispatchEvent(new Event({js(event)}, {{bubbles: true}}));
        return true;
    }})()"""
    )


def click(browser, selector):
    browser.evaluate(f"document.querySelector({js(selector)}).click(), true")


def rows(browser):
    return browser.evaluate(
        """Array.from(document.querySelectorAll('.vlist-row')).map(r => ({
            up: r.classList.contains('up'),
            text: r.querySelector('.preview').textContent,
            flags: Array.from(r.querySelectorAll('.badge')).map(b => b.textContent),
            match: r.classList.contains('match'),
        }))"""
    )


with Browser() as browser:
    # Without a token: the sign-in form, and a wrong token is refused with the API's words.
    browser.navigate(f"{base}/")
    browser.wait("!document.getElementById('signin').hidden", "the sign-in form")
    browser.screenshot(os.path.join(shots, "signin.png"))
    set_value(browser, "#token", "wrong")
    browser.evaluate("document.getElementById('signin').requestSubmit(), true")
    report["wrong_token"] = browser.wait(
        "document.getElementById('signin-error').textContent", "the sign-in error"
    )

    # The link frametap-api prints signs in and leaves no token in the address bar.
    browser.navigate(f"{base}/?token={token}")
    browser.wait(f"!!document.querySelector('tr[data-id=\"{traffic}\"]')", "the connection in the list")
    report["address"] = browser.evaluate("location.href")
    report["live"] = browser.wait(
        "document.getElementById('live').textContent === 'live' && 'live'", "the live events"
    )
    report["traffic_rows"] = browser.evaluate("document.querySelectorAll('table.traffic tbody tr').length")
    # A second connection now: it must show up live, on the same page.
    browser.evaluate("window.sameDocument = true")
    open(ready, "w").close()
    report["live_rows"] = browser.wait(
        "(n => n >= 2 && n)(document.querySelectorAll('table.traffic tbody tr').length)",
        "a second connection, live",
    )
    report["same_document"] = browser.evaluate("window.sameDocument === true")
    report["list_subscriptions"] = browser.evaluate("window.frametapLive.subscriptions()")
    browser.screenshot(os.path.join(shots, "traffic.png"))

    # The connection: every message, with its direction.
    click(browser, f'tr[data-id="{traffic}"] td')
    browser.wait(f"location.hash === '#/traffic/{traffic}'", "the connection's address")
    browser.wait("document.querySelectorAll('.vlist-row').length >= 6", "six messages")
    report["messages"] = rows(browser)
    report["state"] = browser.evaluate("document.querySelector('.state dd').textContent")
    report["connection_subscriptions"] = browser.evaluate("window.frametapLive.subscriptions()")

    # Search: one match, and Enter opens it in the payload viewer.
    set_value(browser, 'input[name="search"]', "message 2")
    report["search"] = browser.wait(
        "document.querySelector('.search-status').textContent", "the search result"
    )
    browser.evaluate(
        """document.querySelector('input[name="search"]').dispatchEvent(
            new KeyboardEvent('keydown', {key: 'Enter', bubbles: true})), true"""
    )
    report["opened"] = browser.wait(
        "document.querySelector('.payload-body') && document.querySelector('.payload-body').textContent",
        "the payload viewer",
    )
    browser.screenshot(os.path.join(shots, "connection.png"))
    # The same search over the whole connection, by the API: only the matches listed.
    click(browser, 'button[name="search-all"]')
    browser.wait(
        "!document.querySelector('.server-search').hidden && document.querySelectorAll('.vlist-row').length === 2",
        "the server's search results",
    )
    report["server_search"] = rows(browser)
    click(browser, 'button[name="show-all"]')
    browser.wait("document.querySelectorAll('.vlist-row').length === 6", "every message again")
    set_value(browser, 'input[name="search"]', "")

    # Send a message to the client from the page; it shows up live, marked injected.
    set_value(browser, "form.send textarea", send_text)
    set_value(browser, 'form.send select[name="direction"]', "to-client", "change")
    click(browser, 'form.send button[name="send"]')
    report["sent"] = browser.wait(
        "(t => t.startsWith('sent') && t)(document.querySelector('form.send span').textContent)",
        "the send result",
    )
    browser.evaluate(
        """(b => (b.checked = true, b.dispatchEvent(new Event('change')), true))(
            document.querySelector('input[name=follow]'))"""
    )
    browser.wait(
        f"Array.from(document.querySelectorAll('.vlist-row .preview')).some(p => p.textContent === {js(send_text)})",
        "the sent message in the list",
    )
    report["after_send"] = rows(browser)

    # Replay the conversation at once: the page links the new connection.
    set_value(browser, 'form.replay select[name="timing"]', "fast", "change")
    click(browser, 'form.replay button[name="replay"]')
    report["replayed"] = browser.wait(
        "(t => t.startsWith('replaying') && t)(document.querySelector('form.replay span').textContent)",
        "the replay's answer",
    )
    report["replay_link"] = browser.evaluate(
        "(a => a && a.getAttribute('href'))(document.querySelector('form.replay a'))"
    )
    # Its comparison with the original, in the page, once the replay has closed.
    copy = report["replay_link"].split("/")[-1]
    deadline = time.time() + 20
    while time.time() < deadline:
        request = urllib.request.Request(
            f"{base}/api/websocket/{copy}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request) as answer:
            if json.load(answer).get("open") is False:
                break
        time.sleep(0.1)
    click(browser, 'form.replay a[name="compare"]')
    browser.wait("!!document.querySelector('table.compare tbody tr')", "the comparison")
    report["compare_summary"] = browser.evaluate("document.querySelector('.comparison .summary').textContent")
    report["compare_rows"] = browser.evaluate(
        "Array.from(document.querySelectorAll('table.compare tbody tr')).map(r => r.dataset.status)"
    )
    browser.screenshot(os.path.join(shots, "compare.png"))

    # Rules: a mistake is explained, a rule is added, then deleted.
    browser.evaluate("location.hash = '#/rules', true")
    browser.wait("!!document.querySelector('form.rule-form')", "the rules view")
    set_value(browser, 'form.rule-form input[name="regex"]', "(")
    click(browser, 'form.rule-form button[name="add"]')
    report["bad_rule"] = browser.wait("document.querySelector('main p.error').textContent", "the rule error")
    set_value(browser, 'form.rule-form input[name="regex"]', "")
    set_value(browser, 'form.rule-form input[name="contains"]', "blocked")
    set_value(browser, 'form.rule-form input[name="id"]', "ui-rule")
    click(browser, 'form.rule-form button[name="add"]')
    browser.wait("!!document.querySelector('table.rules tr[data-id=\"ui-rule\"]')", "the new rule")
    report["rules_listed"] = browser.evaluate(
        "Array.from(document.querySelectorAll('table.rules tbody tr')).map(r => r.dataset.id)"
    )
    browser.screenshot(os.path.join(shots, "rules.png"))
    click(browser, 'table.rules tr[data-id="ui-rule"] button[name="delete"]')
    browser.wait("!document.querySelector('table.rules tr[data-id=\"ui-rule\"]')", "the rule gone")
    report["rules_after_delete"] = browser.evaluate(
        "document.querySelectorAll('table.rules tbody tr').length"
    )

print(json.dumps(report))
