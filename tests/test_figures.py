"""The figures' fixed behaviours: colour scales robust to one extreme cell and stated on every map and
legend, round colour-bar ticks, tick labels that fit their panel, per-panel or shared zoom scales,
segment names that leave the key axis alone (checked in plotly.js itself, in headless Chromium),
stamps naming each panel's own map, plain figures sending plotly's own JSON, overview thumbnails
inline in one HTML, token heat opened around the query and its strongest keys, display labels
worked out once per input."""

import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from components import figures, token_heat
from diffllama import tokens
from diffllama.provenance import Provenance
from diffllama.records import AttentionMap, AttentionRegion

PLOTLY_JS = Path(go.__file__).parent.parent / "package_data" / "plotly.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def pooled_map(kind: str = "diff", n: int = 32, extreme: float | None = None, seed: int = 0) -> AttentionMap:
    """A causal [n, n] map of small values (≤ 0.1), row 0 holding ``extreme`` (as 1 − λ in layer 0)."""
    values = np.tril(np.random.default_rng(seed).uniform(-0.1 if kind == "diff" else 0, 0.1, (n, n))).astype(np.float32)
    if extreme is not None:
        values[0, 0] = extreme
    return AttentionMap(0, 1, kind, values, list(range(n + 1)), [f"{i} t{i}" for i in range(n)], 0.5 if kind == "diff" else None)


def record(kind: str | None = "diff") -> Provenance:
    return Provenance({"A": "diffllama-lm", "B": "llama-lm"}, "0123456789abcdef", {"torch": "2"}, "2026-01-01T00:00:00+00:00",
                      3, 0, kind, "http://h/?tab=generation")


# --- colour scales --------------------------------------------------------------------------------
def test_one_extreme_cell_does_not_set_the_scale_and_the_map_says_so():
    figure = figures.attention_heatmap(pooled_map(extreme=2.37))
    heatmap = figure.data[0]
    assert heatmap.zmax < 0.2 and heatmap.zmin == -heatmap.zmax  # not 2.37: the other cells keep their colour
    assert heatmap.colorbar.ticktext[-1].startswith("≥") and heatmap.colorbar.ticktext[0].startswith("≤")
    title = figure.layout.title.text
    assert "own colour scale" in title and "99th percentile of |value|" in title and "up to 2.37" in title


def test_a_long_maps_diagonal_saturates_instead_of_whitening_the_rest():
    """Pooled blocks' attention to their own tokens (the diagonal) is far larger than the rest: the
    percentile is taken off the diagonal, so a key read from far away (the needle) keeps its colour."""
    view = pooled_map("softmax", n=64, seed=2)  # the diagonal: 3 % of the visible cells, beyond any high percentile
    view.values *= 0.1
    view.values[np.diag_indices(64)] = 0.9
    view.values[56:, 10] = 0.3  # one key read by the last queries
    heatmap = figures.attention_heatmap(view).data[0]
    assert heatmap.zmax <= 0.3  # the needle's column at full colour (scaled to the diagonal, it was a third of it)
    assert "off the diagonal" in figures.attention_heatmap(view).layout.title.text
    region = AttentionRegion(0, 0, "softmax", view.values[48:64, 2:18], (48, 64), (2, 18),
                             [str(i) for i in range(48, 64)], [str(i) for i in range(2, 18)], None)
    assert "off the diagonal" not in figures.region_heatmap(region).layout.title.text  # no diagonal in this region


def test_a_scale_without_outliers_clips_nothing():
    limit = figures.robust_limit(np.array([[0.5, np.nan], [0.4, 0.45]]))
    assert limit == 0.5 and not limit.saturated and limit.describe(False) == "full colour at 0.5 (the largest |value|)"
    figure = figures.attention_heatmap(pooled_map("softmax", n=4, seed=1))
    assert not any(text.startswith("≥") for text in figure.data[0].colorbar.ticktext)


def test_colour_bars_are_ticked_at_round_values_and_both_ends():
    values, texts = figures.bar_ticks(-0.145, 0.145, clipped=True)
    assert values[0] == -0.145 and values[-1] == 0.145 and 0 in values and len(values) >= 5
    assert texts[0] == "≤-0.145" and texts[-1] == "≥0.145" and "0" in texts and "-0" not in texts
    inner = np.array(values[1:-1])
    assert np.allclose(np.round(inner / 0.05), inner / 0.05)  # multiples of one round step
    values, texts = figures.bar_ticks(0, 0.0203)
    assert values[0] == 0 and values[-1] == 0.0203 and all(not t.startswith("≥") for t in texts) and len(values) >= 4


