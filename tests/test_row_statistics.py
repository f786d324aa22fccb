"""A softmax map's entropy read from the logits it is the softmax of (no log per entry) equals the
entropy of its rows."""

import pytest
import torch

import diffllama
from diffllama import analysis

TEXT = "The magic number of Lyon is 4821. The magic number of Paris is 1234. What is the magic number of Lyon?"


def test_entropy_from_logits_equals_entropy_of_the_rows():
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(3, 5, 40, generator=generator)
    logits[:, :, 30:] = float("-inf")  # masked keys: rows of 0 after the softmax
    rows = torch.softmax(logits, -1)
    from_logits = analysis.row_statistics(rows, 5, signed=False, logits=logits)
    for name, value in analysis.row_statistics(rows, 5, signed=False).items():
        torch.testing.assert_close(from_logits[name], value)


@pytest.mark.parametrize("name, kind", [("llama-gqa", "softmax"), ("diffllama-gqa", "a2")])
def test_softmax_head_stats_match_brute_force(checkpoint, name, kind):
    trace = diffllama.load(checkpoint(name)).trace(TEXT)
    stats = analysis.head_stats(trace, kind)
    for layer, head in ((0, 0), (1, trace.num_heads - 1)):
        expected = analysis.row_statistics(trace.attention(layer, head, kind)[1:], 5)
        for statistic in ("entropy", "top_k_mass", "sink_mass", "negative_mass"):
            assert getattr(stats, statistic)[layer, head] == pytest.approx(expected[statistic].mean().item(), abs=1e-6)
