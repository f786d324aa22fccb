"""Analysis functions: known answers on hand-made tensors, and brute force on tiny traces."""

import math

import numpy as np
import pytest
import torch

import diffllama
from diffllama import analysis
from diffllama.analysis.head_stats import HeadStatTotals

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


def test_span_allocation_matches_brute_force_in_every_reading(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-mha")).trace(TEXT)
    answer = analysis.token_spans(trace, TEXT.index("4821"), TEXT.index("4821") + 4)
    context = (1, analysis.token_spans(trace, TEXT.index("What"), TEXT.index("What") + 4)[0])
    last = trace.seq_len - 1
    result = analysis.span_allocation(trace, last, answer, context)
    assert result.kind == "diff" and result.reference == "marked span" and result.query == last
    assert [entry.lambda_ for entry in result.lambdas] == pytest.approx(trace.lambdas)
    for layer, head in ((1, 0), (2, 1)):
        row = trace.attention(layer, head, "diff")[last].double()
        on_answer, on_context = row[answer[0]:answer[1]].sum(), row[context[0]:context[1]].sum()
        magnitude = row.abs()
        share = magnitude[answer[0]:answer[1]].sum() / magnitude.sum()
        assert result.answer_mass["signed"][layer, head] == pytest.approx(on_answer.item(), abs=1e-5)
        assert result.answer_mass["net"][layer, head] == pytest.approx((on_answer / magnitude.sum()).item(), abs=1e-5)
        assert result.noise_mass["net"][layer, head] == pytest.approx(((on_context - on_answer) / magnitude.sum()).item(), abs=1e-5)
        assert result.answer_mass["absolute"][layer, head] == pytest.approx(share.item(), abs=1e-5)
        scale = 1 - trace.lambdas[layer]
        if analysis.measures.normalised_defined(trace.lambdas[layer]):
            assert result.answer_mass["normalised"][layer, head] == pytest.approx(on_answer.item() / scale, abs=1e-5)
        else:
            assert np.isnan(result.answer_mass["normalised"][layer]).all() and "normalised" in result.gaps
    np.testing.assert_allclose(result.answer_mass["adds"] + result.answer_mass["subtracts"], result.answer_mass["absolute"], atol=1e-9)
    np.testing.assert_allclose(result.answer_mass["adds"] - result.answer_mass["subtracts"], result.answer_mass["net"], atol=1e-9)
    # everything a query attends to within the whole sequence: answer + noise = the row's own total
    whole = analysis.span_allocation(trace, last, answer, (0, trace.seq_len))
    np.testing.assert_allclose(whole.answer_mass["absolute"] + whole.noise_mass["absolute"], 1.0, atol=1e-5)
    np.testing.assert_allclose(whole.answer_mass["contribution"] + whole.noise_mass["contribution"], 1.0, atol=1e-5)
    np.testing.assert_allclose(whole.answer_mass["projection"] + whole.noise_mass["projection"], 1.0, atol=1e-4)
    llama = diffllama.load(checkpoint("llama-gqa")).trace(TEXT)
    softmax = analysis.span_allocation(llama, llama.seq_len - 1, answer, context)
    for reading in ("net", "absolute", "adds", "signed", "normalised"):
        np.testing.assert_allclose(softmax.answer_mass[reading], softmax.answer_mass["signed"], atol=1e-6)
    assert softmax.lambdas is None and softmax.gaps == {} and softmax.caveat is None
    a1 = analysis.span_allocation(trace, last, answer, context, kind="a1")
    assert np.isnan(a1.answer_mass["contribution"]).all() and "A1 alone adds nothing" in a1.gaps["contribution"]
    with pytest.raises(ValueError, match="must lie inside the context"):
        analysis.span_allocation(trace, last, (0, 3), (2, 5))
    with pytest.raises(ValueError, match="lies after the query token"):
        analysis.span_allocation(trace, 2, answer, context)


def test_the_allocation_table_carries_lambda_regimes_and_gaps(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-mha")).trace(TEXT)
    reference = analysis.find_reference(TEXT, "4821", 0, "gold answer")
    result = analysis.reference_allocation(trace, reference, (0, TEXT.index("What") - 1))
    table = analysis.allocation_table({"A (diffllama)": result})
    assert table.headers[:5] == ["model", "layer", "λ", "1 − λ", "regime"]
    assert [row[1] for row in table.rows] == ["all", *range(trace.num_layers)]
    for layer, row in enumerate(table.rows[1:]):
        assert row[2] == pytest.approx(trace.lambdas[layer], abs=1e-4) and row[3] == pytest.approx(1 - trace.lambdas[layer], abs=1e-4)
        assert row[4] == analysis.measures.regime(trace.lambdas[layer])
        net = table.headers.index("answer ↑ (net)")
        assert row[net] == pytest.approx(result.layer_means("net")[0][layer], abs=1e-4)
    assert any("query token" in note and result.query_rule in note for note in table.notes)
    assert sum(note.startswith("A (diffllama), layer ") for note in table.notes) == trace.num_layers
    assert analysis.measures.MEASURES["net reading"].text in table.definitions


def test_allocation_on_a_gold_span_that_neither_model_predicted(checkpoint):
    """The same characters in A and B, found by offsets, whatever the models answer."""
    context = "The magic number of Paris is 4341. The magic number of Lyon is 6087. A bus passed by slowly."
    question = "What is the magic number of Lyon?"
    models = {name: diffllama.load(checkpoint(name, "qa")) for name in ("diffllama-gqa", "llama-gqa")}
    gold = analysis.find_reference(context, "6087", sequence=1, source="gold answer")
    assert context[gold.start:gold.end] == "6087"
    for model in models.values():
        result = model.answer(question, context, top_k=3)
        assert result.spans[0].text != "6087"  # the model predicts something else; the gold span is measured
        allocation = analysis.reference_allocation(result.trace, gold)
        tokens = range(*allocation.answer)
        assert "".join(result.trace.tokens[i] for i in tokens).strip() == "6087"
        assert allocation.reference == "gold answer" and allocation.query == result.trace.seq_len - 1
        context_tokens = [i for i, s in enumerate(result.trace.sequence_ids) if s == 1 and i < allocation.query]
        assert allocation.context == (context_tokens[0], context_tokens[-1] + 1)
    with pytest.raises(ValueError, match="does not occur in the context"):
        analysis.find_reference(context, "9999", sequence=1, source="gold answer")


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
    broken = diffllama.trace.Trace(**{**trace.__dict__, "lambdas": trace.lambdas[:1]})  # λ missing for layer 1
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


def test_magnitude_summary_is_exact_and_merges():
    generator = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, generator=generator) * 10 for n in (1000, 1, 3333, 250)]
    chunks.append(torch.full((40,), 3.0))  # ties across the median
    summary = analysis.MagnitudeSummary.exact(lambda: iter(chunks)).as_row()
    everything = torch.cat(chunks).abs()
    ranked = everything.sort(descending=True).values
    for k in (1, 2, 3, 10, 100):
        assert summary[f"top-{k}"] == ranked[k - 1].item()
    assert summary["median"] == everything.median().item()
    # two processes' summaries of disjoint parts give the same numbers as one pass over all
    parts = [analysis.MagnitudeSummary(), analysis.MagnitudeSummary()]
    for i, chunk in enumerate(chunks):
        parts[i % 2].add(chunk)
    merged = analysis.MagnitudeSummary.merged(parts)
    for i, chunk in enumerate(chunks):
        merged.add_fine(chunk)
    assert merged.as_row() == summary
    with pytest.raises(ValueError, match="the input is empty"):
        analysis.MagnitudeSummary().median()


