"""A real browser (Debian's headless Chromium driven by Playwright) runs each tab's first example and
opens every view: the maps of A and B, a zoomed region, the overview (and a click through to a head),
and the λ ablation; and opens a link to a view. Screenshots of each step go to tests/screenshots/ —
look at them."""

import importlib
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from components import links, model_queue

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).parent / "screenshots"
# in CI a missing browser is a failure (the launch below raises), elsewhere a skip
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
                                reason="Debian's chromium is not installed (apt-get install chromium) and could not be")


def generated(page, panel):
    """Streaming text appears, and once both models finish, the last token's attention row."""
    page.wait_for_function("() => [...document.querySelectorAll('textarea')].some(t => t.value.length > 0 &&"
                           " t.closest('.block')?.innerText.includes('A continues'))", timeout=60_000)


TABS = [  # tab, first example's text, main button, its views' API prefix, how its result shows on the page
    ("Generation", "Anna lived in Paris", "Generate with A and B", "generation", generated),
    ("Classification", "Rosa said the service", "Classify with A and B", "classify",
     lambda page, panel: panel.locator(".output-class").first.wait_for(timeout=60_000)),
    ("QA spans", "What is the magic number of Oslo?", "Answer with A and B", "qa",
     lambda page, panel: panel.locator(".cell-wrap", has_text="A (diffllama)").filter(visible=True).first.wait_for(timeout=60_000)),
    ("Token tagging", "Anna works at Acme Corp", "Tag with A and B", "tag",
     lambda page, panel: panel.locator(".cell-wrap", has_text=re.compile(r"^\s*(O|[BI]-[A-Z]+)\s*$")).filter(visible=True).first.wait_for(timeout=60_000)),
]


@pytest.fixture(scope="module")
def browser():
    # in CI the browser's driver must be there too: an import error fails the test rather than skipping it
    playwright = importlib.import_module("playwright.sync_api") if os.environ.get("CI") == "true" \
        else pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_url)
    page.get_by_text("DiffLlama Lens").first.wait_for()
    yield page
    page.close()


def queue_joins(page, demo) -> list:
    """Every queue join the page sends, as the event it asks for (its ``BlockFunction``), in order."""
    joins = []
    page.on("request", lambda request: joins.append(demo.fns[json.loads(request.post_data)["fn_index"]])
            if "/gradio_api/queue/join" in request.url else None)
    return joins


def settled(page, demo, joins: list, after: str = "fill") -> None:
    """Waits for the page's load to be done: the selected tab's model lines filled, every ``after``
    event (the last step of the page load's chain, once per tab) joined, and the server's queue empty
    with no new join between two looks at it (events that follow others join as the others finish)."""
    page.locator(".model-info", has_text="parameters").first.wait_for(state="attached", timeout=60_000)
    queue, seen = demo._queue, -1
    for _ in range(600):  # at most a minute of looks
        idle = not any(q.queue for q in queue.event_queue_per_concurrency_id.values()) and not any(queue.active_jobs)
        if idle and sum(fn.name == after for fn in joins) >= 4 and seen == len(joins):
            return
        seen = len(joins) if idle else -1
        page.wait_for_timeout(250)
    raise AssertionError(f"the page never settled: {[fn.name for fn in joins]}")


def model_runs(joins: list) -> list[str]:
    """The joins that run a model (the model queue's events), by their function's name."""
    return [fn.name for fn in joins if fn.concurrency_id == model_queue.MODEL_QUEUE]


