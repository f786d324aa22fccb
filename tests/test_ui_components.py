"""UI pieces against canned records and fake runners: no model, no torch in the UI."""

import re

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from components import (classification_tab, exports, figures, generation_tab, links, model_slots, paging, panel, qa_tab,
                        run_store, safe_text, tagging_tab, token_heat)
from components.panel import runner, slots, spec
from diffllama import analysis, tasks
from diffllama.analysis import derived
from diffllama.records import (AblationResult, AnswerSpan, AttentionMap, AttentionRegion, ClassificationResult, Entity,
                               HeadStats, LabelScore, ModelInfo, Overview, TaggingResult, TokenAlignment, TokenTag)
from diffllama.tokens import display_token, display_tokens
from diffllama.trace import LayerCache


@pytest.fixture(autouse=True)
def no_runs_left_behind():
    """Callbacks called directly keep their runs under the session "local" of the app-wide store:
    forget them, so later tests (in the same process) see only their own."""
    yield
    run_store.STORE.end_session("local")


def attention_map(kind="diff", n=4, lam=0.3, layer=1, head=0, value="weight"):
    values = np.tril(np.full((n, n), 0.2, dtype=np.float32))
    values[2, 1] = -0.1 if value != "norm" else 0.1
    return AttentionMap(layer=layer, head=head, kind=kind, values=values, edges=list(range(n + 1)),
                        labels=[f"{i} t{i}" for i in range(n)], lambda_=lam if kind == "diff" else None, value=value)


# --- tokens as text ------------------------------------------------------------------------------
def test_tokens_are_shown_as_plain_readable_text():
    assert display_token("<s>", special=True) == "⟨s⟩" and display_token("</s>", special=True) == "⟨/s⟩"
    assert display_token("[CLS]", special=True) == "⟨[CLS]⟩"
    assert display_token(" film") == "␣film" and display_token("\n\t") == "↵⇥" and display_token("") == "∅"
    assert display_token("<b>") == "<b>"  # ordinary text stays itself; renderers escape it at their edge
    assert display_tokens(["<s>", " a"], [None, 0]) == ["⟨s⟩", "␣a"]
    assert figures.plotly_text("<b> & </s>") == "&lt;b&gt; &amp; &lt;/s&gt;"
    assert safe_text.markdown_code("<s>") == "`<s>`" and safe_text.markdown_code("a`b") == "`` a`b ``"


# --- maps ------------------------------------------------------------------------------------------
def test_heatmap_is_diverging_and_centred_for_differential_maps():
    figure = figures.attention_heatmap(attention_map("diff"))
    heatmap = figure.data[0]
    assert heatmap.zmid == 0 and heatmap.zmin == -heatmap.zmax
    assert "λ = 0.300" in figure.layout.title.text
    softmax = figures.attention_heatmap(attention_map("softmax")).data[0]
    assert softmax.zmid is None and softmax.zmin == 0


def test_heatmap_reads_well_square_cells_every_label_colour_bar_masked_future():
    figure = figures.attention_heatmap(attention_map("diff", n=64))
    heatmap, layout = figure.data[0], figure.layout
    assert layout.yaxis.scaleanchor == "x" and layout.yaxis.scaleratio == 1  # square cells
    assert len(layout.xaxis.tickvals) == 64 and len(layout.yaxis.tickvals) == 64  # every token labelled
    assert heatmap.showscale is not False and heatmap.colorbar.title.text
    z = np.asarray(heatmap.z, dtype=float)
    assert np.isnan(z[0, 1]) and z[1, 0] == pytest.approx(0.2)  # the future is not 0: drawn as the grey background
    assert heatmap.hoverongaps is False and layout.plot_bgcolor == figures.MASKED
    # hover text comes from the axis categories, never one string per cell
    assert heatmap.text is None and heatmap.customdata is None and "%{y}" in heatmap.hovertemplate
    assert list(heatmap.x) == [f"{i} t{i}" for i in range(64)]
    many = figures.attention_heatmap(attention_map("diff", n=100))
    assert len(many.layout.xaxis.tickvals) < 64


def test_token_labels_are_escaped_for_plotly():
    view = attention_map("softmax", n=3)
    view.labels = ["0 ⟨s⟩", "1 <b>", "2 &"]
    heatmap = figures.attention_heatmap(view).data[0]
    assert list(heatmap.x) == ["0 ⟨s⟩", "1 &lt;b&gt;", "2 &amp;"]


