"""Compiled loops (numba) over attention rows on the CPU: each reads a block's rows a few times, in
place of torch's element-wise passes, and hands back what ``head_stats`` makes its statistics of
(definitions in ``measures``): from a map's rows (``softmax_rows``, ``signed_sums`` and ``signed_rows``,
``top_k_sums``), or from the logits behind them (``softmax_logit_rows``, ``diff_logit_rows``: each row's
softmax and D formed and read in the CPU's cache, no map block written).

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
        peak = np.int32(0)
        for key in range(chunk * CHUNK, chunk * CHUNK + CHUNK):
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


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
def top_k_sums(rows, bits, k, out):
    """``out[i, j]`` = the sum of the k largest |x| of ``rows[i, j]`` (all of them in a shorter row)."""
    peaks, best, chunks, top, at = _scratch(rows.shape[2], k)
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            out[i, j] = _largest(rows[i, j], bits[i, j], peaks, best, chunks, top, at)


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
def softmax_rows(rows, bits, logits, k, out):
    """Statistics of softmax rows p given their logits z (−inf at masked keys, where p is 0), per row
    ``[i, j]``: ``out[0]`` entropy, ``out[1]`` top-k mass, ``out[2]`` first-token mass, ``out[3]`` negative
    mass (0). With T = Σ p, W = Σ p·(z − z_m) (over the keys where p > 0, m the row's largest entry) and
    logsumexp z = z_m − log p_m (every positive p_k = exp(z_k − logsumexp z)): the entropy of p / T is
    log T − log p_m − W / T, with no log per entry (and no cancellation between terms as large as the logits)."""
    peaks, best, chunks, top, at = _scratch(rows.shape[2], k)
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            row, z = rows[i, j], logits[i, j]
            largest = _largest(row, bits[i, j], peaks, best, chunks, top, at)
            peak = z[at[0]]  # the logit of the row's largest entry: Σ p·(z − peak) stays ≈ the entropy, not ≈ |z|
            total, weighted = 0.0, 0.0
            for key in range(row.size):
                value = row[key]
                total += value
                weighted += value * (z[key] - peak) if value > 0 else 0.0
            out[0, i, j] = math.log(total) - math.log(top[0]) - weighted / total
            out[1, i, j], out[2, i, j], out[3, i, j] = largest / total, row[0] / total, 0.0


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
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


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
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


# --- rows read from their logits: softmax, A1 − λ·A2 and statistics in one pass per row -----------------
# exp and log as vectorised float32 polynomials (Cephes' expf and logf, ≈ 2 and 1 ulp): numba has no vectorised
# exp or log of its own (it would need Intel's SVML, which PyPI's llvmlite lacks), and a row's softmax then its
# statistics through torch write and read the block three more times.
LOG2E = np.float32(1.4426950408889634)
LN2_HIGH, LN2_LOW = np.float32(0.693359375), np.float32(-2.12194440e-4)  # ln 2 = high + low, high exact in few bits
LOWEST = np.float32(-87.0)  # exp of less is below float32's smallest normal: taken as exp(−87) ≈ 1.6e−38
MANTISSA, HALF = np.int32(0x007FFFFF), np.int32(0x3F000000)  # a float's mantissa bits; the exponent of [0.5, 1)
SQRT_HALF = np.float32(0.70710678118654752440)


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _ordered(bits):
    """A float32's bit pattern as an int32 that orders as the floats do (negative patterns' magnitude bits
    flipped); its own inverse."""
    return bits ^ ((bits >> 31) & MAGNITUDE)


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
def _row_peak(z, n):
    """(max z[:n], whether z[:n] holds a NaN or an infinity), from integer extremes of ordered bit patterns
    (vectorised, where a float maximum is not without assuming no NaN): a NaN of either sign orders beyond
    the infinities."""
    bits = z.view(np.int32)
    high = low = _ordered(bits[0])
    for key in range(1, n):
        value = _ordered(bits[key])
        high, low = max(high, value), min(low, value)
    extremes = np.array([_ordered(high), _ordered(low)], dtype=np.int32).view(np.float32)
    return extremes[0], not (math.isfinite(extremes[0]) and math.isfinite(extremes[1]))


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
def _exp_row(z, peak, n, out, scale):
    """``out[k]`` = exp(z[k] − peak) for k < n (z ≤ peak, finite) as float32; returns Σ out (float64).
    ``scale``: an int32 row of scratch (the powers of 2, built as bit patterns)."""
    for key in range(n):
        x = z[key] - peak
        x = x if x > LOWEST else LOWEST  # a select, vectorised (the builtin max is not)
        whole = -np.int32(np.float32(0.5) - x * LOG2E)  # round(x / ln 2), x ≤ 0
        power = np.float32(whole)
        r = x - power * LN2_HIGH - power * LN2_LOW  # |r| ≤ ln 2 / 2
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        out[key] = p * r * r + r + np.float32(1.0)
        scale[key] = (whole + np.int32(127)) << 23  # 2^whole
    factor = scale.view(np.float32)
    total = 0.0
    for key in range(n):
        out[key] *= factor[key]
        total += out[key]
    return total


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
def _weighted_log(x, n, parts):
    """Σ x[k]·log x[k] for k < n (float64), each x[k] a positive normal float32. ``parts``: an int32 row of
    scratch (the mantissas, as bit patterns)."""
    bits = x.view(np.int32)
    for key in range(n):
        parts[key] = (bits[key] & MANTISSA) | HALF  # x = m · 2^e, m in [0.5, 1)
    mantissa = parts.view(np.float32)
    for key in range(n):
        e = np.float32((bits[key] >> 23) - 126)
        m = mantissa[key]
        low = m < SQRT_HALF
        e = e - np.float32(1.0) if low else e
        m = m + m - np.float32(1.0) if low else m - np.float32(1.0)  # log x = log(1 + m) + e·ln 2
        z = m * m
        y = np.float32(7.0376836292e-2)
        y = y * m - np.float32(1.1514610310e-1)
        y = y * m + np.float32(1.1676998740e-1)
        y = y * m - np.float32(1.2420140846e-1)
        y = y * m + np.float32(1.4249322787e-1)
        y = y * m - np.float32(1.6668057665e-1)
        y = y * m + np.float32(2.0000714765e-1)
        y = y * m - np.float32(2.4999993993e-1)
        y = y * m + np.float32(3.3333331174e-1)
        y = y * m * z + LN2_LOW * e - np.float32(0.5) * z
        mantissa[key] = m + y + LN2_HIGH * e  # log x[k], in place of its mantissa
    total = 0.0
    for key in range(n):  # a loop of its own: float64 sums beside the float32 polynomial stop it vectorising
        total += x[key] * mantissa[key]
    return total


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _row_scratch(n, k):
    """Rows of scratch for ``softmax_logit_rows`` and ``diff_logit_rows``: two float32, one more float32
    (magnitudes) and two int32, then ``_largest``'s."""
    return (np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32),
            np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32)) + _scratch(n, k)