def test_a_plain_page_load_runs_no_model(browser, app_demo, app_url):
    """Opened without a link, the page loads the models' descriptions and nothing else: no tab's
    main action and no view joins the model queue until the visitor acts."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    joins = queue_joins(page, app_demo)
    page.goto(app_url)
    settled(page, app_demo, joins)
    print(f"plain load: {len(joins)} queue joins, {model_runs(joins)} of them run a model")
    assert model_runs(joins) == [] and joins  # the page's own load events did join
    # before any run, the models shown can change: nothing to fit, no error
    panel = page.locator("div[role='tabpanel']:visible")
    panel.locator("fieldset", has_text="models").get_by_text("B", exact=True).first.click()
    panel.locator("fieldset", has_text="models").get_by_text("A and B", exact=True).first.click()
    page.wait_for_load_state()
    page.screenshot(path=str(SHOTS / "before-run-switch.png"), full_page=True)
    assert not page.locator(".toast-body.error").count() and not page.get_by_text("Error", exact=True).count()
    page.close()


def test_a_linked_page_load_runs_the_linked_tab_once(browser, app_demo, app_url):
    """Opened with a link, the page runs the linked tab's main action once (then the view the link
    names); no other tab runs. The link's text travels packed, as a long text does."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    joins = queue_joins(page, app_demo)
    view = {"tab": "classification", "text.z": links.pack("Bob met Clara near the old bridge."),  # packed, as long texts are
            "source_a": "diffllama-cls", "source_b": "llama-cls", "show": "maps", "layer": "1"}
    page.goto(f"{app_url}?{urlencode(view)}")
    page.wait_for_function("() => document.querySelector('#classify-map-A .gtitle')?.textContent.includes('layer 1')",
                           timeout=90_000)
    settled(page, app_demo, joins)
    runs = model_runs(joins)
    print(f"linked load: {len(joins)} queue joins, model runs {runs}")
    assert runs == ["classify", "show_map"]  # the tab's run once, then the maps the link names
    page.close()


def plot_title(page, element_id: str) -> str:
    return page.locator(f"#{element_id} .gtitle").first.text_content()


def open_accordion(panel, title: str, button: str) -> None:
    """Open the accordion (unless an earlier test left it open) whose ``button`` the test presses next."""
    if not panel.get_by_role("button", name=button).is_visible():
        panel.get_by_text(title).first.click()