def test_segment_boundaries_are_marked_on_both_axes():
    figure = figures.attention_heatmap(attention_map("diff", n=6), segments=[(3, "context")])
    lines = [shape for shape in figure.layout.shapes if shape.type == "line"]
    assert {(s.x0, s.x1) for s in lines} >= {(2.5, 2.5)} and {(s.y0, s.y1) for s in lines} >= {(2.5, 2.5)}
    assert any("context" in a.text for a in figure.layout.annotations)
    pooled = AttentionMap(1, 0, "softmax", np.tril(np.ones((3, 3), np.float32)), [0, 4, 8, 12], ["a", "b", "c"], None)
    assert figures.axis_position(pooled.edges, 6) == pytest.approx(1.0)  # half-way through block 1


def test_a_512_block_map_stays_under_two_megabytes():
    values = np.tril(np.random.default_rng(0).random((512, 512), dtype=np.float32))
    view = AttentionMap(0, 0, "diff", values - 0.1, list(range(0, 2049, 4)), [f"{i} token{i}" for i in range(512)], 0.5)
    assert len(figures.attention_heatmap(view).to_json()) < 2_000_000


def test_region_is_drawn_at_full_resolution_with_its_own_positions():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    region = AttentionRegion(2, 1, "softmax", values, (10, 13), (9, 13), ["10 a", "11 b", "12 c"],
                             ["9 x", "10 a", "11 b", "12 c"], None)
    figure = figures.region_heatmap(region)
    z = np.asarray(figure.data[0].z, dtype=float)
    assert np.isnan(z[0, 2]) and z[0, 1] == 1.0  # query 10 sees key 10, not key 11
    assert figure.layout.meta["row_edges"] == [10, 11, 12, 13] and "queries 10–12 × keys 9–12" in figure.layout.title.text


# --- token heat --------------------------------------------------------------------------------------
class FakeTrace:
    """A character-level trace: ⟨s⟩, then one token per character."""

    kinds, lambdas, nbytes, arch = ("softmax",), None, 0, "llama"

    def __init__(self, text, layers=2, heads=2, end_token=False):
        self.num_layers, self.num_heads = layers, heads
        self.offsets = [(0, 0)] + [(i, i + 1) for i in range(len(text))] + ([(0, 0)] if end_token else [])
        self.sequence_ids = [None] + [0] * len(text) + ([None] if end_token else [])
        self.tokens = ["<s>"] + list(text) + (["</s>"] if end_token else [])
        self.seq_len = len(self.tokens)
        self.cache = LayerCache(1 << 20)

    def check(self, layer, head, kind):
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} is out of range: this model has layers 0..{self.num_layers - 1}")


def test_heat_draws_special_tokens_and_keeps_the_text():
    trace = FakeTrace("ab c")
    pieces = token_heat.heat_pieces(trace, {0: "ab c"}, np.array([0.8, 0.4, -0.2, 0.0, 0.1]), 4, 0.8)
    assert pieces[0] == ("⟨s⟩", 1.0) and "".join(p for p, _ in pieces[1:]) == "ab c"
    assert dict(pieces[1:])["b"] == -0.25


def test_heat_is_drawn_as_escaped_html_with_signed_colours():
    html = token_heat.heat_html([("⟨s⟩", 1.0), ("<b>", -0.5), (" & ", None), ("x", 0.0)])
    assert html.startswith('<div class="heat">') and "&lt;b&gt;" in html and " &amp; " in html and "<b>" not in html
    assert 'background:rgba(239, 68, 60, 1.000)" title="+1.0000">⟨s⟩' in html
    assert 'background:rgba(128, 90, 213, 0.500)" title="-0.5000">&lt;b&gt;' in html


def test_heat_of_a_window_starts_where_the_window_does():
    trace = FakeTrace("xyz")
    trace.offsets = [(0, 0), (5, 6), (6, 7), (7, 8)]
    pieces = token_heat.heat_pieces(trace, {0: "01234xyz"}, np.ones(4), 3, 1.0)
    assert [p for p, _ in pieces] == ["⟨s⟩", "… ", "x", "y", "z"]


def test_heat_defaults_to_the_last_real_token_at_a_middle_layer(monkeypatch):
    asked = []
    monkeypatch.setattr(token_heat.analysis, "attention_row",
                        lambda trace, layer, head, kind, query, value: asked.append((layer, query, value)) or np.ones(trace.seq_len))
    rows = token_heat.heat_rows({"A": FakeTrace("abc", layers=4, end_token=True)}, None, token_heat.LAST)
    assert asked == [(2, 3, "weight")] and rows["A"].query == 3 and len(rows["A"].values) == 4  # not the final ⟨/s⟩