def brute_force_row(values: torch.Tensor) -> dict[str, float]:
    ranked = values.abs().sort(descending=True).values
    return {**{f"top-{k}": ranked[k - 1].item() for k in analysis.OUTLIER_RANKS}, "median": values.abs().median().item()}


def test_magnitude_summary_with_a_window_needs_one_pass_when_the_median_is_inside():
    generator = torch.Generator().manual_seed(1)
    chunks = [torch.randn(n, generator=generator) * 3 for n in (5000, 7, 2500)]
    chunks[0][::50] = float("-inf")  # masked logits are not values
    finite = torch.cat([c[torch.isfinite(c)] for c in chunks])
    median = int(finite.abs().median().view(torch.int32))  # its bit pattern
    inside = analysis.MagnitudeSummary(window=(median - 50, median + 3))
    for chunk in chunks:
        inside.add(chunk)
    assert inside.count == finite.numel() and inside.complete
    assert inside.as_row() == brute_force_row(finite)
    # a window that misses the median: pass 2 replays the stream, same numbers
    missed = analysis.MagnitudeSummary(window=(median + 1, median + 1000))
    for chunk in chunks:
        missed.add(chunk)
    assert not missed.complete
    with pytest.raises(ValueError, match="missed the median"):
        missed.median()
    assert missed.completed(lambda: iter(chunks)).as_row() == brute_force_row(finite)