@pytest.mark.parametrize("tab, example, button, name, shows_result", TABS, ids=[t[0] for t in TABS])
def test_each_tab_runs_an_example_and_opens_every_view(page, tab, example, button, name, shows_result):
    SHOTS.mkdir(exist_ok=True)
    shot = lambda step: page.screenshot(path=str(SHOTS / f"{tab.split()[0].lower()}-{step}.png"), full_page=True)  # noqa: E731
    page.get_by_role("tab", name=tab).click()
    panel = page.locator("div[role='tabpanel']:visible")
    panel.locator(".model-info", has_text="parameters").first.wait_for(timeout=30_000)
    panel.locator("div.table, button").filter(has_text=example).first.click()  # the example, at the top of the tab
    panel.get_by_role("button", name=button).click()
    shows_result(page, panel)
    if name != "tag":  # the token heat: a legend with its scale, special tokens by name
        panel.locator(".lens-legend").first.wait_for(timeout=60_000)
        assert panel.get_by_text("⟨s⟩").count()
    shot("run")

    # A and B side by side, drawn after the run without a click, every token named as text (no <s>
    # markup), colour bars, grey future
    for slot in "AB":
        page.locator(f"#{name}-map-{slot} .js-plotly-plot").wait_for(timeout=60_000)
    assert "Model A (diffllama)" in plot_title(page, f"{name}-map-A") and "Model B (llama)" in plot_title(page, f"{name}-map-B")
    ticks = page.locator(f"#{name}-map-A .xtick").all_text_contents()
    assert ticks[0] == "0 ⟨s⟩" and len(ticks) == len(page.locator(f"#{name}-map-A .ytick").all_text_contents())
    assert page.locator(f"#{name}-map-B .colorbar").count() == 1
    shot("maps")

    # zoom: drag a box on A's map, then recompute that region at full resolution
    area = page.locator(f"#{name}-map-A .nsewdrag").first
    area.scroll_into_view_if_needed()
    drag = area.bounding_box()
    page.mouse.move(drag["x"] + drag["width"] * 0.2, drag["y"] + drag["height"] * 0.4)
    page.mouse.down()
    page.mouse.move(drag["x"] + drag["width"] * 0.6, drag["y"] + drag["height"] * 0.8, steps=6)
    page.mouse.up()
    open_accordion(panel, "Zoom: a region token by token", "Recompute the region")
    panel.get_by_role("button", name="Recompute the region").click()
    page.locator(f"#{name}-zoom-A .js-plotly-plot").wait_for(timeout=60_000)
    zoomed = re.search(r"queries (\d+)–(\d+) × keys (\d+)–(\d+)", plot_title(page, f"{name}-zoom-A"))
    assert zoomed and int(zoomed[1]) > 0 and int(zoomed[3]) > 0  # the dragged box, not the default from 0
    shot("zoom")

    # overview: thumbnails on one scale with a number under each; a click opens that head above
    open_accordion(panel, "Overview: every layer × head", "Draw overview")
    panel.get_by_role("button", name="Draw overview").click()
    thumbnails = page.locator(f"#{name}-overview-A figure[data-index]")
    thumbnails.nth(5).wait_for(timeout=60_000)
    assert panel.locator(".lens-legend", has_text="every head").count()
    caption = thumbnails.nth(5).locator("figcaption").text_content()
    layer, head = re.match(r"L(\d+) H(\d+)", caption).groups()
    # the first caption is not covered (the gallery's "model A" label used to lie on it)
    first = thumbnails.nth(0).locator("figcaption")
    first.scroll_into_view_if_needed()
    box = first.bounding_box()
    assert page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.tagName", [box["x"] + 4, box["y"] + box["height"] / 2]) == "FIGCAPTION"
    thumbnails.nth(5).click()
    page.wait_for_function(f"() => document.querySelector('#{name}-map-A .gtitle')?.textContent"
                           f".includes('layer {layer}, head {head}')", timeout=60_000)
    shot("overview")

    # A vs B: statistics and sinks at once; the exact activation outliers on their own button
    open_accordion(panel, "A vs B: entropy, sparsity", "Compare A and B")
    panel.get_by_role("button", name="Compare A and B").click()
    panel.locator(".js-plotly-plot", has_text="negative mass").first.wait_for(timeout=60_000)
    panel.get_by_text("attention sinks on the first token").first.wait_for()
    assert not panel.get_by_text("attention logits", exact=True).count()  # not computed until asked for
    panel.get_by_role("button", name="Activation outliers").click()
    panel.locator('text="attention logits" >> visible=true').first.wait_for(timeout=60_000)
    shot("compare")

    # λ ablation of the DiffLlama: before → after, with probabilities
    open_accordion(panel, "λ ablation (a DiffLlama)", "Run ablation")
    panel.get_by_role("button", name="Run ablation").click()
    panel.get_by_text("The model itself is unchanged").wait_for(timeout=60_000)
    shot("ablation")
    assert not page.get_by_text("Traceback").count() and not page.locator(".toast-body.error").count()


def classified(page):
    """The Classification tab's first example run, its heat drawn; returns the tab's panel."""
    SHOTS.mkdir(exist_ok=True)
    page.get_by_role("tab", name="Classification").click()
    panel = page.locator("div[role='tabpanel']:visible")
    panel.locator("div.table, button").filter(has_text="Rosa said the service").first.click()
    panel.get_by_role("button", name="Classify with A and B").click()
    panel.locator(".lens-legend").first.wait_for(timeout=60_000)
    return panel


