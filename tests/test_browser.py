"""A real browser (Debian's headless Chromium driven by Playwright) runs each tab's first example."""

import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).parent / "screenshots"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (apt-get install chromium) and could not be")


def generated(page, panel):
    """Streaming text appears, and once both models finish, the last token's attention row."""
    page.wait_for_function("() => [...document.querySelectorAll('textarea')].some(t => t.value.length > 0 &&"
                           " t.closest('.block')?.innerText.includes('A continues'))", timeout=60_000)
    panel.get_by_text("Model A: token").wait_for(timeout=60_000)


TABS = [  # tab, first example's text, main button, how its result shows on the page
    ("Generation", "The magic number of Lyon", "Generate with A and B", generated),
    ("Classification", "The film was not bad", "Classify with A and B",
     lambda page, panel: panel.locator(".output-class").first.wait_for(timeout=60_000)),
    ("QA spans", "What is the magic number of Lyon?", "Answer with A and B",
     lambda page, panel: panel.locator(".cell-wrap", has_text="A (diffllama)").filter(visible=True).first.wait_for(timeout=60_000)),
    ("Token tagging", "Anna works at Acme Corp", "Tag with A and B",
     lambda page, panel: panel.locator(".cell-wrap", has_text=re.compile(r"^\s*(O|[BI]-[A-Z]+)\s*$")).filter(visible=True).first.wait_for(timeout=60_000)),
]


@pytest.fixture(scope="module")
def page(app_url):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url)
        page.get_by_text("DiffLlama Lens").first.wait_for()
        yield page
        browser.close()


@pytest.mark.parametrize("tab, example, button, shows_result", TABS, ids=[t[0] for t in TABS])
def test_first_example_of_each_tab_runs_in_the_browser(page, tab, example, button, shows_result):
    SHOTS.mkdir(exist_ok=True)
    page.get_by_role("tab", name=tab).click()
    panel = page.locator("div[role='tabpanel']:visible")
    panel.locator("div.table, button").filter(has_text=example).first.click()  # gr.Examples' first example
    panel.get_by_role("button", name=button).click()
    shows_result(page, panel)
    panel.locator(".model-info", has_text="parameters").first.wait_for(timeout=30_000)
    panel.get_by_role("button", name="Show attention").click()
    panel.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.screenshot(path=str(SHOTS / f"{tab.split()[0].lower()}.png"), full_page=True)
    assert not page.get_by_text("Traceback").count() and not page.locator(".toast-body.error").count()