@numba.njit(nogil=True, boundscheck=False, inline="always")
def _pool_row(values, factor, n, edges, pooled):
    """``pooled[c]`` += factor · Σ values[k] over the keys k < n of column block c (edges[c] ≤ k < edges[c + 1])."""
    for c in range(pooled.size):
        start, stop = edges[c], min(edges[c + 1], n)
        if start >= stop:
            break
        total = 0.0
        for key in range(start, stop):
            total += values[key]
        pooled[c] += total * factor


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
def softmax_logit_rows(logits, ends, k, out, edges, row_blocks, pooled):
    """Statistics of softmax rows p = softmax(z) from their logits ``logits[i, j]`` (keys 0..ends[j] − 1;
    later keys are not read), as ``softmax_rows`` gives them: with e = exp(z − max z) and s = Σ e, the
    entropy log s − Σ e·(z − max z) / s, top-k mass Σ top-k e / s, first-token mass e_0 / s, negative mass 0.
    Unless ``pooled`` is empty, each row is also summed into ``pooled[i, row_blocks[j]]`` by the column
    blocks of ``edges`` (a thumbnail's sums; ``pooling.pool`` makes the same from map blocks)."""
    e, _, _, scale, _, peaks, best, chunks, top, at = _row_scratch(logits.shape[2], k)
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            z, n = logits[i, j], ends[j]
            peak, broken = _row_peak(z, n)
            total = _exp_row(z, peak, n, e, scale)
            weighted = 0.0
            for key in range(n):
                weighted += e[key] * (z[key] - peak)
            largest = _largest(e[:n], e[:n].view(np.int32), peaks, best, chunks, top, at)
            out[0, i, j] = math.log(total) - weighted / total
            out[1, i, j], out[2, i, j], out[3, i, j] = largest / total, e[0] / total, 0.0
            if pooled.shape[0]:  # a row holding a NaN or an infinity pools as NaN, as its softmax is
                _pool_row(e, np.nan if broken else 1.0 / total, n, edges, pooled[i, row_blocks[j]])
            if broken:
                out[:, i, j] = np.nan


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS, error_model="numpy")
def diff_logit_rows(logits, ends, lambda_, k, out, edges, row_blocks, pooled):
    """Statistics of differential rows D = A1 − λ·A2 from the logits of both maps (``logits[2i]`` A1's,
    ``logits[2i + 1]`` A2's, keys 0..ends[j] − 1), as ``signed_rows`` gives them for D: each map's softmax
    and D formed in float32 as torch forms them, then Σ|D|, ΣD, the top-k of |D| and Σ|D|·log|D|; D pooled
    as ``softmax_logit_rows`` pools p."""
    first, second, magnitude, scale, parts, peaks, best, chunks, top, at = _row_scratch(logits.shape[2], k)
    lam = np.float32(lambda_)
    for i in range(logits.shape[0] // 2):
        for j in range(logits.shape[1]):
            z1, z2, n = logits[2 * i, j], logits[2 * i + 1, j], ends[j]
            peak1, broken1 = _row_peak(z1, n)
            peak2, broken2 = _row_peak(z2, n)
            total1, total2 = _exp_row(z1, peak1, n, first, scale), _exp_row(z2, peak2, n, second, scale)
            inverse1, inverse2 = np.float32(1.0 / total1), np.float32(1.0 / total2)
            absolute, signed = 0.0, 0.0
            for key in range(n):
                d = first[key] * inverse1 - lam * (second[key] * inverse2)
                size = abs(d)
                absolute += size
                signed += d
                magnitude[key] = max(size, TINY)
                first[key] = d
            row = magnitude[:n]
            largest = _largest(row, row.view(np.int32), peaks, best, chunks, top, at)
            weighted = _weighted_log(magnitude, n, parts)
            out[0, i, j] = math.log(absolute) - weighted / absolute
            out[1, i, j], out[2, i, j] = largest / absolute, abs(first[0]) / absolute
            out[3, i, j] = max(absolute - signed, 0.0) / (2 * absolute)
            if pooled.shape[0]:
                _pool_row(first, np.nan if broken1 or broken2 else 1.0, n, edges, pooled[i, row_blocks[j]])
            if broken1 or broken2:
                out[:, i, j] = np.nan