def click_token(page, panel, click, token: int) -> None:
    """``click()`` picks a token: the heat's caption, its query slider and the compare view's query box
    then name ``token``."""
    click()
    panel.get_by_text(f"query token {token} ").first.wait_for(timeout=60_000)
    for label in ("number input for query token position", "query token: a position"):  # set by the same event:
        box = panel.get_by_label(label).element_handle()  # wait for the values, not for them to be read first
        page.wait_for_function("([box, token]) => box.value === token", arg=[box, str(token)], timeout=60_000)


def test_clicking_a_token_in_the_heat_or_on_a_map_makes_it_the_query(page):
    """A token of the heat, a tick label of a map's query axis, and a cell of a map (its query row)."""
    panel = classified(page)
    page.locator("#classify-map-A .js-plotly-plot").wait_for(timeout=60_000)
    open_accordion(panel, "A vs B: entropy, sparsity", "Compare A and B")  # its query token box in sight
    click_token(page, panel, lambda: panel.locator(".heat [data-index='3']").first.click(), 3)
    tick = page.locator("#classify-map-A .yaxislayer-above .ytick text").nth(5)
    tick.scroll_into_view_if_needed()
    click_token(page, panel, lambda: tick.click(force=True), int(tick.text_content().split()[0]))  # under plotly's axis drag
    page.screenshot(path=str(SHOTS / "token-click-tick.png"), full_page=True)
    row = page.locator("#classify-map-A .yaxislayer-above .ytick text").nth(2).bounding_box()
    area = page.locator("#classify-map-A .nsewdrag").first.bounding_box()
    row_token = int(page.locator("#classify-map-A .yaxislayer-above .ytick text").nth(2).text_content().split()[0])
    click_token(page, panel, lambda: page.mouse.click(area["x"] + area["width"] * 0.05, row["y"] + row["height"] / 2), row_token)
    assert not page.get_by_text("Traceback").count() and not page.locator(".toast-body.error").count()


def test_contribution_toggle_redraws_maps_zoom_overview_and_heat(page):
    """The cells' value (weight | contribution ‖c‖ | contribution along the output) in the map view,
    the zoom, the overview and the token heat."""
    panel = classified(page)
    cells = panel.locator("fieldset", has_text="cells: weight, or what each key adds")
    cells.get_by_text("contribution along the output").click()
    panel.get_by_role("button", name="Show attention").click()
    for slot, kind in (("A", "A1 − λ·A2"), ("B", "softmax")):  # the value on the title's first line, the map under it
        page.wait_for_function(f"() => document.querySelector('#classify-map-{slot} .gtitle')?.textContent"
                               f".includes('contribution along the output')", timeout=60_000)
        assert f"through {kind}" in plot_title(page, f"classify-map-{slot}")
    assert page.locator("#classify-map-A .cbtitle", has_text="c · o / ‖o‖").count()
    assert panel.get_by_text("Kobayashi").count()  # the measure's definition, under the maps
    page.screenshot(path=str(SHOTS / "contribution-maps.png"), full_page=True)

    open_accordion(panel, "Zoom: a region token by token", "Recompute the region")
    panel.get_by_role("button", name="Recompute the region").click()
    page.wait_for_function("() => document.querySelector('#classify-zoom-A .gtitle')?.textContent"
                           ".includes('contribution along the output')", timeout=60_000)
    open_accordion(panel, "Overview: every layer × head", "Draw overview")
    panel.get_by_role("button", name="Draw overview").click()
    panel.locator(".lens-legend", has_text="contribution along the output through").first.wait_for(timeout=60_000)

    heat = panel.locator("fieldset", has_text="heat: weight, or what each key adds")
    heat.get_by_text("contribution ‖c‖").click()
    panel.locator(".lens-legend", has_text="contribution ‖c‖").first.wait_for(timeout=60_000)
    assert panel.get_by_text("keys' contribution ‖c‖ through").count()  # the heat's caption says what it shows
    page.screenshot(path=str(SHOTS / "contribution-overview-heat.png"), full_page=True)
    assert not page.get_by_text("Traceback").count() and not page.locator(".toast-body.error").count()