def test_overview_scale_survives_one_extreme_cell_and_its_legend_says_how():
    layer0 = [pooled_map("diff", 24, extreme=2.37).values] + [pooled_map("diff", 24, seed=s).values for s in (1, 2)]
    quiet = [pooled_map("diff", 24, seed=s).values * 0.5 for s in (3, 4, 5)]
    limit = figures.overview_limit([layer0, quiet])
    assert limit < 0.2 and limit.peak == pytest.approx(2.37) and limit.beyond >= 1
    dim = figures.thumbnail(quiet[0], "diff", limit)
    white = figures.thumbnail(np.zeros((24, 24)), "diff", limit)
    assert (np.abs(dim.astype(int) - white.astype(int)).sum(axis=2)[np.tril_indices(24)] > 30).mean() > 0.3  # visibly coloured
    legend = figures.scale_legend("diff", limit, "A, every head:")
    assert "99th percentile" in legend and "up to 2.37" in legend


# --- layout -------------------------------------------------------------------------------------------
def test_decomposition_labels_fit_a_third_of_the_page_and_a1_a2_share_a_stated_scale():
    views = {kind: pooled_map(kind, n=128, seed=i) for i, kind in enumerate(("a1", "a2", "diff"))}
    a1, a2, diff = figures.decomposition(views)
    for figure in (a1, a2, diff):
        axis = figure.layout.xaxis
        room = figure.layout.height - figures.maps.AXIS_SPACE
        assert len(axis.tickvals) <= 24 and room / len(axis.tickvals) >= axis.tickfont.size  # no label over the next
    assert a1.data[0].zmax == a2.data[0].zmax and "scale shared with A2" in a1.layout.title.text
    assert "own colour scale" in diff.layout.title.text
    full = figures.attention_heatmap(pooled_map(n=64))
    assert len(full.layout.xaxis.tickvals) == 64  # a half-page map still names every one of 64 tokens


def test_zoom_panels_say_whose_scale_they_use_and_can_share_one():
    def region(values):
        return AttentionRegion(1, 0, "softmax", values, (10, 14), (8, 12), [f"{i} q" for i in range(10, 14)],
                               [f"{i} k" for i in range(8, 12)], None)
    a, b = region(np.full((4, 4), 0.15, np.float32)), region(np.full((4, 4), 0.02, np.float32))
    own = figures.region_heatmap(b)
    assert own.data[0].zmax == pytest.approx(0.02) and "own colour scale" in own.layout.title.text
    shared = figures.region_limit(a, b)
    left, right = (figures.region_heatmap(r, zmax=shared, scale_with="the other model's zoom") for r in (a, b))
    assert left.data[0].zmax == right.data[0].zmax == pytest.approx(0.15)
    assert "scale shared with the other model's zoom" in right.layout.title.text


def test_a_segment_name_stays_inside_the_keys_and_above_the_map():
    n = 40
    figure = figures.attention_heatmap(pooled_map(n=n), segments=[(5, "question"), (35, "generated")])
    names = {a.text: a for a in figure.layout.annotations}
    assert names["▸ question"].xanchor == "left" and names["generated ▸"].xanchor == "right"
    assert all(a.yref == "y domain" and a.y == 1 for a in names.values())


@pytest.mark.skipif(not Path(CHROMIUM).exists() and os.environ.get("CI") != "true", reason="Debian's chromium is not installed")
def test_plotly_draws_no_masked_band_beside_a_generation_map():
    """plotly.js widens an autoranged axis to fit an annotation's text: the keys' range must stay the
    map's own, with the continuation named near the right edge."""
    playwright = importlib.import_module("playwright.sync_api") if os.environ.get("CI") == "true" \
        else pytest.importorskip("playwright.sync_api")
    n = 60
    figure = figures.provenance_note(figures.attention_heatmap(pooled_map(n=n), segments=[(52, "generated")]), record())
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 700, "height": 800})
        page.set_content(f'<div id="map" style="width:640px"></div><script>{PLOTLY_JS.read_text()}</script>'
                         f'<script>const f = {figure.to_json()}; Plotly.newPlot("map", f.data, f.layout)</script>')
        ranges = page.evaluate("() => [document.getElementById('map')._fullLayout.xaxis.range,"
                               " document.getElementById('map')._fullLayout.yaxis.range]")
        browser.close()
    assert ranges[0] == pytest.approx([-0.5, n - 0.5]) and sorted(ranges[1]) == pytest.approx([-0.5, n - 0.5])


