"""The counting passes of ``outliers.MagnitudeSummary``: each reads a block of values once.

A value is counted by the float32 bit pattern of its magnitude, ``bits & 0x7FFFFFFF``: for non-negative
floats the patterns order exactly like the values, +inf is ``INFINITE_BITS`` and NaN lies above it, so
every test is an integer comparison. A block is ``values`` ``[h, r, e]`` (float32) with ``ends`` ``[r]``:
row i's values are its first ``ends[i]`` entries (a block of causal logits: keys 0..row; the entries
after them are not read). Infinities and NaN (the −inf of masked logits) are not values.

On the CPU each pass is one loop compiled by numba (integer comparisons the compiler vectorises, so a
block is read once: ≈ 0.3 ns a value against ≈ 8 ns for the same counts as a chain of torch operations,
each writing a block-sized temporary); on a GPU, where torch's kernels are fast and a copy to the host is
not, the same counts come from torch operations. Both give the same integers (tests compare them).

- ``window_pass``: the values below a window of patterns ``[lo, hi)``, each value inside it by its
  pattern, and the finite values; the k largest kept.
- ``coarse_pass``: every finite value by the upper 16 bits of its pattern (a coarse bin); the k largest
  kept.
- ``finite_patterns``: the patterns of a (small) sample's finite values, to place a window."""

from __future__ import annotations

import numba
import numpy as np
import torch

INFINITE_BITS = 0x7F800000
MAGNITUDE = 0x7FFFFFFF


@numba.njit(nogil=True, boundscheck=False)
def _insert(top: np.ndarray, kept: int, value: int) -> int:
    """Insert ``value`` into ``top[:kept]`` (descending; the last entry drops out when full)."""
    position = min(kept, top.size - 1)
    while position > 0 and top[position - 1] < value:
        top[position] = top[position - 1]
        position -= 1
    top[position] = value
    return min(kept + 1, top.size)


@numba.njit(nogil=True, boundscheck=False)
def _keep_largest(row: np.ndarray, end: int, top: np.ndarray, kept: int) -> int:
    """The finite values of ``row[:end]`` above the k-th largest so far, into ``top`` (bit patterns)."""
    for j in range(end):
        bits = row[j] & MAGNITUDE
        if bits < INFINITE_BITS and (kept < top.size or bits > top[kept - 1]):
            kept = _insert(top, kept, bits)
    return kept