def test_heat_scale_is_shared_on_request_and_named_in_the_legend():
    rows = {"A": token_heat.HeatRow("A", 2, 1, np.array([0.1, 0.2, -0.05])),
            "B": token_heat.HeatRow("B", 2, 1, np.array([0.9, 0.05, 0.05]))}
    assert token_heat.heat_scales(rows, shared=True) == {"A": 0.9, "B": 0.9}
    own = token_heat.heat_scales(rows, shared=False)
    assert own == {"A": 0.2, "B": 0.9}
    legend = token_heat.legend(rows, own)
    assert "-0.9" in legend and "0.9" in legend and "A: full colour = 0.2" in legend
    assert token_heat.NEGATIVE in legend  # signed rows: purple for negative values


# --- the shared panel: slots, kinds, overview, zoom -------------------------------------------------------
@pytest.fixture
def stored_run(monkeypatch):
    """A run of a 3-layer 'DiffLlama' A and a 2-layer 'Llama' B, with maps and statistics faked."""
    a, b = FakeTrace("abcd", layers=3), FakeTrace("abcdef", layers=2)
    a.kinds, a.arch, a.lambdas, a.lambda_inits = ("diff", "a1", "a2"), "diffllama", [0.2, 0.3, 0.4], [0.2, 0.3, 0.4]
    maps = lambda trace, layer, head, kind, size=512, value="weight": attention_map(  # noqa: E731
        kind, trace.seq_len, layer=layer, head=head, value=value)
    monkeypatch.setattr(panel.maps.analysis, "attention_map", maps)
    entropy = lambda trace: np.arange(trace.num_layers * trace.num_heads, dtype=float).reshape(trace.num_layers, -1)[:, ::-1]  # noqa: E731
    monkeypatch.setattr(derived, "compute_overview", lambda trace, kind, size, value="weight": Overview(
        kind, [[np.eye(4) * (l + h) for h in range(trace.num_heads)] for l in range(trace.num_layers)], list(range(5)), 4,
        value=value, stats=HeadStats(kind, 5, entropy(trace), entropy(trace), entropy(trace), entropy(trace))))
    monkeypatch.setattr(panel.maps.analysis, "attention_region", lambda trace, layer, head, kind, rows, cols, value="weight": AttentionRegion(
        layer, head, kind, np.ones((rows[1] - rows[0], cols[1] - cols[0]), np.float32), rows, cols,
        [f"{i} r" for i in range(*rows)], [f"{i} c" for i in range(*cols)], None, value))
    run = run_store.Run("classification", {"A": "a", "B": "b"}, {"A": a, "B": b}, {"A": "abcd", "B": "abcdef"})
    run_store.STORE.keep("local", "test", run)
    yield run


@pytest.fixture
def built():
    """A panel of every view, built in a page of its own."""
    with gr.Blocks() as demo:
        views = panel.build(gr.State("test"), "test")
    return demo, views


def test_kinds_are_matched_per_model():
    diff, standard = FakeTrace("a"), FakeTrace("a")
    diff.kinds = ("diff", "a1", "a2")
    assert slots.kind_for(standard, "diff") == "softmax" and slots.kind_for(standard, "a2") == "softmax"
    assert slots.kind_for(diff, "softmax") == "diff" and slots.kind_for(diff, "a1") == "a1"
    with pytest.raises(ValueError, match="unknown map"):
        slots.kind_for(diff, "banana")


def test_a_and_b_side_by_side_at_the_same_layer_head_and_matched_kind(stored_run, built):
    shown = panel.maps.show_map("test", "A and B", 1, 0, "a2", 64)
    assert "A2 (second softmax)" in shown["map_A"].layout.title.text and "softmax" in shown["map_B"].layout.title.text
    assert "layer 1, head 0" in shown["map_B"].layout.title.text and "no 'a2' map" in shown["note"]
    assert [shown[f"{k}_{s}"] is not None for s in "AB" for k in panel.maps.PARTS] == [True] * 3 + [False] * 3
    assert shown["profile"]  # A's decomposition; B has none
    _, views = built
    visible = {c: u["visible"] for c, u in spec.fitted(views.specs, stored_run, "A and B").items()}
    maps = views.views["maps"].outputs
    assert [visible[maps[f"{k}_{s}"]] for s in "AB" for k in panel.maps.PARTS] == [True] * 3 + [False] * 3
    assert visible[maps["map_A"]] and visible[maps["map_B"]] and visible[maps["profile"]]
    # a layer only A has: A's map, and a note for B instead of an error
    shown = panel.maps.show_map("test", "A and B", 2, 0, "diff", 64)
    assert shown["map_A"] and shown["map_B"] is None and "layer 2 is out of range" in shown["note"]
    with pytest.raises(gr.Error, match="layer 2 is out of range"):
        panel.maps.show_map("test", "B", 2, 0, "softmax", 64)
    shown = panel.maps.show_map("test", "B", 1, 0, "softmax", 64)
    assert shown["map_B"] and shown["map_A"] is None
    galleries = views.views["overview"].outputs
    fitted = spec.fitted(views.specs, stored_run, "B")
    assert not fitted[galleries["gallery_A"]]["visible"] and fitted[galleries["gallery_B"]]["visible"]


