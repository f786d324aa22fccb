"""Compiled loops (numba) over attention rows on the CPU: each reads a block's rows a few times, in
place of torch's element-wise passes, and hands back what ``head_stats`` makes its statistics of
(definitions in ``measures``).

Rows are float32 arrays ``[A, B, N]`` of any strides (a block of heads × query rows × keys, or a view of
its rows). ``bits`` is the same memory read as int32 (``np.ndarray.view``): the bit pattern of |x| is
``bits & 0x7FFFFFFF``, and non-negative floats order as their patterns do, so a row's chunk peaks are an
integer maximum, which LLVM vectorises with no assumption about NaN. Sums are float64 and may be
reassociated (vectorised: no worse than a pairwise float32 sum); a row holding a NaN sums to NaN, so
its every statistic is NaN."""

from __future__ import annotations

import math

import numba
import numpy as np

SUMS = {"reassoc", "contract", "nsz"}
CHUNK = 16  # keys per chunk: a row's top-k compares its chunks' peaks, then the keys of k chunks only
MAGNITUDE = np.int32(0x7FFFFFFF)  # the bits of |x| in a float32 pattern
TINY = np.float32(np.finfo(np.float32).tiny)  # |x| is clamped to this before its log: 0 · log tiny = 0


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _scratch(n, k):
    """``_largest``'s working arrays for rows of n keys: chunk peaks, the k best chunks, the k largest |x| and their keys."""
    return (np.empty(-(-n // CHUNK), dtype=np.int32), np.empty(k, dtype=np.int32), np.empty(k, dtype=np.int64),
            np.empty(k, dtype=np.float32), np.empty(k, dtype=np.int64))


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _insert(top, at, kept, value, position):
    """Insert ``value`` (found at ``position``) into the descending ``top`` of ``kept`` entries, at most
    ``top.size`` kept; the number kept after."""
    place = min(kept, top.size - 1)
    while place > 0 and top[place - 1] < value:
        top[place], at[place] = top[place - 1], at[place - 1]
        place -= 1
    top[place], at[place] = value, position
    return min(kept + 1, top.size)


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _largest(row, bits, peaks, best, chunks, top, at):
    """The sum of the k = ``top.size`` largest |x| of ``row`` (all of them in a shorter row), leaving them in
    ``top`` (descending) and their keys in ``at``. A row's k largest lie in the k chunks with the
    largest peaks (a chunk holding one of them peaks above every chunk outside those), so only the
    peaks and those chunks' keys are compared: a few hundred comparisons a row, whatever its shape."""
    n, k = row.size, top.size
    whole = n // CHUNK
    for chunk in range(whole):  # the peaks: a loop of known length per chunk, vectorised
        start = chunk * CHUNK
        peak = bits[start] & MAGNITUDE
        for key in range(start + 1, start + CHUNK):
            peak = max(peak, bits[key] & MAGNITUDE)
        peaks[chunk] = peak
    if whole * CHUNK < n:
        peak = bits[whole * CHUNK] & MAGNITUDE
        for key in range(whole * CHUNK + 1, n):
            peak = max(peak, bits[key] & MAGNITUDE)
        peaks[whole] = peak
    found = 0
    for chunk in range(-(-n // CHUNK)):
        if found < k or peaks[chunk] > best[k - 1]:
            found = _insert(best, chunks, found, peaks[chunk], chunk)
    kept = 0
    for c in range(found):
        for key in range(chunks[c] * CHUNK, min(chunks[c] * CHUNK + CHUNK, n)):
            size = abs(row[key])
            if kept < k or size > top[k - 1]:
                kept = _insert(top, at, kept, size, key)
    total = 0.0
    for t in range(kept):
        total += top[t]
    return total


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS)
def top_k_sums(rows, bits, k, out):
    """``out[i, j]`` = the sum of the k largest |x| of ``rows[i, j]`` (all of them in a shorter row)."""
    peaks, best, chunks, top, at = _scratch(rows.shape[2], k)
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            out[i, j] = _largest(rows[i, j], bits[i, j], peaks, best, chunks, top, at)


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS)
def softmax_rows(rows, bits, logits, k, out):
    """Statistics of softmax rows p given their logits z (−inf at masked keys, where p is 0), per row
    ``[i, j]``: ``out[0]`` entropy, ``out[1]`` top-k mass, ``out[2]`` first-token mass, ``out[3]`` negative
    mass (0). With T = Σ p, W = Σ p·z (over the keys where p > 0) and, at the row's largest entry p_m,
    logsumexp z = z_m − log p_m (every positive p_k = exp(z_k − logsumexp z)): the entropy of p / T is
    log T + logsumexp z − W / T, with no log per entry."""
    peaks, best, chunks, top, at = _scratch(rows.shape[2], k)
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            row, z = rows[i, j], logits[i, j]
            total, weighted = 0.0, 0.0
            for key in range(row.size):
                value = row[key]
                total += value
                weighted += value * z[key] if value > 0 else 0.0
            largest = _largest(row, bits[i, j], peaks, best, chunks, top, at)
            logsumexp = z[at[0]] - math.log(top[0])
            out[0, i, j] = math.log(total) + logsumexp - weighted / total
            out[1, i, j], out[2, i, j], out[3, i, j] = largest / total, row[0] / total, 0.0


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS)
def signed_sums(rows, bits, k, magnitude, sums):
    """First read of signed rows (a differential map's), per row ``[i, j]``: ``sums[0]`` = Σ|x|, ``sums[1]`` =
    Σx, ``sums[2]`` = the sum of the k largest |x|, ``sums[3]`` = |x| of the first key; ``magnitude`` [i, j] =
    max(|x|, tiny), ready for one vectorised log (``signed_rows`` then reads it)."""
    peaks, best, chunks, top, at = _scratch(rows.shape[2], k)
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            row, kept_row = rows[i, j], magnitude[i, j]
            absolute, signed = 0.0, 0.0
            for key in range(row.size):
                value = row[key]
                size = abs(value)
                absolute += size
                signed += value
                kept_row[key] = max(size, TINY)
            largest = _largest(row, bits[i, j], peaks, best, chunks, top, at)
            sums[0, i, j], sums[1, i, j], sums[2, i, j], sums[3, i, j] = absolute, signed, largest, abs(row[0])


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS)
def signed_rows(rows, logs, sums, out):
    """Statistics of signed rows read as p = |x| / Σ|x|, from ``signed_sums``' ``sums`` and ``logs`` = log max(|x|, tiny):
    ``out[0]`` entropy log Σ|x| − Σ|x|·log|x| / Σ|x|, ``out[1]`` top-k mass, ``out[2]`` first-token mass,
    ``out[3]`` negative mass (Σ|x| − Σx) / (2·Σ|x|)."""
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            row, log = rows[i, j], logs[i, j]
            weighted = 0.0
            for key in range(row.size):
                weighted += abs(row[key]) * log[key]
            total = sums[0, i, j]
            out[0, i, j] = math.log(total) - weighted / total
            out[1, i, j], out[2, i, j] = sums[2, i, j] / total, sums[3, i, j] / total
            out[3, i, j] = max(total - sums[1, i, j], 0.0) / (2 * total)
