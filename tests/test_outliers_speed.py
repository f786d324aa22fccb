"""The outliers' pass in worker threads: each thread keeps to one core without touching other
threads, and the threaded, windowed summary stays exact when the window misses the median."""

import threading

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
