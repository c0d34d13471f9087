"""Opens a page in headless Chromium (Debian's) and prints its document.title once it
is no longer "pending" (at most 20 s), driving Chromium over the DevTools protocol
(see cdp.py).

  chromium_page.py URL NAME ADDR

NAME resolves to ADDR for Chromium.
"""
import sys

from cdp import Chromium

url, name, addr = sys.argv[1:4]

with Chromium(host_rules=f"MAP {name} {addr}") as browser:
    browser.navigate(url)
    try:
        title = browser.wait(
            "document.title !== 'pending' && document.title", "the page's result"
        )
    except TimeoutError:
        title = "pending"
    print(title)