def test_switching_models_before_any_run_changes_nothing_and_every_fitted_output_is_wired(built):
    """The slot radio's change, before the tab ran: a no-op update of each of its outputs (it used to
    return 11 updates for 13 outputs, which raised); after a run, every output it updates is wired."""
    demo, views = built
    updates = spec.fit(views.specs)("never-run", "A")
    assert set(updates) == set(spec.shown_outputs(views.specs)) and all(u == gr.update() for u in updates.values())
    slot = views.views["maps"].controls["slot"]
    wired = [fn for fn in demo.fns.values() if (slot._id, "change") in fn.targets]
    assert len(wired) == 1
    every = {c for s in views.specs for n, c in s.outputs.items() if n in s.shown}
    assert set(wired[0].outputs) == every


def test_the_decomposition_is_pooled_no_finer_than_its_third_of_the_page(stored_run, monkeypatch):
    asked = []
    maps = panel.maps.analysis.attention_map
    monkeypatch.setattr(panel.maps.analysis, "attention_map", lambda trace, layer, head, kind, size=512, value="weight":
                        asked.append((trace.arch, kind, size)) or maps(trace, layer, head, kind, size, value))
    panel.maps.show_map("test", "A and B", 1, 0, "diff", 256)
    assert asked == [("diffllama", "diff", 256), *[("diffllama", k, panel.maps.DECOMPOSITION_SIZE) for k in ("a1", "a2", "diff")],
                     ("llama", "softmax", 256)]
    asked.clear()
    panel.maps.show_map("test", "A", 1, 0, "diff", 64)  # a coarser main map: the decomposition as coarse
    assert asked == [("diffllama", k, 64) for k in ("diff", "a1", "a2", "diff")]


def fake_infos(monkeypatch, **models):
    info = lambda layers, heads: type("Model", (), {"info": ModelInfo("s", "llama", "classification", 1, layers, heads, False, "cpu", "float32")})  # noqa: E731
    found = {name: info(*shape) for name, shape in models.items()}
    monkeypatch.setattr(model_slots.CACHE, "get", lambda source, task: found[source])


def test_sliders_fit_the_larger_model_at_its_middle_layer_unless_a_link_names_them(monkeypatch):
    fake_infos(monkeypatch, a=(4, 4), b=(12, 8))
    layer, head, heat_layer = runner.slider_sizes("classification", ["layer", "head", "heat_layer"], None, "a", "b")
    assert (layer["maximum"], layer["value"], head["maximum"]) == (11, 6, 7) and heat_layer["value"] == 6
    link = links.ViewLink("classification", controls={"layer": 1, "heat_layer": 2})
    layer, head, heat_layer = runner.slider_sizes("classification", ["layer", "head", "heat_layer"], link, "a", "b")
    assert (layer["value"], head["value"], heat_layer["value"]) == (1, 0, 2)  # the heat at the link's layer, not 0


def test_after_a_linked_run_every_control_the_link_names_is_set_the_heat_included(stored_run, monkeypatch):
    with gr.Blocks():
        heat = token_heat.build("the last token")
        views = panel.build(gr.State("test"), "test", heat)
    link = links.ViewLink("classification", controls={"layer": 1, "head": 1, "heat_layer": 2, "heat_query": 3}, show="zoom")
    values = [c.value for c in views.controls.values()]
    updates = views.after_run()("test", None, link, False, *values)
    assert updates[heat.layer]["value"] == 2 and updates[heat.position]["value"] == 3
    assert updates[views.controls["layer"]]["value"] == 1 and updates[views.opening] == "zoom"
    assert updates[views.views["zoom"].box]["open"] and updates[views.opened] is True
    again = views.after_run()("test", None, link, True, *values)  # later runs are the user's
    assert heat.layer not in again and again[views.opening] is None
    assert all(again[c] is not None for c in views.stale())  # every stale view cleared


