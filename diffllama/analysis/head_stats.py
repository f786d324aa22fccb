"""Per-head statistics of one kind of map: entropy, top-k mass, first-token mass, negative mass
(definitions in ``measures``)."""

from __future__ import annotations

import numba
import numpy as np
import torch

from ..records import HeadStats
from ..trace import Block, Trace
from .passes import scan
from .sinks import SinkTotals


STATISTICS = ("entropy", "top_k_mass", "sink_mass", "negative_mass")


@numba.njit(nogil=True, boundscheck=False)
def _top_k_sums(rows: np.ndarray, k: int, out: np.ndarray) -> None:
    """``out[i, j]`` = the sum of the k largest entries of ``rows[i, j]`` (float32, largest first): one
    read of each row, an entry compared with the k-th largest so far (inserted, rarely, when above it)."""
    top = np.empty(k, dtype=np.float32)
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            row, kept = rows[i, j], 0
            for key in range(row.size):
                value = row[key]
                if kept < k or value > top[k - 1]:
                    position = min(kept, k - 1)
                    while position > 0 and top[position - 1] < value:
                        top[position] = top[position - 1]
                        position -= 1
                    top[position] = value
                    kept = min(kept + 1, k)
            total = np.float32(0)
            for t in range(kept):
                total += top[t]
            out[i, j] = total