def test_a_link_reopens_its_tab_runs_it_and_opens_the_view(page, app_url):
    """A link selects its tab, fills the inputs, runs the tab (here a streamed generation) and draws the
    maps and the view it names; "Copy link to this view" then gives the same link back. A bad link
    says why, and the page works as usual."""
    SHOTS.mkdir(exist_ok=True)
    view = {"tab": "generation", "prompt": "Anna lived in Paris. One morning Anna went to", "max_new_tokens": "4",
            "greedy": "true", "temperature": "0.8", "top_p": "0.95", "seed": "0", "source_a": "diffllama-lm",
            "source_b": "llama-lm", "show": "zoom", "slot": "A and B", "layer": "1", "head": "1", "kind": "a2",
            "size": "64", "value": "weight", "query_from": "2", "query_to": "7", "key_from": "0", "key_to": "7"}
    page.goto(f"{app_url}?{urlencode(view)}")
    page.wait_for_function("() => document.querySelector('#generation-zoom-A .gtitle')?.textContent.includes('queries 2–6')",
                           timeout=90_000)
    assert page.get_by_role("tab", name="Generation", selected=True).count() == 1
    assert "layer 1, head 1: A2 (second softmax)" in plot_title(page, "generation-map-A")
    assert "Model B (llama) · layer 1, head 1: softmax" in plot_title(page, "generation-map-B")
    panel = page.locator("div[role='tabpanel']:visible")
    assert panel.get_by_label("A continues").input_value()
    assert "input sha256" in page.locator("#generation-map-A .annotation-text").last.text_content()  # provenance
    page.screenshot(path=str(SHOTS / "link-zoom.png"), full_page=True)

    panel.locator("fieldset", has_text="the link opens").get_by_label("zoom").check()
    panel.get_by_role("button", name="Copy link to this view").click()
    box = page.locator("#generation-link textarea, #generation-link input").first
    page.wait_for_function("() => document.querySelector('#generation-link textarea, #generation-link input')"
                           "?.value.includes('tab=generation')", timeout=30_000)
    copied = dict(parse_qsl(urlsplit(box.input_value()).query))
    assert box.input_value().startswith(app_url) and view.items() <= copied.items()
    assert {"heat_layer", "heat_query", "heat_shared", "heat_value"} <= set(copied)  # the heat's controls too

    page.goto(f"{app_url}?tab=generation&layer=abc")
    page.get_by_text("This link cannot be opened: link parameter 'layer' is 'abc'").wait_for(timeout=30_000)
    page.locator(".model-info", has_text="parameters").first.wait_for(timeout=30_000)  # the page works as usual
    page.screenshot(path=str(SHOTS / "link-refused.png"))
    assert not page.locator(".toast-body.error").count()


LONG_SHOTS = Path(os.environ.get("DIFFLLAMA_LENS_SHOTS", "/tmp/difflens-2k-shots"))
FILLER = "Children played near the fountain. The bells rang twice at noon. A light wind came from the sea. "
NEEDLE = "The magic number of Łódź is 1601. "
LONG_PROMPT = FILLER * 45 + NEEDLE + FILLER * 44 + "What is the magic number of Łódź? The magic number of Łódź is"


@pytest.fixture
def bundled_app_url(app_demo, monkeypatch):
    """A second app on the bundled models (assets/models, trained on 2,048 positions: the tests' tiny
    models read only 512), while the test runs; the tiny models' app stays as it was."""
    import app

    from diffllama.registry import MODEL_DIRS_ENV, bundled_root

    monkeypatch.delenv("DIFFLLAMA_LENS_BUNDLED")
    monkeypatch.setenv(MODEL_DIRS_ENV, os.pathsep.join([os.environ[MODEL_DIRS_ENV], str(bundled_root())]))
    demo = app.build()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True, **app.launch_settings())
    yield demo.local_url
    demo.close()


