"""The outliers' pass in worker threads: each thread keeps to one core without touching other
threads, and the threaded, windowed summary stays exact when the window misses the median."""

import threading
from types import SimpleNamespace

import pytest
import torch

import diffllama
from diffllama import analysis
from diffllama import cores
from diffllama.analysis import outliers, passes

from test_analysis import TEXT, brute_force_row


def test_per_layer_threads_keep_to_one_core_and_leave_other_threads_alone(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    before = torch.get_num_threads()
    seen = list(passes.per_layer(trace, lambda layer: torch.get_num_threads(), workers=2))
    assert seen == [1] * trace.num_layers or cores.OPENMP is None
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == before and later == [before]  # no process-wide setting changed


def test_a_missed_window_falls_back_to_an_exact_second_pass(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    far_off = lambda trace, layer: [torch.full((1000,), 1e6)]  # noqa: E731 - a sample whose window misses
    window = outliers.window_around(outliers.sample_patterns(trace, far_off))
    assert not outliers.layer_pass(trace, outliers.layer_logits, window).complete
    summary = outliers.exact_summary(trace, outliers.layer_logits, far_off)
    heads = list(range(trace._model.config.num_attention_heads))
    logits = torch.cat([trace.logit_rows(layer, torch.arange(trace.seq_len), heads).flatten()
                        for layer in range(trace.num_layers)])
    assert summary.as_row() == brute_force_row(logits[torch.isfinite(logits)])


def test_summaries_with_different_windows_do_not_merge():
    with pytest.raises(ValueError, match="different windows"):
        analysis.MagnitudeSummary.merged([analysis.MagnitudeSummary((1, 4)), analysis.MagnitudeSummary((2, 5))])


def test_the_window_samples_are_drawn_across_the_whole_stream(checkpoint):
    """The samples that place the window are uniform draws: logits from pairs spread over every row (a few
    whole rows missed the stream's median), the hidden states from every dimension (every k-th value read
    only the dimensions k's factors allow), and each sampled logit is the trace's own."""
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    n, heads = trace.seq_len, trace._model.config.num_attention_heads
    at = torch.tensor([0, heads - 1, 1, heads // 2]), torch.tensor([0, n - 1, n // 2, n - 1]), torch.tensor([0, 3, n // 2, n - 1])
    for layer in range(trace.num_layers):
        full = trace.logit_rows(layer, torch.arange(n), list(range(heads)))  # [H, N, N]
        torch.testing.assert_close(trace.logits_at(layer, *at), full[at], rtol=1e-5, atol=1e-5)
        assert next(outliers.logit_sample(trace, layer)).shape == (outliers._draws(trace, layer)[1],)

    drawn = []
    stub = SimpleNamespace(seq_len=2048, num_layers=4, architecture=SimpleNamespace(shape=SimpleNamespace(heads=8)),
                           logits_at=lambda layer, heads, rows, keys: drawn.append((heads, rows, keys)) or rows.float())
    next(outliers.logit_sample(stub, 0))
    heads_drawn, rows, keys = drawn[0]
    assert bool(((0 <= keys) & (keys <= rows) & (rows < 2048)).all())
    assert rows.unique().numel() > 1500 and heads_drawn.unique().numel() == 8  # rows across the stream, not 64 of them
    assert abs(float(rows.double().mean()) - 2 / 3 * 2048) < 20  # row i holds i + 1 pairs: mean row ≈ 2N/3

    hidden = 192
    stub = SimpleNamespace(num_layers=4, hidden_states=[None, torch.arange(2048 * hidden).reshape(1, 2048, hidden)])
    sampled = next(outliers.output_sample(stub, 0))
    assert (sampled % hidden).unique().numel() == hidden  # every dimension (every 12th value: 16 of 192)
