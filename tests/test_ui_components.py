"""UI pieces against canned records and fake runners: no model, no torch in the UI."""

import numpy as np
import pytest

from components import classification_tab, common, figures, qa_tab, run_store, tagging_tab
from diffllama.records import (AnswerSpan, AttentionMap, ClassificationResult, Entity, HeadStats, LabelScore,
                               Overview, TaggingResult, TokenAlignment, TokenTag)


def attention_map(kind="diff", n=4, lam=0.3):
    values = np.tril(np.full((n, n), 0.2, dtype=np.float32))
    values[2, 1] = -0.1
    return AttentionMap(layer=1, head=0, kind=kind, values=values, edges=list(range(n + 1)),
                        labels=[f"t{i}" for i in range(n)], lambda_=lam if kind == "diff" else None)


def test_heatmap_is_diverging_and_centred_for_differential_maps():
    figure = figures.attention_heatmap(attention_map("diff"))
    heatmap = figure.data[0]
    assert heatmap.zmid == 0 and heatmap.zmin == -heatmap.zmax
    assert "query t2<br>key t1" in heatmap.text[2][1]
    assert "λ = 0.300" in figure.layout.title.text
    softmax = figures.attention_heatmap(attention_map("softmax")).data[0]
    assert softmax.zmid is None and softmax.zmin == 0


def test_decomposition_has_three_panels_and_lambda():
    figure = figures.decomposition(attention_map("a1"), attention_map("a2"), attention_map("diff"))
    assert len(figure.data) == 3
    assert any("λ = 0.300" in a.text for a in figure.layout.annotations)


def test_overview_grid_notes_pooling():
    maps = [[np.eye(3) for _ in range(2)] for _ in range(3)]
    figure = figures.overview_grid(Overview(kind="softmax", maps=maps, edges=[0, 10, 20, 30], seq_len=30))
    assert len(figure.data) == 6 and "pooled to 3×3 blocks of 30 tokens" in figure.layout.title.text


def test_head_stats_comparison_bars():
    stats = HeadStats(kind="diff", top_k=5, entropy=np.ones((2, 3)), top_k_mass=np.ones((2, 3)),
                      sink_mass=np.zeros((2, 3)), negative_mass=np.full((2, 3), 0.1))
    figure = figures.head_stats_comparison({"A": stats, "B": stats})
    assert len(figure.data) == 8  # 4 metrics × 2 models


def test_token_heat_keeps_the_text_and_scales_values():
    text = "Anna walked home"
    pieces = common.token_heat(text, [(0, 0), (0, 4), (5, 11), (12, 16)], [0.0, 0.5, -1.0, 0.25])
    assert "".join(p for p, _ in pieces) == text
    assert dict(pieces)["walked"] == -1.0 and dict(pieces)["Anna"] == 0.5


def test_entity_and_answer_highlighting_cover_the_text():
    text = "Anna works at Acme Corp."
    pieces = tagging_tab.entity_pieces(text, [Entity("PER", 0, 4, "Anna", 0.9), Entity("ORG", 14, 23, "Acme Corp", 0.8)])
    assert "".join(p for p, _ in pieces) == text and ("Acme Corp", "ORG") in pieces
    spans = [AnswerSpan("Acme", 14, 18, 0.7, 5, 5, 0)]
    assert qa_tab.highlight(text, spans)[1] == ("Acme", "answer")


class FakeTrace:
    num_layers, num_heads, kinds, lambdas, nbytes = 2, 2, ("softmax",), None, 0

    def __init__(self, text):
        self.offsets = [(0, 0)] + [(i, i + 1) for i in range(len(text))]
        self.sequence_ids = [None] + [0] * len(text)
        self.tokens = ["<s>"] + list(text)
        self.seq_len = len(self.tokens)


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
    monkeypatch.setattr(classification_tab.analysis, "attention_row",
                        lambda trace, layer, head, kind, query: np.linspace(0, 1, trace.seq_len))
    monkeypatch.setattr(tagging_tab.analysis, "align_tokens",
                        lambda a, b: TokenAlignment([[i] for i in range(a.seq_len)], [[i] for i in range(b.seq_len)]))


def test_classification_callback_renders_canned_records(fake_models):
    label_a, label_b, heat_a, _, records = classification_tab.classify("abc", "fake-a", "fake-b")
    assert label_a == {"positive": 0.75, "negative": 0.25} and label_b == label_a
    assert "".join(p for p, _ in heat_a) == "abc" and heat_a[-1][1] == 1.0
    assert records["A"]["pooled_index"] == 3 and "trace" not in records["A"]
    assert run_store.current(None, "classification").models == {"A": "fake-a", "B": "fake-b"}


def test_tagging_callback_marks_agreement(fake_models):
    entities_a, _, rows, disagreements, _ = tagging_tab.tag("Ab", "fake-a", "fake-b")
    assert ("A", "PER") in entities_a
    assert [row[1] for row in rows] == ["B-PER", "O"] and all(row[4] == "" for row in rows)
    assert all(label is None for _, label in disagreements)


def test_backend_errors_become_messages():
    import gradio as gr

    @common.user_errors
    def broken():
        raise ValueError("layer 9 is out of range")

    with pytest.raises(gr.Error, match="layer 9 is out of range"):
        broken()

    @common.user_errors
    def crashing():
        raise RuntimeError("boom")

    with pytest.raises(gr.Error, match="Something went wrong"):
        crashing()