def long_page(browser, url: str, tab: str):
    """A page of the bundled app at ``tab``, its models loaded; returns (page, panel, shot)."""
    LONG_SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    def shot(step: str) -> None:  # once no view is still drawing (gradio fades a pending output)
        page.wait_for_function("() => !document.querySelector(\"div[role='tabpanel'] .pending\")", timeout=120_000)
        page.screenshot(path=str(LONG_SHOTS / f"2k-{step}.png"), full_page=True)
    page.goto(url)
    page.get_by_role("tab", name=tab).click()
    panel = page.locator("div[role='tabpanel']:visible")
    panel.locator(".model-info", has_text="parameters").first.wait_for(timeout=60_000)
    return page, panel, shot


def done(page) -> None:
    assert not page.get_by_text("Traceback").count() and not page.locator(".toast-body.error").count()
    print("screenshots:", *sorted(str(p) for p in LONG_SHOTS.glob("2k-*.png")))
    page.close()


def test_a_2k_token_input_through_every_view(browser, bundled_app_url):
    """≈ 1,900 tokens with a needle in the middle, through every view of the Generation tab, a screenshot
    of each step in ``LONG_SHOTS`` (look at them)."""
    page, panel, shot = long_page(browser, bundled_app_url, "Generation")
    panel.get_by_label("prompt", exact=True).fill(LONG_PROMPT)
    tokens = panel.get_by_role("spinbutton", name="number input for max new tokens")
    tokens.fill("3")
    tokens.press("Enter")
    panel.get_by_role("button", name="Generate with A and B").click()
    for slot in "AB":  # the maps come after the run without a click
        page.wait_for_function(f"() => document.querySelector('#generation-map-{slot} .gtitle')?.textContent"
                               ".includes('pooled')", timeout=180_000)
    panel.locator(".lens-legend").first.wait_for(timeout=60_000)
    shot("run-and-maps")
    long_zoom(page, panel, shot)

    open_accordion(panel, "Overview: every layer × head", "Draw overview")
    panel.get_by_role("button", name="Draw overview").click()
    page.locator("#generation-overview-A figure[data-index]").nth(5).wait_for(timeout=180_000)
    shot("overview")

    # the comparison from the query token the box names, a row per layer; then a clicked token is its query
    open_accordion(panel, "A vs B: entropy, sparsity", "Compare A and B")
    panel.get_by_label("span to measure").fill("1601")
    panel.get_by_role("button", name="Compare A and B").click()
    panel.locator(".js-plotly-plot", has_text="negative mass").first.wait_for(timeout=180_000)
    panel.get_by_text("query token", exact=False).first.wait_for()
    shot("compare")
    tokens = panel.locator(".heat").first.locator("[data-index]")  # A's heat, opened around its query
    token = tokens.nth(tokens.count() - 4)  # after the needle: the span is before the query
    position = token.get_attribute("data-index")
    token.click()
    box = panel.get_by_label("query token: a position").element_handle()  # the click's event sets it (the
    # comparison may already name this token: the default query), so wait for the value, not for a text
    page.wait_for_function("([box, position]) => box.value === position", arg=[box, position], timeout=180_000)
    panel.get_by_text(re.compile(rf"A \(diffllama\): query token {position} ")).first.wait_for(timeout=180_000)  # redrawn
    shot("token-click-heat")
    tick = page.locator("#generation-map-A .yaxislayer-above .ytick text").last
    tick.scroll_into_view_if_needed()
    tick.click(force=True)  # under plotly's axis drag
    position = re.match(r"\d+", tick.text_content())[0]  # a block's label "1866–1872 …": its first token
    panel.get_by_text(f"query token {position} ").first.wait_for(timeout=180_000)
    shot("token-click-map-axis")

    open_accordion(panel, "λ ablation (a DiffLlama)", "Run ablation")
    panel.get_by_role("button", name="Run ablation").click()
    panel.get_by_text("The model itself is unchanged").wait_for(timeout=180_000)
    panel.get_by_text(re.compile(r"top prediction before → after ablation: page 1 of \d+")).first.wait_for()
    pager = panel.get_by_label(re.compile("page of the table"))
    pager.fill("2")
    pager.press("Enter")  # the next page, read from the session: no rerun
    panel.get_by_text(re.compile(r"top prediction before → after ablation: page 2 of \d+")).first.wait_for(timeout=60_000)
    shot("ablation")

    panel.get_by_label("prompt", exact=True).fill(LONG_PROMPT.replace("1601", "1602"))  # edited, not run again
    panel.get_by_text("belong to the last run").first.wait_for(timeout=30_000)
    shot("edited-input")
    done(page)