def test_editing_the_inputs_marks_the_views_as_the_last_runs():
    run = run_store.Run("classification", {"A": "a", "B": "b"}, {}, {}, inputs={"text": "old"})
    assert runner.edited_note(run, {"text": "old", "source_a": "a", "source_b": "b"}) == ""
    note = runner.edited_note(run, {"text": "new", "source_a": "a", "source_b": "other"})
    assert "belong to the last run" in note and "text" in note and "source\\_b" in note


def test_overview_sorts_by_the_measure_and_a_click_opens_that_head(stored_run):
    shown = panel.overview.show_overview("test", "A and B", "diff", "entropy", "measure, low first")
    captions = re.findall(r"<figcaption[^>]*>([^<]*)</figcaption>", shown["gallery_A"])
    values = [float(caption.rsplit("· ", 1)[1]) for caption in captions]
    assert values == sorted(values) and len(captions) == 6 and len(shown["order_B"]) == 4
    # one piece of HTML per model, named by its own title (no gallery label over the first caption)
    assert shown["gallery_A"].count('src="data:image/png;base64,') == 6 and "Model A (diffllama)" in shown["gallery_A"]
    assert re.findall(r'data-index="(\d+)"', shown["gallery_A"]) == [str(i) for i in range(6)]  # the click order
    assert f"grid-template-columns:repeat(2,{figures.THUMBNAIL_PIXELS + 8}px)" in shown["gallery_A"]  # a layer a row
    assert "repeat(auto-fill," in figures.overview_html([], "32 heads", 32)  # too wide for a row: wrapped
    assert "every head" in shown["legend"]
    assert analysis.measures.MEASURES["entropy"].text in shown["overview_note"]  # the one written definition
    select = gr.SelectData(None, {"index": 1, "value": None, "selected": True})
    assert panel.overview.open_head(shown["order_A"], select) == shown["order_A"][1]
    assert shown["order_A"][0] == (0, 1)  # the fake entropy is lowest at layer 0, head 1


def test_a_click_in_the_overview_html_selects_its_head_in_the_maps_view(built):
    """Each model's overview HTML sends its clicks as select events, wired to the maps' layer and head."""
    demo, views = built
    maps = views.views["maps"].controls
    for s in "AB":
        html = views.views["overview"].outputs[f"gallery_{s}"]
        assert isinstance(html, gr.HTML) and html.js_on_load == figures.CLICK_SELECT_JS
        selected = [fn for fn in demo.fns.values() if (html._id, "select") in fn.targets]
        assert len(selected) == 1 and selected[0].outputs == [maps["layer"], maps["head"]]


def test_another_measure_or_order_redraws_the_overview_without_computing_it_again(stored_run, monkeypatch):
    computed = []
    overview = derived.compute_overview
    monkeypatch.setattr(derived, "compute_overview", lambda trace, kind, size, value="weight":
                        computed.append((trace.arch, kind, value)) or overview(trace, kind, size, value))
    panel.overview.show_overview("test", "A and B", "diff", "entropy", "layer × head")
    panel.overview.show_overview("test", "A and B", "diff", "negative mass", "measure, high first")
    assert computed == [("diffllama", "diff", "weight"), ("llama", "softmax", "weight")]
    panel.overview.show_overview("test", "A", "diff", "entropy", "layer × head", "norm")  # other cells: computed
    assert computed[-1] == ("diffllama", "diff", "norm")


def test_derived_results_are_kept_under_typed_keys_and_the_outlier_columns_are_the_ranks(monkeypatch):
    trace, computed = FakeTrace("ab"), []
    monkeypatch.setattr(derived, "activation_outliers", lambda t: computed.append(t) or "stats")
    assert derived.outliers(trace) == derived.outliers(trace) == "stats" and computed == [trace]
    assert trace.cache.lookup(derived.OutliersKey()) == "stats"
    assert panel.compare.OUTLIER_COLUMNS == [f"top-{k}" for k in analysis.OUTLIER_RANKS] + ["median"]


def test_thumbnails_share_one_colour_scale():
    low, high = np.full((4, 4), 0.1), np.full((4, 4), 0.8)
    limit = figures.overview_limit([[low, high]])
    assert limit == 0.8
    bright, dim = figures.thumbnail(high, "softmax", limit), figures.thumbnail(low, "softmax", limit)
    assert tuple(bright[-1, 0]) != tuple(dim[-1, 0])
    assert tuple(bright[0, -1]) == figures.plotly.colors.hex_to_rgb(figures.MASKED)  # future corner


