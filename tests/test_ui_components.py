"""UI pieces against canned records and fake runners: no model, no torch in the UI."""

import gradio as gr
import numpy as np
from PIL import Image
import pytest

from components import (attention_panel, classification_tab, common, figures, generation_tab, qa_tab, run_store, tagging_tab,
                        token_heat)
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
    assert common.markdown_code("<s>") == "`<s>`" and common.markdown_code("a`b") == "`` a`b ``"


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

    kinds, lambdas, nbytes, arch, truncated_from = ("softmax",), None, 0, "llama", None

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
    monkeypatch.setattr(attention_panel.analysis, "attention_map", maps)
    entropy = lambda trace: np.arange(trace.num_layers * trace.num_heads, dtype=float).reshape(trace.num_layers, -1)[:, ::-1]  # noqa: E731
    monkeypatch.setattr(attention_panel.analysis, "overview", lambda trace, kind, size, value="weight": Overview(
        kind, [[np.eye(4) * (l + h) for h in range(trace.num_heads)] for l in range(trace.num_layers)], list(range(5)), 4,
        value=value, stats=HeadStats(kind, 5, entropy(trace), entropy(trace), entropy(trace), entropy(trace))))
    monkeypatch.setattr(attention_panel.analysis, "attention_region", lambda trace, layer, head, kind, rows, cols, value="weight": AttentionRegion(
        layer, head, kind, np.ones((rows[1] - rows[0], cols[1] - cols[0]), np.float32), rows, cols,
        [f"{i} r" for i in range(*rows)], [f"{i} c" for i in range(*cols)], None, value))
    run = run_store.Run("classification", {"A": "a", "B": "b"}, {"A": a, "B": b}, {"A": "abcd", "B": "abcdef"})
    run_store.STORE.keep("local", "test", run)
    yield run


def test_kinds_are_matched_per_model():
    diff, standard = FakeTrace("a"), FakeTrace("a")
    diff.kinds = ("diff", "a1", "a2")
    assert attention_panel.kind_for(standard, "diff") == "softmax" and attention_panel.kind_for(standard, "a2") == "softmax"
    assert attention_panel.kind_for(diff, "softmax") == "diff" and attention_panel.kind_for(diff, "a1") == "a1"
    with pytest.raises(ValueError, match="unknown map"):
        attention_panel.kind_for(diff, "banana")


def test_a_and_b_side_by_side_at_the_same_layer_head_and_matched_kind(stored_run):
    note, map_a, map_b, *parts, profile = attention_panel.show_map("test", "A and B", 1, 0, "a2", 64)
    assert "A2 (second softmax)" in map_a.layout.title.text and "softmax" in map_b.layout.title.text
    assert "layer 1, head 0" in map_b.layout.title.text and "no 'a2' map" in note
    assert [p is not None for p in parts] == [True] * 3 + [False] * 3 and profile  # A's decomposition; B has none
    visible = [update.get("visible") for update in attention_panel.layout("test", "A and B")]
    assert visible == [True, True] + [True] * 3 + [False] * 3 + [True] * 5
    # a layer only A has: A's map, and a note for B instead of an error
    note, map_a, map_b, *_ = attention_panel.show_map("test", "A and B", 2, 0, "diff", 64)
    assert map_a and map_b is None and "layer 2 is out of range" in note
    with pytest.raises(gr.Error, match="layer 2 is out of range"):
        attention_panel.show_map("test", "B", 2, 0, "softmax", 64)
    note, map_a, map_b, *_ = attention_panel.show_map("test", "B", 1, 0, "softmax", 64)
    assert map_b and map_a is None
    *_, gallery_a, gallery_b = attention_panel.layout("test", "B")
    assert not gallery_a["visible"] and gallery_b["visible"] and gallery_b["columns"] == 2