def long_zoom(page, panel, shot) -> None:
    """A region wider than the full-resolution limit (drawn in blocks, never an error badge), then the
    needle found: the zoom's keys around it, read by the last tokens."""
    open_accordion(panel, "Zoom: a region token by token", "Recompute the region")
    for label, value in (("query tokens from", "0"), ("key tokens from", "0")):
        panel.get_by_label(label).fill(value)
    for field in panel.get_by_label("to (exclusive)").all():
        field.fill("600")
    panel.get_by_role("button", name="Recompute the region").click()
    page.wait_for_function("() => document.querySelector('#generation-zoom-A .gtitle')?.textContent.includes('blocks of')",
                           timeout=120_000)
    assert panel.get_by_text("wider than 256 tokens").count() and "full resolution" not in plot_title(page, "generation-zoom-A")
    shot("zoom-wider-than-the-limit")
    panel.get_by_label("find text in the input").fill("magic number of Łódź is 1601")
    panel.get_by_role("button", name="Find and zoom").click()
    page.wait_for_function("() => /full resolution: queries \\d+–\\d+ × keys (8|9)\\d\\d–/.test("
                           "document.querySelector('#generation-zoom-A .gtitle')?.textContent)", timeout=120_000)
    assert panel.get_by_text("found magic number").count()
    shot("find-the-needle")


def test_a_2k_context_in_qa_and_a_2k_text_in_tagging(browser, bundled_app_url):
    """QA over a ≈ 1,900-token context (shown once), and tagging's per-token table a page at a time."""
    page, panel, shot = long_page(browser, bundled_app_url, "QA spans")
    context = LONG_PROMPT.rsplit("What is", 1)[0]
    panel.get_by_label("question", exact=True).fill("What is the magic number of Łódź?")
    panel.get_by_label("context", exact=True).fill(context)
    panel.get_by_role("textbox", name=re.compile("^gold answer")).fill("1601")
    panel.get_by_role("button", name="Answer with A and B").click()
    panel.locator(".cell-wrap", has_text="A (diffllama)").filter(visible=True).first.wait_for(timeout=240_000)
    page.locator("#qa-map-A .js-plotly-plot").wait_for(timeout=180_000)
    assert panel.get_by_text(re.compile(r"⋯ [\d,]+ characters ⋯")).count()  # the answers in sight, the context once
    shot("qa-context")

    page.get_by_role("tab", name="Token tagging").click()
    panel = page.locator("div[role='tabpanel']:visible")
    panel.get_by_label("text", exact=True).fill(context)
    panel.get_by_role("button", name="Tag with A and B").click()
    panel.get_by_text(re.compile(r"page 1 of \d+, \d+ tokens")).first.wait_for(timeout=240_000)
    pager = panel.get_by_label(re.compile("page of the per-token table"))
    pager.fill("2")
    pager.press("Enter")
    panel.get_by_text(re.compile(r"page 2 of \d+, \d+ tokens")).first.wait_for(timeout=60_000)
    page.locator("#tag-map-A .js-plotly-plot").wait_for(timeout=180_000)
    shot("tagging-page-2")
    done(page)
