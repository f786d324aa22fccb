"""A softmax map's entropy read from the logits it is the softmax of (no log per entry) equals the
entropy of its rows."""

import numpy as np
import pytest
import torch

import diffllama
from diffllama import analysis
from diffllama.analysis import row_loops
from diffllama.analysis.head_stats import NO_POOLING

TEXT = "The magic number of Lyon is 4821. The magic number of Paris is 1234. What is the magic number of Lyon?"


def test_entropy_from_logits_equals_entropy_of_the_rows():
    """Softmax rows given their logits (on the CPU in float32: compiled loops, ``_softmax_statistics``) against
    the same rows in float64 without logits (torch's element-wise route, a log per entry)."""
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(3, 5, 40, generator=generator)
    logits[:, :, 30:] = float("-inf")  # masked keys: rows of 0 after the softmax
    logits[0, 1] = torch.arange(40.0) / 4  # rising towards the diagonal: every chunk peaks above the last
    logits[1, 2, :30] = 0.0  # flat: ties everywhere
    logits[2, 3, 1:] = float("-inf")  # one key: fewer than k
    rows = torch.softmax(logits, -1)
    views = ((rows, logits), (rows[:, 1:], logits[:, 1:]), (rows[0], logits[0]),  # a strided view, 2-D
             (torch.softmax(logits + 80, -1), logits + 80))  # logits far from 0 (sinks reach tens): no cancellation
    for view, view_logits in views:
        from_logits = analysis.row_statistics(view, 5, signed=False, logits=view_logits)
        for name, value in analysis.row_statistics(view.double(), 5, signed=False).items():
            assert from_logits[name].dtype == torch.float32 and from_logits[name].shape == value.shape
            torch.testing.assert_close(from_logits[name].double(), value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name, kind", [("llama-gqa", "softmax"), ("diffllama-gqa", "a2")])
def test_softmax_head_stats_match_brute_force(checkpoint, name, kind):
    trace = diffllama.load(checkpoint(name)).trace(TEXT)
    stats = analysis.head_stats(trace, kind)
    for layer, head in ((0, 0), (1, trace.num_heads - 1)):
        expected = analysis.row_statistics(trace.attention(layer, head, kind)[1:], 5)
        for statistic in ("entropy", "top_k_mass", "sink_mass", "negative_mass"):
            assert getattr(stats, statistic)[layer, head] == pytest.approx(expected[statistic].mean().item(), abs=1e-6)


def test_signed_rows_compiled_equal_the_float64_reference():
    """Differential rows on the CPU (float32) go through compiled loops (``_signed_statistics``); the
    same rows in float64 take torch's element-wise route: they agree within float32 rounding."""
    generator = torch.Generator().manual_seed(1)
    first = torch.softmax(3 * torch.randn(4, 6, 300, generator=generator), -1)
    second = torch.softmax(3 * torch.randn(4, 6, 300, generator=generator), -1)
    rows = first - 0.8 * second
    rows[:, :, 250:] = 0  # keys in the future of every row of a block
    rows[1, 2, :4] = torch.tensor([0.5, -0.5, 0.5, -0.5])  # ties among the largest |x|, of both signs
    rows[2, 3, 1:] = 0  # a row with fewer nonzero keys than k
    for view in (rows, rows[:, 1:], rows[0]):  # a block, a strided view of its rows (row 0 left out), 2-D
        compiled = analysis.row_statistics(view, 5, signed=True)
        reference = analysis.row_statistics(view.double(), 5, signed=True)
        for name, value in reference.items():
            assert compiled[name].dtype == torch.float32 and compiled[name].shape == value.shape
            torch.testing.assert_close(compiled[name].double(), value, rtol=0, atol=1e-6)


def test_compiled_exp_and_log_are_within_a_few_float32_ulps():
    """The vectorised polynomials behind the statistics read from logits (``row_loops``): exp within 5 ulps
    over the whole range a softmax meets (x ≤ 0; a truncated coefficient makes it 7.8), log within 2 (7.4)."""
    x = np.concatenate([np.linspace(-87, 0, 400_001), -np.logspace(-8, 0, 1000), [0.0]]).astype(np.float32)
    out, scale = np.empty_like(x), np.empty(x.size, dtype=np.int32)
    total = row_loops._exp_row(x, np.float32(0), x.size, out, scale)
    exact = np.exp(x.astype(np.float64))
    assert (np.abs(out - exact) / np.spacing(exact.astype(np.float32))).max() <= 5
    assert total == pytest.approx(out.astype(np.float64).sum(), rel=1e-12)
    values = np.exp(np.random.default_rng(0).uniform(-87, 0, 20_000)).astype(np.float32)
    values = np.concatenate([values, np.float32([1.0, 0.5, 0.70710677, 0.7071068, np.finfo(np.float32).tiny, 0.99999994])])
    parts = np.empty(1, dtype=np.int32)
    logs = np.array([row_loops._weighted_log(values[i:i + 1], 1, parts) for i in range(values.size)]) / values
    exact = np.log(values.astype(np.float64))
    assert (np.abs(logs - exact) / np.spacing(np.abs(exact).astype(np.float32))).max() <= 2


def test_a_row_of_logits_holding_nan_or_inf_has_nan_statistics():
    """... and pools as NaN into its thumbnail, as torch's softmax of it is NaN."""
    logits = torch.randn(2, 3, 8)
    logits[0, 1, 2], logits[1, 2, 0] = float("nan"), float("inf")
    ends, edges, row_blocks = np.array([8, 8, 8]), np.array([0, 4, 8]), np.array([0, 1, 1])
    for loop, heads in ((row_loops.softmax_logit_rows, 2), (row_loops.diff_logit_rows, 1)):
        out, pooled = np.zeros((4, heads, 3)), np.zeros((heads, 2, 2))
        if heads == 2:
            loop(logits.numpy(), ends, 5, out, edges, row_blocks, pooled)
        else:
            loop(logits.numpy(), ends, 0.5, 5, out, edges, row_blocks, pooled)
        broken = np.isnan(out).all(0)
        assert broken.tolist() == ([[False, True, False], [False, False, True]] if heads == 2 else [[False, True, True]])
        assert np.isfinite(out[:, ~broken]).all()
        assert np.isfinite(pooled[:, 0]).all() and np.isnan(pooled[:, 1]).all()  # row 0 alone in block 0