def test_the_decomposition_is_pooled_no_finer_than_its_third_of_the_page(stored_run, monkeypatch):
    asked = []
    maps = attention_panel.analysis.attention_map
    monkeypatch.setattr(attention_panel.analysis, "attention_map", lambda trace, layer, head, kind, size=512, value="weight":
                        asked.append((trace.arch, kind, size)) or maps(trace, layer, head, kind, size, value))
    attention_panel.show_map("test", "A and B", 1, 0, "diff", 256)
    assert asked == [("diffllama", "diff", 256), *[("diffllama", k, attention_panel.DECOMPOSITION_SIZE) for k in ("a1", "a2", "diff")],
                     ("llama", "softmax", 256)]
    asked.clear()
    attention_panel.show_map("test", "A", 1, 0, "diff", 64)  # a coarser main map: the decomposition as coarse
    assert asked == [("diffllama", k, 64) for k in ("diff", "a1", "a2", "diff")]


def test_sliders_fit_the_larger_model_at_its_middle_layer(monkeypatch):
    info = lambda layers, heads: type("Model", (), {"info": ModelInfo("s", "llama", "classification", 1, layers, heads, False, "cpu", "float32")})  # noqa: E731
    models = {"a": info(4, 4), "b": info(12, 8)}
    monkeypatch.setattr(common.CACHE, "get", lambda source, task: models[source])
    layer, head, heat_layer = attention_panel.slider_sizes("classification", 1, "a", "b")
    assert (layer["maximum"], layer["value"], head["maximum"]) == (11, 6, 7) and heat_layer["maximum"] == 11
    assert heat_layer is not layer  # gradio consumes each update


def test_overview_sorts_by_the_measure_and_a_click_opens_that_head(stored_run):
    gallery_a, gallery_b, legend, note, order_a, order_b = attention_panel.show_overview(
        "test", "A and B", "diff", "entropy", "measure, low first")
    values = [float(caption.rsplit("· ", 1)[1]) for _, caption in gallery_a]
    assert values == sorted(values) and len(gallery_a) == 6 and len(order_b) == 4
    width, height = Image.open(gallery_a[0][0]).size
    assert width == height >= figures.THUMBNAIL_PIXELS  # square thumbnails
    assert "every head" in legend and "entropy" in note
    select = gr.SelectData(None, {"index": 1, "value": None, "selected": True})
    assert attention_panel.open_head(order_a, select) == order_a[1]
    assert order_a[0] == (0, 1)  # the fake entropy is lowest at layer 0, head 1


def test_another_measure_or_order_redraws_the_overview_without_computing_it_again(stored_run, monkeypatch):
    computed = []
    overview = attention_panel.analysis.overview
    monkeypatch.setattr(attention_panel.analysis, "overview", lambda trace, kind, size, value="weight":
                        computed.append((trace.arch, kind, value)) or overview(trace, kind, size, value))
    attention_panel.show_overview("test", "A and B", "diff", "entropy", "layer × head")
    attention_panel.show_overview("test", "A and B", "diff", "negative mass", "measure, high first")
    assert computed == [("diffllama", "diff", "weight"), ("llama", "softmax", "weight")]
    attention_panel.show_overview("test", "A", "diff", "entropy", "layer × head", "norm")  # other cells: computed
    assert computed[-1] == ("diffllama", "diff", "norm")


def test_thumbnails_share_one_colour_scale():
    low, high = np.full((4, 4), 0.1), np.full((4, 4), 0.8)
    limit = figures.overview_limit([[low, high]])
    assert limit == 0.8
    bright, dim = figures.thumbnail(high, "softmax", limit), figures.thumbnail(low, "softmax", limit)
    assert tuple(bright[-1, 0]) != tuple(dim[-1, 0])
    assert tuple(bright[0, -1]) == figures.plotly.colors.hex_to_rgb(figures.MASKED)  # future corner


def test_zoom_cuts_the_ranges_to_each_model(stored_run):
    zoom_a, zoom_b, note, *ranges = attention_panel.zoom("test", "A and B", 1, 0, "diff", 2, 9, 0, 9)
    assert ranges == [2, 9, 0, 9]
    assert zoom_a.layout.meta["row_edges"] == [2, 3, 4, 5]  # A has 5 tokens
    assert zoom_b.layout.meta["row_edges"] == [2, 3, 4, 5, 6, 7]  # B has 7