def test_top_k_sum_of_long_rows_equals_topk():
    generator = torch.Generator().manual_seed(2)
    rows = torch.rand(3, 5, 1000, generator=generator)
    rows[1, 0] = 0  # a row of zeros (keys after a row's own position)
    rows[0, 0, 100:110] = 2.0  # ties among the largest, all in one group
    rows[1, 1, ::128] = 3.0  # one per group, ties across groups
    rows[2, 2, -5:] = 4.0  # in the keys after the last whole group
    rows[2, 3] = torch.linspace(0, 1, 1000)  # rising: every group's largest above the one before
    rows[2, 4] = 0.5  # flat: one value throughout
    for k in (1, 5, 7):
        expected = rows.topk(k, dim=-1).values.sum(-1)  # summed in another order: within a float32 rounding
        torch.testing.assert_close(analysis.top_k_sum(rows, k), expected, rtol=2e-7, atol=0)
        torch.testing.assert_close(analysis.top_k_sum(rows[:, 1:], k), expected[:, 1:], rtol=2e-7, atol=0)  # a strided view
    assert analysis.top_k_sum(torch.tensor([3.0, 1.0]), 5) == 4.0  # fewer entries than k
    for signed in (-rows, -rows.double()):  # the largest |entries|, compiled (float32) and through torch alike
        torch.testing.assert_close(analysis.top_k_sum(signed, 5).double(), rows.topk(5, dim=-1).values.sum(-1).double(),
                                   rtol=2e-7, atol=0)


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
    hidden = torch.cat([h.flatten() for h in decoder_outputs(trace)]).abs()
    assert stats.hidden_states["top-100"] == pytest.approx(hidden.sort(descending=True).values[99].item())
    assert stats.hidden_states["median"] == pytest.approx(hidden.median().item())


def decoder_outputs(trace):
    """Every decoder layer's output, captured by forward hooks during the model's own forward pass."""
    captured = []
    model = trace._model
    hooks = [layer.register_forward_hook(lambda module, args, output: captured.append(output))
             for layer in model.base_model.layers]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([trace.input_ids]))
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@pytest.mark.parametrize("name", ["diffllama-gqa", "persimmon"])
def test_hidden_states_are_decoder_layer_outputs_before_the_final_norm(checkpoint, name):
    trace = diffllama.load(checkpoint(name)).trace(TEXT)
    hooked = decoder_outputs(trace)
    assert len(trace.hidden_states) == len(hooked) + 1  # the embeddings, then every layer's output
    for kept, output in zip(trace.hidden_states[1:], hooked):  # the last one too: not transformers' normed one
        torch.testing.assert_close(kept, output, atol=1e-5, rtol=1e-5)
    stats = analysis.activation_outliers(trace)
    everything = torch.cat([h.flatten() for h in hooked]).abs()
    assert stats.hidden_states["top-1"] == pytest.approx(everything.max().item(), rel=1e-5)


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


def test_sink_score_on_hand_made_maps():
    sink = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.8, 0.1, 0.1]])  # every query attends to token 0
    signed = torch.tensor([[0.6, -0.2, 0.2]])  # a D row: |0.6| of |0.6| + |−0.2| + |0.2|
    torch.testing.assert_close(analysis.first_token_shares(sink), torch.tensor([1.0, 0.9, 0.8]))
    torch.testing.assert_close(analysis.first_token_shares(signed), torch.tensor([0.6]))
    scores = diffllama.records.SinkScores(0.3, 64, {"softmax": np.array([[0.9, 1 / 3], [0.3, 0.1]])})
    assert scores.share_above("softmax") == pytest.approx(0.5)  # 0.3 itself is not above ε