def test_zoom_cuts_the_ranges_to_each_model(stored_run):
    shown = panel.zoom.zoom("test", "A and B", 1, 0, "diff", 2, 9, 0, 9)
    assert [shown[k] for k in ("query_from", "query_to", "key_from", "key_to")] == [2, 9, 0, 9]
    assert shown["zoom_A"].layout.meta["row_edges"] == [2, 3, 4, 5]  # A has 5 tokens
    assert shown["zoom_B"].layout.meta["row_edges"] == [2, 3, 4, 5, 6, 7]  # B has 7
    assert "full resolution" in shown["zoom_A"].layout.title.text


def test_a_zoom_wider_than_the_limit_opens_at_the_finest_blocks_that_fit(stored_run):
    long = FakeTrace("x" * 599)  # 600 tokens
    stored_run.traces["A"] = long
    shown = panel.zoom.zoom("test", "A", 0, 0, "softmax", 0, 600, 40, 340)  # 600 × 300 tokens: over 256
    figure = shown["zoom_A"]
    edges = figure.layout.meta["row_edges"]
    assert edges[:3] == [0, 3, 6] and edges[-1] == 600 and len(edges) - 1 <= analysis.MAX_REGION
    assert "blocks of 3 tokens" in figure.layout.title.text and "wider than 256" in shown["zoom_note"]
    assert "full resolution" not in figure.layout.title.text  # titled by what it shows
    with gr.Blocks():
        views = panel.build(gr.State("test"), "test")
    zoom = views.views["zoom"]
    assert all("full resolution" not in zoom.outputs[f"zoom_{s}"].label for s in "AB") and "full resolution" not in zoom.box.label
    z = np.asarray(figure.data[0].z, dtype=float)
    assert z[-1, 0] == pytest.approx(3.0)  # a block sums its 3 keys (ones), averaged over its 3 queries


def test_any_region_exports_at_full_resolution_with_provenance(stored_run, tmp_path, monkeypatch):
    monkeypatch.setattr(exports, "EXPORTS", tmp_path)
    stored_run.traces["A"] = FakeTrace("x" * 299)
    path = panel.zoom.export_region("test", "A", 0, 0, "softmax", 0, 300, 0, 300)["csv"]
    table = pd.read_csv(path, comment="#")
    assert len(table) == 300 * 301 // 2  # every causal cell of a 300-token region, none pooled
    assert open(path).readline().startswith("# models: A=a, B=b")


def test_typed_text_is_found_and_the_zoom_set_around_it(stored_run):
    stored_run.traces["A"], stored_run.texts["A"] = FakeTrace("the needle is here"), "the needle is here"
    region = panel.zoom.found_region(stored_run, "needle")
    assert (region["key_from"], region["key_to"]) == (0, 19) and region["found"] == 5  # ⟨s⟩ then one token a character
    assert region["query_to"] == 19
    with pytest.raises(ValueError, match="does not occur"):
        panel.zoom.found_region(stored_run, "haystack")


def test_stale_views_are_cleared_after_a_successful_run(built):
    _, views = built
    stale = views.stale()
    assert len(stale) > 10 and not {id(c) for c in stale} & {id(c) for c in views.controls.values()}


# --- tabs -----------------------------------------------------------------------------------------------------
class FakeModel:
    def classify(self, text):
        return ClassificationResult([LabelScore("positive", 0.75), LabelScore("negative", 0.25)], pooled_index=3,
                                    pooled_token="c", trace=FakeTrace(text))

    def tag(self, text):
        tags = [TokenTag(text[i], i, i + 1, "B-PER" if i == 0 else "O", 0.9) for i in range(len(text))]
        return TaggingResult([Entity("PER", 0, 1, text[0], 0.9)], tags, FakeTrace(text))


@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setattr(model_slots.CACHE, "get", lambda source, task: FakeModel())
    monkeypatch.setattr(tagging_tab.analysis, "align_tokens",
                        lambda a, b: TokenAlignment([[i] for i in range(a.seq_len)], [[i] for i in range(b.seq_len)]))


def test_classification_callback_renders_canned_records(fake_models):
    label_a, label_b, records = classification_tab.classify("abc", "fake-a", "fake-b")
    assert label_a == {"positive": 0.75, "negative": 0.25} and label_b == label_a
    assert records["A"]["pooled_index"] == 3 and "trace" not in records["A"]
    assert run_store.current(None, "classification").models == {"A": "fake-a", "B": "fake-b"}