@numba.njit(nogil=True, boundscheck=False)
def _window_pass(values: np.ndarray, ends: np.ndarray, lo: int, hi: int, window: np.ndarray, top: np.ndarray,
                 kept: int, totals: np.ndarray) -> int:
    """One loop over each row counts (in int32, so that it vectorises) the values below the window, in
    it, finite, and above the k-th largest, and marks those in the window in a byte mask; the mask is
    then read eight bytes at a time, so only the few words holding a mark are looked into."""
    lo, span = np.int32(lo), np.uint32(hi - lo)
    magnitude, infinite = np.int32(MAGNITUDE), np.int32(INFINITE_BITS)
    marks = np.zeros((values.shape[2] + 7) // 8 * 8, dtype=np.uint8)
    words = marks.view(np.uint64)
    for head in range(values.shape[0]):
        for i in range(values.shape[1]):
            row, end = values[head, i], ends[i]
            threshold = np.int32(top[kept - 1] if kept == top.size else -1) if top.size else infinite
            below, inside, finite, above = np.int32(0), np.int32(0), np.int32(0), np.int32(0)
            for j in range(end):
                bits = row[j] & magnitude
                mark = np.uint32(bits - lo) < span
                below += np.int32(bits < lo)
                inside += np.int32(mark)
                finite += np.int32(bits < infinite)
                above += np.int32((bits > threshold) & (bits < infinite))
                marks[j] = mark
            if inside:
                for word in range((end + 7) // 8):
                    if words[word]:
                        for j in range(8 * word, min(8 * word + 8, end)):
                            if marks[j]:
                                window[(row[j] & magnitude) - lo] += 1
            if above:
                kept = _keep_largest(row, end, top, kept)
            totals[0] += below
            totals[1] += inside
            totals[2] += finite
    return kept


@numba.njit(nogil=True, boundscheck=False)
def _coarse_pass(values: np.ndarray, ends: np.ndarray, coarse: np.ndarray, top: np.ndarray, kept: int,
                 totals: np.ndarray) -> int:
    finite = 0
    for head in range(values.shape[0]):
        for i in range(values.shape[1]):
            row, end = values[head, i], ends[i]
            for j in range(end):
                bits = row[j] & MAGNITUDE
                if bits < INFINITE_BITS:
                    coarse[bits >> 16] += 1
                    finite += 1
            if top.size:
                kept = _keep_largest(row, end, top, kept)
    totals[2] += finite
    return kept


class Counts:
    """What the passes over a stream have counted so far: ``totals`` [below the window, inside it,
    finite], ``top`` the k largest magnitudes' bit patterns (descending, ``kept`` of them)."""

    def __init__(self, keep: int):
        self.top = np.zeros(keep, dtype=np.int32)
        self.kept = 0
        self.totals = np.zeros(3, dtype=np.int64)

    def largest(self) -> torch.Tensor:
        """The k largest magnitudes so far, descending (float32)."""
        return torch.from_numpy(self.top[:self.kept].copy()).view(torch.float32)

    def merge(self, other: "Counts") -> None:
        """Add the counts of a disjoint stream."""
        self.totals += other.totals
        best = np.sort(np.concatenate([self.top[:self.kept], other.top[:other.kept]]))[::-1][:self.top.size]
        self.top[:best.size], self.kept = best, best.size

    def window_pass(self, values: torch.Tensor, ends: torch.Tensor, lo: int, hi: int, window: np.ndarray) -> None:
        """Count ``values`` (``[h, r, e]``, row i's first ``ends[i]``) against the patterns ``[lo, hi)``:
        ``window[p - lo]`` += the values whose pattern is p."""
        if compiled(values):
            bits, ends = _host(values, ends)
            self.kept = _window_pass(bits, ends, lo, hi, window, self.top, self.kept, self.totals)
            return
        bits = _device_bits(values, ends)
        inside = bits[(bits >= lo) & (bits < hi)]
        window += torch.bincount(inside - lo, minlength=hi - lo).cpu().numpy()
        self.totals += [int((bits < lo).sum()), inside.numel(), int((bits < INFINITE_BITS).sum())]
        self._keep_largest_on_device(bits)

    def coarse_pass(self, values: torch.Tensor, ends: torch.Tensor, coarse: np.ndarray) -> None:
        """Count ``values`` (as ``window_pass``) by coarse bin: ``coarse[p >> 16]`` += 1 per finite value."""
        if compiled(values):
            bits, ends = _host(values, ends)
            self.kept = _coarse_pass(bits, ends, coarse, self.top, self.kept, self.totals)
            return
        bits = _device_bits(values, ends)
        finite = bits[bits < INFINITE_BITS]
        coarse += torch.bincount(finite >> 16, minlength=coarse.size).cpu().numpy()
        self.totals[2] += finite.numel()
        self._keep_largest_on_device(bits)

    def _keep_largest_on_device(self, bits: torch.Tensor) -> None:
        finite = bits[bits < INFINITE_BITS]
        candidates = torch.cat([torch.from_numpy(self.top[:self.kept]), finite.topk(min(self.top.size, finite.numel())).values.cpu()])
        best = candidates.topk(min(self.top.size, candidates.numel())).values.numpy()
        self.top[:best.size], self.kept = best, best.size


def compiled(values: torch.Tensor) -> bool:
    """Whether a block is counted by the compiled passes (on the CPU) or by torch operations (elsewhere)."""
    return values.device.type == "cpu"


def _host(values: torch.Tensor, ends: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A CPU block as the numpy arrays the compiled passes read (no copy of a contiguous float32 block)."""
    return (values.detach().float().contiguous().view(torch.int32).numpy(),
            ends.detach().to(torch.int64).contiguous().numpy())


def _device_bits(values: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """The magnitudes' bit patterns of the values of a block on a GPU, 1-D (entries after a row's end left out)."""
    bits = values.detach().float().contiguous().view(torch.int32) & MAGNITUDE
    read = torch.arange(bits.shape[-1], device=bits.device) < ends.to(bits.device)[:, None]  # [r, e]
    return bits[read.expand_as(bits)]


def finite_patterns(values: torch.Tensor) -> np.ndarray:
    """The bit patterns of the finite magnitudes of ``values`` (a sample: every value read), 1-D int32 on the host."""
    bits = values.detach().float().contiguous().view(torch.int32) & MAGNITUDE
    return bits[bits < INFINITE_BITS].cpu().numpy()

