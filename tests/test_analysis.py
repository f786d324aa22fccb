"""Analysis functions: known answers on hand-made tensors, and brute force on tiny traces."""

import math

import numpy as np
import pytest
import torch

import diffllama
from diffllama import analysis

TEXT = "The magic number of Lyon is 4821. The magic number of Paris is 1234. What is the magic number of Lyon?"


def test_row_statistics_known_answers():
    rows = torch.tensor([[0.5, 0.5, 0.0, 0.0],
                         [0.25, 0.25, 0.25, 0.25],
                         [0.6, -0.2, 0.4, 0.0]])  # a differential row: |row| sums to 1.2
    stats = analysis.row_statistics(rows, top_k=1)
    torch.testing.assert_close(stats["entropy"][:2], torch.tensor([math.log(2), math.log(4)]))
    torch.testing.assert_close(stats["top_k_mass"], torch.tensor([0.5, 0.25, 0.5]))
    torch.testing.assert_close(stats["sink_mass"], torch.tensor([0.5, 0.25, 0.5]))
    torch.testing.assert_close(stats["negative_mass"], torch.tensor([0.0, 0.0, 0.2 / 1.2]))


def test_head_stats_match_brute_force(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    stats = analysis.head_stats(trace, "diff", top_k=3)
    assert stats.entropy.shape == (trace.num_layers, trace.num_heads)
    layer, head = 2, 3
    full = trace.attention(layer, head, "diff")[1:]
    expected = analysis.row_statistics(full, 3)
    for name in ("entropy", "top_k_mass", "sink_mass", "negative_mass"):
        assert getattr(stats, name)[layer, head] == pytest.approx(expected[name].mean().item(), abs=1e-5)
    assert stats.negative_mass.max() > 0
    softmax = analysis.head_stats(diffllama.load(checkpoint("llama-gqa")).trace(TEXT))
    assert softmax.kind == "softmax" and np.all(softmax.negative_mass == 0)


def test_span_allocation_known_answer_and_normalisation(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-mha")).trace(TEXT)
    answer = analysis.token_spans(trace, TEXT.index("4821"), TEXT.index("4821") + 4)
    context = (1, analysis.token_spans(trace, TEXT.index("What"), TEXT.index("What") + 4)[0])
    last = trace.seq_len - 1
    result = analysis.span_allocation(trace, [last, last - 1], answer, context)
    layer, head = 1, 0
    rows = torch.stack([trace.attention(layer, head, "diff")[q] for q in (last, last - 1)]) / (1 - trace.lambdas[layer])
    on_answer = rows[:, answer[0]:answer[1]].sum(-1).mean()
    on_context = rows[:, context[0]:context[1]].sum(-1).mean()
    assert result.answer_mass[layer, head] == pytest.approx(on_answer.item(), abs=1e-5)
    assert result.noise_mass[layer, head] == pytest.approx((on_context - on_answer).item(), abs=1e-5)
    # everything a query attends to within the whole sequence: answer + noise + outside = 1 after normalising
    whole = analysis.span_allocation(trace, [last], answer, (0, trace.seq_len))
    np.testing.assert_allclose(whole.answer_mass + whole.noise_mass, 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="must lie inside the context"):
        analysis.span_allocation(trace, [last], (0, 3), (2, 5))


def test_lambda_ablation_changes_outputs_and_leaves_the_model_alone(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    trace = lens.trace(TEXT)
    off = analysis.lambda_ablation(lens, trace, 0.0)
    assert len(off.kl) == trace.seq_len and max(off.kl) > 1e-4 and min(off.kl) >= -1e-6
    same = analysis.lambda_ablation(lens, trace, trace.lambdas[0])  # λ' = λ only in layer 0 is unchanged
    assert min(same.kl) >= -1e-6
    identity = analysis.lambda_ablation(lens, trace, 1.0)
    assert max(identity.kl) > 0
    # the model is untouched: a fresh trace gives the original logits exactly
    torch.testing.assert_close(lens.trace(TEXT).logits, trace.logits, atol=0, rtol=0)


def test_lambda_override_equals_the_model_with_lambda_set_by_hand(checkpoint):
    """Ablation with λ' = 0.5 must equal editing the λ parameters so every layer's λ is 0.5."""
    lens = diffllama.load(checkpoint("diffllama-mha"))
    trace = lens.trace(TEXT)
    result = analysis.lambda_ablation(lens, trace, 0.5)
    edited = diffllama.load(checkpoint("diffllama-mha"))
    with torch.no_grad():
        for layer in edited.model.base_model.layers:
            attn = layer.self_attn
            for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                getattr(attn, name).zero_()  # exp(0) − exp(0) = 0, so λ = λ_init
            attn.lambda_q1[0] = 1.0
            attn.lambda_k1[0] = math.log(0.5 - attn.lambda_init + 1.0)  # exp(q1·k1) − 1 + λ_init = 0.5
    expected = torch.log_softmax(edited.trace(TEXT).logits, -1)
    original = torch.log_softmax(trace.logits, -1)
    kl = (original.exp() * (original - expected)).sum(-1)
    np.testing.assert_allclose(result.kl, kl.numpy(), atol=1e-5)


def test_lambda_ablation_restores_after_an_error_and_refuses_standard_models(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    trace = lens.trace(TEXT)
    broken = diffllama.tracing.Trace(**{**trace.__dict__, "lambdas": trace.lambdas[:1]})  # λ missing for layer 1
    with pytest.raises(IndexError):
        analysis.lambda_ablation(lens, broken, 0.3)
    torch.testing.assert_close(lens.trace(TEXT).logits, trace.logits, atol=0, rtol=0)
    llama = diffllama.load(checkpoint("llama-gqa"))
    with pytest.raises(ValueError, match="λ ablation needs a DiffLlama; this is a llama model"):
        analysis.lambda_ablation(llama, llama.trace(TEXT))


def test_lambda_ablation_for_classification_reports_the_label(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa", "classification"))
    result = analysis.lambda_ablation(lens, lens.classify("not bad at all").trace, 0.0)
    assert result.tokens == ["label"] and len(result.kl) == 1
    assert result.original[0] in ("negative", "positive")


def test_magnitude_summary_is_exact():
    generator = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, generator=generator) * 10 for n in (1000, 1, 3333, 250)]
    summary = analysis.MagnitudeSummary(lambda: iter(chunks)).as_row()
    everything = torch.cat(chunks).abs()
    ranked = everything.sort(descending=True).values
    for k in (1, 2, 3, 10, 100):
        assert summary[f"top-{k}"] == ranked[k - 1].item()
    assert summary["median"] == everything.median().item()


def test_activation_outliers_match_brute_force(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    stats = analysis.activation_outliers(trace)
    logits = []
    for layer in range(trace.num_layers):
        rows = torch.arange(trace.seq_len)
        all_heads = trace.logit_rows(layer, rows, list(range(2 * trace.num_heads)))
        logits.append(all_heads[torch.isfinite(all_heads)].abs())
    logits = torch.cat(logits)
    assert logits.numel() == trace.num_layers * 2 * trace.num_heads * trace.seq_len * (trace.seq_len + 1) // 2
    assert stats.attention_logits["top-1"] == pytest.approx(logits.max().item())
    assert stats.attention_logits["median"] == pytest.approx(logits.median().item())
    hidden = torch.cat([h.flatten() for h in trace.hidden_states[1:]]).abs()
    assert stats.hidden_states["top-100"] == pytest.approx(hidden.sort(descending=True).values[99].item())
    assert stats.hidden_states["median"] == pytest.approx(hidden.median().item())


def test_align_tokens_by_character_offsets(checkpoint, tokenizer):
    a = diffllama.load(checkpoint("diffllama-gqa")).trace("Lyon 4821")
    b = diffllama.load(checkpoint("llama-gqa")).trace("Lyon 4821")
    alignment = analysis.align_tokens(a, b)
    assert alignment.a_to_b[0] == []  # BOS has no characters
    for i, matches in enumerate(alignment.a_to_b[1:], start=1):
        start, end = a.offsets[i]
        assert matches == ([i] if end > start else [])  # same tokenizer: one-to-one (a bare space has no characters)
    # a coarser tokenisation of the same text: every fine token maps to the coarse token holding it
    a.offsets = [(0, 0), (0, 9)] + [(0, 0)] * (a.seq_len - 2)
    a.sequence_ids = [None, 0] + [None] * (a.seq_len - 2)
    coarse = analysis.align_tokens(a, b)
    assert coarse.a_to_b[1] == [i for i in range(1, b.seq_len) if b.offsets[i][1] > b.offsets[i][0]]
    assert all(matches == [1] for i, matches in enumerate(coarse.b_to_a[1:], start=1) if b.offsets[i][1] > b.offsets[i][0])


def test_display_views(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    view = analysis.attention_map(trace, 1, 0, "diff", max_size=8)
    assert view.pooled and view.values.shape == (8, 8) and len(view.labels) == 8 and view.lambda_ == trace.lambdas[1]
    row = analysis.attention_row(trace, 1, 0, "a1", query=5)
    np.testing.assert_allclose(row, trace.attention(1, 0, "a1")[5].numpy(), atol=1e-6)
    grid = analysis.overview(trace, "diff", size=4)
    assert len(grid.maps) == trace.num_layers and grid.maps[0][0].shape == (4, 4) and grid.pooled
    with pytest.raises(ValueError, match="out of range"):
        analysis.attention_row(trace, 1, 0, "a1", query=trace.seq_len)


def test_labels_name_tokens_readably_and_uniquely(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    labels = analysis.attention_map(trace, 0, 0, "diff", max_size=512).labels
    assert labels[0] == "0 ⟨s⟩" and len(set(labels)) == len(labels) and not any("<" in label for label in labels)
    assert any("␣" in label for label in labels)
    pooled = analysis.attention_map(trace, 0, 0, "diff", max_size=4).labels
    assert pooled[0].startswith("0–") and "…" in pooled[0]


def test_a_region_at_full_resolution_equals_the_full_map(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    region = analysis.attention_region(trace, 2, 1, "diff", (5, 20), (3, 9))
    np.testing.assert_allclose(region.values, trace.attention(2, 1, "diff")[5:20, 3:9].numpy(), atol=1e-6)
    assert region.row_labels[0].startswith("5 ") and len(region.col_labels) == 6 and region.lambda_ == trace.lambdas[2]
    with pytest.raises(ValueError, match="must satisfy 0 ≤ start < end"):
        analysis.attention_region(trace, 2, 1, "diff", (5, 5), (0, 3))
    long = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT * 6)
    with pytest.raises(ValueError, match="at most 256 per side"):
        analysis.attention_region(long, 2, 1, "diff", (0, 3), (0, long.seq_len))


def test_ablation_reports_probabilities_before_and_after(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa", "classification"))
    trace = lens.trace(TEXT)
    result = analysis.lambda_ablation(lens, trace, 0.0)
    before = torch.softmax(trace.logits, -1)
    assert result.original == [lens.config.id2label[int(before.argmax())]]
    assert result.original_prob[0] == pytest.approx(float(before.max()), abs=1e-6)
    assert result.kl[0] >= 0 and result.answers is None
    assert (result.original_prob_after[0] == pytest.approx(result.ablated_prob[0])) == (not result.changed[0])
    qa = diffllama.load(checkpoint("diffllama-gqa", "qa"))
    answered = qa.answer("What is the magic number of Lyon?", TEXT)
    result = analysis.lambda_ablation(qa, answered.trace, 0.0)
    assert result.tokens == ["start", "end"] and all(kl >= 0 for kl in result.kl)
    best = answered.spans[0]
    assert result.answers[0][:2] == (best.start, best.end) and result.answers[0][2] == pytest.approx(best.score, abs=1e-6)