def test_tagging_disagreements_are_the_text_with_differing_tokens_marked(fake_models, monkeypatch):
    entities_a, _, rows, disagreements, _, page = tagging_tab.tag("Ab c", "fake-a", "fake-b")
    assert ("A", "PER") in entities_a and [row[2] for row in rows["value"]] == ["B-PER", "O", "O", "O"] and page == 1
    assert "".join(p for p, _ in disagreements["value"]) == "Ab c" and not disagreements["color_map"]

    class Disagreeing(FakeModel):
        def tag(self, text):
            result = super().tag(text)
            result.tokens[1].label = "B-LOC"
            return result

    models = iter([FakeModel(), Disagreeing()])
    monkeypatch.setattr(model_slots.CACHE, "get", lambda source, task: next(models))
    *_, disagreements, _, _ = tagging_tab.tag("Ab c", "fake-a", "fake-b")
    assert "".join(p for p, _ in disagreements["value"]) == "Ab c"
    assert ("b", "A O · B B-LOC") in disagreements["value"] and list(disagreements["color_map"]) == ["A O · B B-LOC"]


def test_entity_and_answer_highlighting_cover_the_text():
    text = "Anna works at Acme Corp."
    pieces = tagging_tab.entity_pieces(text, [Entity("PER", 0, 4, "Anna", 0.9), Entity("ORG", 14, 23, "Acme Corp", 0.8)])
    assert "".join(p for p, _ in pieces) == text and ("Acme Corp", "ORG") in pieces
    spans = [AnswerSpan("Acme", 14, 18, 0.7, 5, 5, 0)]
    both = qa_tab.highlight(text, {"A": spans[0], "B": AnswerSpan("Acme Corp", 14, 23, 0.5, 5, 6, 0)})
    assert both == [("Anna works at ", None), ("Acme", "A and B"), (" Corp", "B"), (".", None)]  # the context once
    assert qa_tab.highlight(text, {"A": None, "B": None}) == [(text, None)]
    assert qa_tab.around_answers(both) == both  # a short context whole
    assert qa_tab.span_rows(spans) == [["Acme", 0.7, "14–18"]]


def test_a_long_contexts_answers_are_shown_with_the_text_around_them():
    context = "x" * 4000 + "1601" + "y" * 3000
    pieces = qa_tab.around_answers(qa_tab.highlight(context, {"A": AnswerSpan("1601", 4000, 4004, 0.9, 9, 9, 0), "B": None}))
    assert pieces == [(" ⋯ 3,700 characters ⋯ " + "x" * 300, None), ("1601", "A"), ("y" * 300 + " ⋯ 2,700 characters ⋯ ", None)]
    assert qa_tab.around_answers([(context, None)]) == [(context, None)]  # nothing marked: nothing cut


def test_the_per_token_table_is_paged():
    rows = [[i, f"t{i}", "O", 0.9, "O", ""] for i in range(2000)]
    first = tagging_tab.page_of(rows, 1)
    assert len(first["value"]) == paging.PAGE_ROWS and "page 1 of 40, 2000 tokens" in first["label"]
    last = tagging_tab.page_of(rows, 99)  # clamped to the last page
    assert last["value"][-1][0] == 1999 and "page 40 of 40" in last["label"]


def test_generation_warns_before_running_past_the_trained_length(monkeypatch):
    class Model:
        source, config = "tiny-lm", type("Config", (), {"max_position_embeddings": 10})
        tokenizer = staticmethod(lambda text, pair=None: {"input_ids": text.split()})
        check_input = tasks.check_input  # the run's own rule

    monkeypatch.setattr(model_slots.CACHE, "get", lambda source, task: Model())
    assert generation_tab.length_notice("a b c", 7, "a", "b") == ""
    notice = generation_tab.length_notice("a b c", 8, "a", "b")
    assert "**A** was trained on 10 positions" in notice and "at most 7 new tokens, not 8" in notice
    refused = generation_tab.length_notice("a " * 10, 1, "a", "b")
    assert "the prompt is 10 tokens" in refused and "reads at most 9 tokens (1 kept for a new token)" in refused


# --- ablation ---------------------------------------------------------------------------------------------------
def ablation(kl, changed, tokens=None, answers=None):
    n = len(kl)
    return AblationResult(0.0, tokens or [f"t{i}" for i in range(n)], kl, ["x"] * n, ["y" if c else "x" for c in changed],
                          changed, [0.9] * n, [0.4] * n, [0.6] * n, answers)