def test_stale_views_are_cleared_after_a_successful_run():
    with gr.Blocks():
        panel = attention_panel.build(gr.State("test"), "test")
    assert len(panel.stale) > 10 and all(hasattr(c, "_id") for c in panel.stale)


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
    monkeypatch.setattr(common.CACHE, "get", lambda source, task: FakeModel())
    monkeypatch.setattr(tagging_tab.analysis, "align_tokens",
                        lambda a, b: TokenAlignment([[i] for i in range(a.seq_len)], [[i] for i in range(b.seq_len)]))


def test_classification_callback_renders_canned_records(fake_models):
    label_a, label_b, records = classification_tab.classify("abc", "fake-a", "fake-b")
    assert label_a == {"positive": 0.75, "negative": 0.25} and label_b == label_a
    assert records["A"]["pooled_index"] == 3 and "trace" not in records["A"]
    assert run_store.current(None, "classification").models == {"A": "fake-a", "B": "fake-b"}


def test_tagging_disagreements_are_the_text_with_differing_tokens_marked(fake_models, monkeypatch):
    entities_a, _, rows, disagreements, _ = tagging_tab.tag("Ab c", "fake-a", "fake-b")
    assert ("A", "PER") in entities_a and [row[1] for row in rows] == ["B-PER", "O", "O", "O"]
    assert "".join(p for p, _ in disagreements["value"]) == "Ab c" and not disagreements["color_map"]

    class Disagreeing(FakeModel):
        def tag(self, text):
            result = super().tag(text)
            result.tokens[1].label = "B-LOC"
            return result

    models = iter([FakeModel(), Disagreeing()])
    monkeypatch.setattr(common.CACHE, "get", lambda source, task: next(models))
    *_, disagreements, _ = tagging_tab.tag("Ab c", "fake-a", "fake-b")
    assert "".join(p for p, _ in disagreements["value"]) == "Ab c"
    assert ("b", "A O · B B-LOC") in disagreements["value"] and list(disagreements["color_map"]) == ["A O · B B-LOC"]


def test_entity_and_answer_highlighting_cover_the_text():
    text = "Anna works at Acme Corp."
    pieces = tagging_tab.entity_pieces(text, [Entity("PER", 0, 4, "Anna", 0.9), Entity("ORG", 14, 23, "Acme Corp", 0.8)])
    assert "".join(p for p, _ in pieces) == text and ("Acme Corp", "ORG") in pieces
    spans = [AnswerSpan("Acme", 14, 18, 0.7, 5, 5, 0)]
    assert qa_tab.highlight(text, spans)[1] == ("Acme", "answer")
    assert qa_tab.span_rows(spans) == [["Acme", 0.7, "14–18"]]


def test_generation_warns_before_running_past_the_trained_length(monkeypatch):
    class Model:
        config = type("Config", (), {"max_position_embeddings": 10})
        tokenizer = staticmethod(lambda text: {"input_ids": text.split()})

    monkeypatch.setattr(common.CACHE, "get", lambda source, task: Model())
    assert generation_tab.length_notice("a b c", 7, "a", "b") == ""
    notice = generation_tab.length_notice("a b c", 8, "a", "b")
    assert "**A** was trained on 10 positions" in notice and "at most 7 new tokens, not 8" in notice
    assert "will refuse it" in generation_tab.length_notice("a " * 10, 1, "a", "b")


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
    summary = attention_panel.ablation_summary(ablation([0.02], [False], ["label"]), "classification", "")
    assert "`x` 0.900 → `x` 0.600" in summary and "P(x) 0.900 → 0.400" in summary
    summary = attention_panel.ablation_summary(ablation([0.1, 0.2], [True, True], ["start", "end"],
                                                        answers=((4, 8, 0.5), (0, 3, 0.25))), "qa", "The Lyon")
    assert summary.startswith("Answer `Lyon` (score 0.500) → `The` (score 0.250)")
