"""The counting passes of the activation outliers: the compiled passes (CPU) and torch's (GPU) give
the counts a brute force gives, for every kind of float32 value, and read only each row's values."""

import numpy as np
import pytest
import torch

from diffllama.analysis import magnitude_counts
from diffllama.analysis.magnitude_counts import INFINITE_BITS, MAGNITUDE, Counts


def awkward_block() -> tuple[torch.Tensor, torch.Tensor]:
    """Values [3, 5, 40] with zeros, −0, subnormals, ties, ±inf and NaN, and rows of 1..40 values
    (the entries after each row's end hold values that must not be counted)."""
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(3, 5, 40, generator=generator) * 4
    values[0, 0, :6] = torch.tensor([0.0, -0.0, 1e-45, -1e-44, float("inf"), float("nan")])
    values[1, 2, 10:20] = 2.5  # ties
    values[2, 4, 3] = -float("inf")
    ends = torch.tensor([40, 1, 17, 33, 8])
    return values, ends


def brute_force(values: torch.Tensor, ends: torch.Tensor) -> np.ndarray:
    """The magnitudes' bit patterns of the values each row holds, finite ones only."""
    read = torch.arange(values.shape[-1]) < ends[:, None]
    bits = (values.view(torch.int32) & MAGNITUDE)[read.expand_as(values)]
    return bits[bits < INFINITE_BITS].numpy()


@pytest.mark.parametrize("route", ["compiled", "torch"])
def test_window_and_coarse_passes_count_what_a_brute_force_counts(monkeypatch, route):
    monkeypatch.setattr(magnitude_counts, "compiled", lambda values: route == "compiled")
    values, ends = awkward_block()
    bits = brute_force(values, ends)
    lo, hi = int(np.quantile(bits, 0.3)), int(np.quantile(bits, 0.6))
    counts, window = Counts(7), np.zeros(hi - lo, dtype=np.int64)
    counts.window_pass(values, ends, lo, hi, window)
    assert counts.totals.tolist() == [(bits < lo).sum(), ((bits >= lo) & (bits < hi)).sum(), bits.size]
    assert np.array_equal(window, np.bincount(bits[(bits >= lo) & (bits < hi)] - lo, minlength=hi - lo))
    assert counts.top[:counts.kept].tolist() == sorted(bits, reverse=True)[:7]
    coarse, by_bin = Counts(100), np.zeros(1 << 15, dtype=np.int64)
    coarse.coarse_pass(values, ends, by_bin)
    assert np.array_equal(by_bin, np.bincount(bits >> 16, minlength=1 << 15))
    assert coarse.kept == 100 and coarse.top.tolist() == sorted(bits, reverse=True)[:100]
    assert torch.equal(coarse.largest(), torch.from_numpy(np.sort(bits)[::-1][:100].copy()).view(torch.float32))


def test_counts_of_disjoint_streams_merge():
    values, ends = awkward_block()
    whole, first, second = Counts(10), Counts(10), Counts(10)
    coarse = [np.zeros(1 << 15, dtype=np.int64) for _ in range(3)]
    whole.coarse_pass(values, ends, coarse[0])
    first.coarse_pass(values[:1], ends, coarse[1])
    second.coarse_pass(values[1:], ends, coarse[2])
    first.merge(second)
    assert first.totals.tolist() == whole.totals.tolist() and first.top.tolist() == whole.top.tolist()
    assert np.array_equal(coarse[1] + coarse[2], coarse[0])