def test_ablation_reads_as_changes_and_draws_no_bar_for_rounding():
    figure = figures.ablation_kl(ablation([1e-7, 0.3, 2e-6], [False, True, False]), "A")
    assert list(figure.data[0].y) == [0.0, 0.3, 0.0] and min(figure.data[0].y) >= 0
    assert figure.layout.yaxis.range[1] >= 0.05  # a tiny KL never fills the axis
    assert "x (0.900) → y (0.600)" in figure.data[0].customdata[1][1]
    summary = panel.ablation.ablation_summary(ablation([0.02], [False], ["label"]), "classification", "")
    assert "`x` 0.900 → `x` 0.600" in summary and "P(x) 0.900 → 0.400" in summary
    summary = panel.ablation.ablation_summary(ablation([0.1, 0.2], [True, True], ["start", "end"],
                                                        answers=((4, 8, 0.5), (0, 3, 0.25))), "qa", "The Lyon")
    assert summary.startswith("Answer `Lyon` (score 0.500) → `The` (score 0.250)")


def test_the_ablation_table_is_paged_like_taggings(stored_run, monkeypatch):
    """2,000 changed positions: the table shows 50 at a time, the rest a page number away (no rerun)."""
    n = 2000
    result = ablation([float(i) for i in range(n)], [True] * n)
    monkeypatch.setattr(panel.ablation.CACHE, "get", lambda source, task: "model")
    monkeypatch.setattr(panel.ablation.analysis, "lambda_ablation", lambda model, trace, value: result)
    shown = panel.ablation.ablate("test", "A", 0.0)
    assert len(shown["table"]["value"]) == paging.PAGE_ROWS and len(shown["rows"]) == n and shown["page"] == 1
    assert "page 1 of 40, 2000 positions" in shown["table"]["label"] and shown["table"]["value"][0][0] == n - 1  # largest KL first
    turned = panel.ablation.turn_page("test", shown["rows"], 40)["table"]
    assert turned["value"][-1][0] == 0 and "page 40 of 40" in turned["label"]
    assert "page 1 of 1, 0 positions" in panel.ablation.turn_page("test", [], None)["table"]["label"]  # after a new run


def test_each_token_of_the_heat_carries_its_position_for_a_click():
    trace, values = FakeTrace("ab c"), np.array([0.8, 0.4, -0.2, 0.0, 0.1])
    drawn = token_heat.heat_view(trace, {0: "ab c"}, token_heat.HeatRow("A", 4, 0, values), 0.8)
    assert re.findall(r'data-index="(\d+)"', drawn) == ["0", "1", "2", "3", "4"] and "cursor:pointer" in drawn
    assert "click to make it the query" in drawn


def test_a_clicked_token_becomes_the_query_of_the_heat_and_the_comparison():
    select = lambda index: gr.SelectData(None, {"index": index, "value": "generation-map-A", "selected": True})  # noqa: E731
    assert panel.picking.pick(2)(select(7)) == (7, 7) and panel.picking.pick(1)(select(7.0)) == 7
    for bad in (-1, 1.5, "3", None, True):
        with pytest.raises(gr.Error, match="clicked token's position must be a whole number"):
            panel.picking.pick(1)(select(bad))
    with pytest.raises(gr.Error):  # an undrawn comparison waits for its button, quietly
        panel.picking._drawn(None)
    panel.picking._drawn({"plot": "{}"})


def test_token_clicks_on_the_maps_and_the_heat_set_both_queries_and_redraw(stored_run):
    with gr.Blocks() as demo:
        heat = token_heat.build("the last token")
        views = panel.build(gr.State("test"), "test", heat)
    picker = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "test-token-pick")
    assert '["test-map-A", "test-map-B", "test-zoom-A", "test-zoom-B"]' in picker.js_on_load
    query = views.views["compare"].controls["query"]
    for source in (picker, *heat.texts):
        assert source.js_on_load in (picker.js_on_load, figures.CLICK_SELECT_JS)
        clicked = [fn for fn in demo.fns.values() if (source._id, "select") in fn.targets]
        assert len(clicked) == 1 and clicked[0].outputs == [query, heat.position]
        after = [fn for fn in demo.fns.values() if fn.trigger_after == clicked[0]._id]
        assert {fn.name for fn in after} == {"refresh", "_drawn"}  # the heat redrawn; the comparison when drawn


def test_a_pages_link_runs_its_tab_once():
    """The check before a link's run: no link stops it, the first check claims the link, a second stops."""
    with pytest.raises(gr.Error, match="without a link"):
        runner.claim_link(None, False)
    assert runner.claim_link(object(), False) is True
    with pytest.raises(gr.Error, match="run its tab already"):
        runner.claim_link(object(), True)