def top_k_sum(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the k largest entries of each row ``[..., N]``: on the CPU one compiled loop over each
    row (half the time of torch's ``topk`` over groups of keys), elsewhere torch's ``topk``."""
    if rows.device.type != "cpu" or rows.dtype != torch.float32 or rows.dim() < 1:
        return rows.topk(min(k, rows.shape[-1]), dim=-1).values.sum(-1)
    shaped = rows.detach().reshape(-1, *rows.shape[-2:]) if rows.dim() >= 2 else rows.detach()[None, None]
    out = np.empty(shaped.shape[:2], dtype=np.float32)
    _top_k_sums(shaped.numpy(), k, out)
    return torch.from_numpy(out).reshape(rows.shape[:-1])


# reassociation lets LLVM vectorise the sums (in float64: no worse than a pairwise float32 sum); no
# assumption that values are finite (a NaN row stays NaN)
SUMS = {"reassoc", "contract", "nsz"}


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS)
def _signed_sums(rows: np.ndarray, magnitude: np.ndarray, out: np.ndarray) -> None:
    """Per row ``i`` of ``rows`` [R, N] (float32): ``out[0, i]`` = Σ|x|, ``out[1, i]`` = Σx (float64),
    and ``magnitude[i]`` = max(|x|, tiny) (float32), ready for one log pass (0 · log tiny = 0 after)."""
    tiny = np.float32(np.finfo(np.float32).tiny)
    for i in range(rows.shape[0]):
        row, kept = rows[i], magnitude[i]
        absolute, signed = 0.0, 0.0
        for key in range(row.size):
            value = row[key]
            size = abs(value)
            absolute += size
            signed += value
            kept[key] = max(size, tiny)
        out[0, i], out[1, i] = absolute, signed


@numba.njit(nogil=True, boundscheck=False, fastmath=SUMS)
def _weighted_logs(rows: np.ndarray, logs: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = Σ |rows[i, k]| · logs[i, k] (float64)."""
    for i in range(rows.shape[0]):
        row, log = rows[i], logs[i]
        total = 0.0
        for key in range(row.size):
            total += abs(row[key]) * log[key]
        out[i] = total


def _signed_statistics(rows: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """``row_statistics`` of signed float32 rows on the CPU in three reads of each row, not eight: one
    compiled loop for Σ|x|, Σx and |x| (clamped for its log), one log pass (torch's, vectorised), one
    compiled loop for Σ|x|·log|x|; the top-k of |x| as ``top_k_sum``. Sums in float64."""
    shape = rows.shape[:-1]
    flat = rows.detach().contiguous().reshape(-1, rows.shape[-1])
    sums = np.empty((3, flat.shape[0]))
    magnitude = torch.empty_like(flat)
    _signed_sums(flat.numpy(), magnitude.numpy(), sums)
    top = top_k_sum(magnitude, top_k).double()
    _weighted_logs(flat.numpy(), magnitude.log_().numpy(), sums[2])
    total, signed, weighted = torch.from_numpy(sums)
    return {name: value.float().reshape(shape) for name, value in {
        "entropy": torch.log(total) - weighted / total,
        "top_k_mass": top / total,
        "sink_mass": flat[:, 0].abs().double() / total,
        "negative_mass": (total - signed).clamp_min_(0) / (2 * total),
    }.items()}


def row_statistics(rows: torch.Tensor, top_k: int, signed: bool | None = None,
                   logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-row entropy, top-k mass, first-token mass and negative share of attention rows [..., N].
    A row is read as p = |row| / Σ|row|, so its entropy −Σ p·log p is log Σ|row| − Σ |row|·log|row| / Σ|row|
    and its negative share (Σ|row| − Σ row) / (2·Σ|row|): passes over the row, no p formed (signed float32
    rows on the CPU: ``_signed_statistics``). ``signed``: whether rows may hold negative entries
    (differential rows); found from the rows when not given. A
    softmax row, never negative, is its own magnitude; given the ``logits`` z it is the softmax of
    (−inf at masked keys), its log is z − logsumexp z, so its entropy needs no log per entry:
    with m = max z, logsumexp z = m − log max row and Σ row·log row = Σ row·(z − m) − Σ row·(logsumexp z − m)."""
    signed = bool(rows.min() < 0) if signed is None else signed
    if signed and rows.device.type == "cpu" and rows.dtype == torch.float32 and rows.dim() >= 1:
        return _signed_statistics(rows, top_k)
    magnitude = rows.abs() if signed else rows
    total = magnitude.sum(-1)
    if logits is not None:
        peak = logits.amax(-1, keepdim=True)  # logsumexp z = max z − log max row; z − max z, not z: Σ row·(z − max z)
        shifted = torch.sub(logits, peak).mul_(rows)  # stays ≈ the entropy, not ≈ max z (no cancellation)
        entropy = torch.log(total) - rows.amax(-1).log_() - torch.nansum(shifted, -1) / total  # 0·(−inf) = nan: masked keys
    else:
        tiny = torch.finfo(rows.dtype).tiny  # 0·log 0 = 0: keys after the row's own position are 0
        entropy = torch.log(total) - magnitude.clamp_min(tiny).log_().mul_(magnitude).sum(-1) / total  # one temporary
    return {
        "entropy": entropy,
        "top_k_mass": top_k_sum(magnitude, top_k) / total,
        "sink_mass": magnitude[..., 0] / total,
        "negative_mass": (total - rows.sum(-1)).clamp_min_(0) / (2 * total) if signed else torch.zeros_like(total),
    }


class HeadStatTotals:
    """``head_stats`` accumulated from the map blocks of a pass (a ``scan`` reader, or fed one
    layer's blocks at a time): sums per layer × head over the query rows read, row 0 left out (it
    can only attend to itself), then ``result()`` the means."""

    def __init__(self, trace: Trace, kind: str, top_k: int, rows: list[int] | None):
        self.trace, self.kind, self.top_k = trace, kind, top_k
        positions = range(trace.seq_len) if rows is None else rows
        self.counted = sum(1 for r in positions if r > 0 or trace.seq_len == 1)
        self.totals = {name: np.zeros((trace.num_layers, trace.num_heads)) for name in STATISTICS}

    def __call__(self, layer: int, block: Block) -> None:
        # row 0 comes along (the sink scores need it) but is no row of the means
        skip = 1 if int(block.rows[0]) == 0 and self.trace.seq_len > 1 else 0
        logits = None if block.logits is None else block.logits[:, skip:]  # a softmax map's: its entropy without a log per entry
        for name, value in row_statistics(block.values[:, skip:], self.top_k, signed=self.kind == "diff",  # [h, r, e]
                                          logits=logits).items():
            self.totals[name][layer, block.heads] += value.sum(-1).double().cpu().numpy()

    def result(self) -> HeadStats:
        return HeadStats(kind=self.kind, top_k=self.top_k,
                         **{name: self.totals[name] / max(self.counted, 1) for name in STATISTICS})


def head_stats(trace: Trace, kind: str | None = None, top_k: int = 5, rows: list[int] | None = None,
               sinks: SinkTotals | None = None) -> HeadStats:
    """Entropy, top-k mass, first-token mass and negative mass per layer × head, averaged over query
    rows 1..N-1 (row 0 can only attend to itself), or over the query positions ``rows`` (e.g. the
    overview's evenly spaced sample, ``Trace.overview_rows``; row 0 still left out). ``sinks`` (a
    ``SinkTotals``): the same pass also gives the sink scores, which read every row of the trace's
    first kind (``diff`` or ``softmax``)."""
    kind = kind or trace.kinds[0]
    if sinks is not None and (kind != trace.kinds[0] or rows is not None):
        raise ValueError(f"sink scores read every row of kind {trace.kinds[0]!r}")
    positions = None if rows is None else sorted(int(r) for r in rows)
    totals = HeadStatTotals(trace, kind, top_k, positions)
    scan(trace, kind, positions, maps=totals, softmax=sinks)
    return totals.result()