# --- stamps, plain figures --------------------------------------------------------------------------
def test_each_decomposition_panel_is_stamped_with_its_own_map_under_its_labels():
    views = {kind: pooled_map(kind, n=16, seed=i) for i, kind in enumerate(("a1", "a2", "diff"))}
    for kind, figure in zip(("a1", "a2", "diff"), figures.decomposition(views)):
        margin, height = dict(figure.layout.margin.to_plotly_json()), figure.layout.height
        stamped = figures.provenance_note(figure, record("diff"))  # the view was asked for "diff"
        footer = stamped.layout.annotations[-1]
        assert f"map {kind}" in footer.text and stamped.layout.meta["provenance"]["kind"] == kind
        assert footer.y == 0 and footer.yanchor == "top" and footer.yshift == -margin["b"]  # under the tick labels
        assert stamped.layout.margin.b > margin["b"] and stamped.layout.height > height
        assert stamped.layout.margin.t == margin["t"]  # the top, under gradio's label, is left alone
    chart = figures.provenance_note(figures.lambda_profile({"A": ([0.2, 0.3], [0.2, 0.4])}), record(None))
    assert "map" not in chart.layout.annotations[-1].text and chart.layout.margin.t > 50  # a chart: at its top


def test_plain_figures_send_the_json_plotly_would_validate_to():
    for figure in (figures.attention_heatmap(pooled_map(extreme=2.0), segments=[(20, "generated")]),
                   figures.provenance_note(figures.attention_heatmap(pooled_map("softmax", n=8)), record()),
                   figures.lambda_profile({"A (diffllama)": ([0.5, 0.61], [0.2, 0.36])})):
        sent = json.loads(figure.to_json())
        assert json.loads(go.Figure(sent).to_json()) == sent  # plotly's validation accepts and keeps every setting


# --- overview, heat, labels ---------------------------------------------------------------------------
def test_overview_is_one_html_of_inline_thumbnails_with_escaped_captions():
    tiles = [(figures.thumbnail(pooled_map("softmax", 8, seed=i).values, "softmax", 0.1), f"L0 H{i} · 0.{i}")
             for i in range(3)]
    page = figures.overview_html(tiles, "model A (<b>x</b>)")
    assert page.count("<figure") == 3 and page.count('src="data:image/png;base64,') == 3
    assert [f'data-index="{i}"' in page for i in range(3)] == [True] * 3 and "L0 H2 · 0.2</figcaption>" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>" not in page
    assert "trigger('select'" in figures.CLICK_SELECT_JS and "index" in figures.CLICK_SELECT_JS


class LongTrace:
    """A trace's token fields for a text of ``n`` words "w0 w1 …" after a ⟨s⟩."""

    def __init__(self, n: int):
        words = [f"w{i}" for i in range(n)]
        self.text = " ".join(words)
        starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
        self.tokens = ["<s>"] + words
        self.sequence_ids = [None] + [0] * n
        self.offsets = [(0, 0)] + [(int(s), int(s) + len(w)) for s, w in zip(starts, words)]


def test_a_long_heat_opens_around_the_query_and_its_strongest_keys():
    trace, query = LongTrace(999), 999
    values = np.full(1000, 0.001)
    values[[0, 400, 401, 700]] = [0.5, 0.3, -0.4, 0.2]
    row = token_heat.HeatRow("A", query, 2, values)
    view = token_heat.heat_view(trace, {0: trace.text}, row, 0.5)
    focused, whole = view.split("<details>")
    assert "w399" in focused and "w699" in focused and "w998" in focused and "w200" not in focused
    assert "⋯ 375 tokens ⋯" in focused and "the 4 keys of largest |value| (0, 400, 401, 700)" in focused  # not the 0.001s
    assert "outline:2px" in focused and "the whole input (1000 tokens)" in whole and "w200" in whole
    short = token_heat.heat_view(LongTrace(20), {0: LongTrace(20).text}, token_heat.HeatRow("A", 20, 2, np.ones(21)), 1.0)
    assert "<details>" not in short and "w10" in short


def test_display_labels_are_worked_out_once_per_input():
    tokens._displayed.cache_clear()
    words, sequences = ["<s>", " the", "\n"], [None, 0, 0]
    first = tokens.display_tokens(words, sequences)
    first.append("changed by a caller")
    assert tokens.display_tokens(list(words), list(sequences)) == ["⟨s⟩", "␣the", "↵"]
    assert tokens._displayed.cache_info().hits == 1