def test_sink_scores_match_brute_force(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    assert trace.seq_len > 8
    for window in (8, None):
        sinks = analysis.sink_scores(trace, window=window)
        rows = trace.seq_len if window is None else window
        assert list(sinks.scores) == ["diff", "a1", "a2"] and sinks.threshold == 0.3 and sinks.window == rows
        for kind in ("diff", "a1", "a2"):
            for layer, head in ((0, 0), (2, 3)):
                full = trace.attention(layer, head, kind)[1:rows].abs()
                expected = (full[:, 0] / full.sum(-1)).mean().item()
                assert sinks.scores[kind][layer, head] == pytest.approx(expected, abs=1e-6)
        assert np.all((sinks.scores["diff"] >= 0) & (sinks.scores["diff"] <= 1))
    # over the whole input the sink score is the first-token mass: one number
    whole = analysis.sink_scores(trace, window=None)
    np.testing.assert_allclose(whole.scores["diff"], analysis.head_stats(trace, "diff").sink_mass, atol=1e-6)
    assert analysis.sink_scores(trace).window == min(analysis.SINK_WINDOW, trace.seq_len)
    llama = analysis.sink_scores(diffllama.load(checkpoint("llama-gqa")).trace(TEXT))
    assert list(llama.scores) == ["softmax"] and 0 <= llama.share_above("softmax") <= 1 and llama.lambdas is None
    table = analysis.sink_table({"A": whole})
    assert table.rows[1][:6] == ["A", "diff", 0, round(trace.lambdas[0], 4), round(1 - trace.lambdas[0], 4),
                                 analysis.measures.regime(trace.lambdas[0])]
    with pytest.raises(ValueError, match="at least 2 tokens"):
        analysis.sink_scores(trace, window=1)


@pytest.mark.parametrize("name", ["diffllama-gqa", "llama-gqa"])
def test_head_stats_from_logits_equal_those_of_the_maps_in_any_number_of_threads(checkpoint, name):
    """On the CPU every map kind's head statistics come from the logits in one compiled pass per row
    (softmax, D and statistics: ``row_loops``); they equal the statistics of the map blocks (torch's
    softmax, the GPU's route) for every kind, on every row or a sample of rows; and a scan spread over
    worker threads equals one in a single thread."""
    trace = diffllama.load(checkpoint(name)).trace(TEXT)
    for kind in trace.kinds:
        for rows in (None, [0, 3, 7, trace.seq_len - 1]):
            from_maps = HeadStatTotals(trace, kind, 5, rows)
            analysis.scan(trace, kind, rows, maps=from_maps)
            from_logits = analysis.head_stats(trace, kind, rows=rows)
            for name_ in ("entropy", "top_k_mass", "sink_mass", "negative_mass"):
                np.testing.assert_allclose(getattr(from_logits, name_), getattr(from_maps.result(), name_), rtol=0, atol=1e-6)
    threaded, single = (HeadStatTotals(trace, trace.kinds[0], 5, None) for _ in range(2))
    analysis.scan(trace, trace.kinds[0], maps=threaded, workers=3)
    analysis.scan(trace, trace.kinds[0], maps=single, workers=1)
    for name_ in ("entropy", "top_k_mass", "sink_mass", "negative_mass"):
        np.testing.assert_array_equal(getattr(threaded.result(), name_), getattr(single.result(), name_))


def test_overview_numbers_come_from_its_own_pass(checkpoint):
    """The overview's head statistics (read while its thumbnails are pooled) equal ``head_stats`` over
    the same rows, for the weights and when the thumbnails show contributions; its thumbnails equal the
    pooled maps."""
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT * 3)
    sample = trace.overview_rows(4, max_logits=20_000)
    assert sample is not None  # a sampled overview
    trace.overview_rows = lambda size: sample
    for kind, value in (("diff", "weight"), ("a1", "weight"), ("diff", "norm")):  # D's thumbnails, a softmax map's
        view = analysis.overview(trace, kind, size=4, value=value)
        expected = analysis.head_stats(trace, kind, rows=sample)
        assert view.query_rows == sample and view.stats.kind == kind
        for name in ("entropy", "top_k_mass", "sink_mass", "negative_mass"):
            np.testing.assert_allclose(getattr(view.stats, name), getattr(expected, name), atol=1e-6)
        pooled, _ = trace.pooled_heads(2, kind, 4, rows=sample, value=value)
        np.testing.assert_allclose(np.stack(view.maps[2]), pooled.numpy(), atol=1e-6)
    steps = analysis.overview_layers(trace, "diff", size=4)
    first = next(steps)
    assert len(first.maps) == 1 and first.stats is None  # the numbers come with the last layer
    steps.close()


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


def test_head_stats_over_a_sample_of_rows_average_those_rows(checkpoint):
    """The overview's numbers read the rows its thumbnails average over."""
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    sample = [0, 3, 7, trace.seq_len - 1]
    stats = analysis.head_stats(trace, "diff", rows=sample)
    rows = torch.stack([trace.rows(2, 1, "diff", [r])[0] for r in sample[1:]])  # row 0 is no row of the means
    expected = analysis.row_statistics(rows, 5)
    for name in ("entropy", "top_k_mass", "sink_mass", "negative_mass"):
        assert getattr(stats, name)[2, 1] == pytest.approx(float(expected[name].mean()), rel=1e-5, abs=1e-7)
