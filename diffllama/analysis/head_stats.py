"""Per-head statistics of one kind of map: entropy, top-k mass, first-token mass, negative mass
(definitions in ``measures``)."""

from __future__ import annotations

import numpy as np
import torch

from ..records import HeadStats
from ..trace import Block, Trace
from ..trace.pooling import row_blocks
from . import row_loops
from .passes import per_layer, scan


STATISTICS = ("entropy", "top_k_mass", "sink_mass", "negative_mass")


def check_top_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"top-k mass needs k ≥ 1; got {k}")


def _as_blocks(rows: torch.Tensor) -> torch.Tensor:
    """Rows ``[..., N]`` as a view ``[A, B, N]`` (no copy), the shape the compiled loops read."""
    return rows.detach().reshape(-1, *rows.shape[-2:]) if rows.dim() >= 2 else rows.detach()[None, None]


def top_k_sum(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the k largest |entries| of each row ``[..., N]`` (a map's magnitudes): on the CPU a compiled loop
    that compares a row's chunk peaks and the keys of k chunks only (``row_loops.top_k_sums``), elsewhere
    torch's ``topk``."""
    if rows.device.type != "cpu" or rows.dtype != torch.float32 or rows.dim() < 1:
        return rows.abs().topk(min(k, rows.shape[-1]), dim=-1).values.sum(-1)
    array = _as_blocks(rows).numpy()
    out = np.empty(array.shape[:2], dtype=np.float32)
    row_loops.top_k_sums(array, array.view(np.int32), k, out)
    return torch.from_numpy(out).reshape(rows.shape[:-1])


def _compiled_statistics(rows: torch.Tensor, top_k: int, signed: bool, logits: torch.Tensor) -> np.ndarray:
    """``statistics`` of float32 rows on the CPU through compiled loops (``row_loops``): a differential map's
    rows in two reads and one vectorised log, a softmax map's in one read of the rows and one of their logits."""
    array = _as_blocks(rows).numpy()
    out = np.empty((len(STATISTICS), *array.shape[:2]))
    if signed:
        magnitude, sums = np.empty(array.shape, dtype=np.float32), np.empty((4, *array.shape[:2]))
        row_loops.signed_sums(array, array.view(np.int32), top_k, magnitude, sums)
        row_loops.signed_rows(array, torch.from_numpy(magnitude).log_().numpy(), sums, out)
    else:
        row_loops.softmax_rows(array, array.view(np.int32), _as_blocks(logits).numpy(), top_k, out)
    return out.reshape(len(STATISTICS), *rows.shape[:-1])


def statistics(rows: torch.Tensor, top_k: int, signed: bool | None = None,
               logits: torch.Tensor | None = None) -> np.ndarray:
    """Per-row entropy, top-k mass, first-token mass and negative share of attention rows [..., N], as one
    float64 array ``[4, ...]`` in the order of ``STATISTICS``. A row is read as p = |row| / Σ|row|, so its
    entropy −Σ p·log p is log Σ|row| − Σ |row|·log|row| / Σ|row| and its negative share
    (Σ|row| − Σ row) / (2·Σ|row|): sums over the row, no p formed. ``signed``: whether rows may hold
    negative entries (differential rows); found from the rows when not given. A softmax row, never
    negative, is its own magnitude; given the ``logits`` z it is the softmax of (−inf at masked keys),
    its log is z − logsumexp z, so its entropy needs no log per entry. Float32 rows on the CPU go through
    compiled loops (``row_loops``: a differential map's rows, or a softmax map's given its logits); other
    rows through torch's element-wise operations (``_torch_statistics``)."""
    check_top_k(top_k)
    signed = bool(rows.min() < 0) if signed is None else signed
    if rows.device.type == "cpu" and rows.dtype == torch.float32 and rows.dim() >= 1 and (signed or logits is not None):
        return _compiled_statistics(rows, top_k, signed, logits)
    found = _torch_statistics(rows, top_k, signed, logits)
    return torch.stack([found[name] for name in STATISTICS]).double().cpu().numpy()


def row_statistics(rows: torch.Tensor, top_k: int, signed: bool | None = None,
                   logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``statistics`` by name, each a tensor ``[...]`` (on the CPU) of the rows' dtype."""
    found = statistics(rows, top_k, signed, logits)
    return {name: torch.from_numpy(found[i]).to(rows.dtype) for i, name in enumerate(STATISTICS)}


def _torch_statistics(rows: torch.Tensor, top_k: int, signed: bool,
                      logits: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``statistics`` through torch's element-wise operations (a GPU's rows, float64 rows, a softmax map's rows
    without logits). Given logits, with m = max z: logsumexp z = m − log max row and Σ row·log row =
    Σ row·(z − m) − Σ row·(logsumexp z − m)."""
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


NO_POOLING = (np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 0, 0)))


class Pooling:
    """Thumbnails ``sums`` [heads, B, B] summed by ``HeadStatTotals.from_logits`` from the rows it reads: the
    blocks of keys ``edges``, the block of each query position of the pass; ``means()`` the pooled maps
    (``pooling.pool``'s, made in the statistics' pass)."""

    def __init__(self, heads: int, edges: list[int], rows: list[int]):
        block_of_row, self.rows_per_block = row_blocks(rows, edges)
        self.edges, self.block_of_row = np.asarray(edges, dtype=np.int64), block_of_row.numpy()
        self.sums = np.zeros((heads, len(edges) - 1, len(edges) - 1))

    def arrays(self, block: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the compiled loops read for ``block``: edges, the block of each of its rows, the sums of its heads."""
        return self.edges, self.block_of_row[block.span], self.sums[block.heads]

    def means(self) -> torch.Tensor:
        return torch.from_numpy(self.sums / self.rows_per_block.double().numpy()[:, None]).float()


class HeadStatTotals:
    """``head_stats`` accumulated from the blocks of a pass, of maps (a ``scan`` reader, or fed one layer's
    blocks at a time) or of the logits behind them (``from_logits``): sums per layer × head over the query
    rows read, row 0 left out (it can only attend to itself), then ``result()`` the means."""

    def __init__(self, trace: Trace, kind: str, top_k: int, rows: list[int] | None):
        check_top_k(top_k)
        self.trace, self.kind, self.top_k = trace, kind, top_k
        positions = range(trace.seq_len) if rows is None else rows
        self.counted = sum(1 for r in positions if r > 0 or trace.seq_len == 1)
        self.totals = np.zeros((len(STATISTICS), trace.num_layers, trace.num_heads))

    def __call__(self, layer: int, block: Block) -> None:
        skip = self._skip(block)
        logits = None if block.logits is None else block.logits[:, skip:]  # a softmax map's: its entropy without a log per entry
        found = statistics(block.values[:, skip:], self.top_k, signed=self.kind == "diff", logits=logits)  # [4, h, r]
        self.totals[:, layer, block.heads] += found.sum(-1)

    def from_logits(self, layer: int, block: Block, pooling: Pooling | None = None) -> None:
        """Add a block of the logits behind the maps (``Trace.logit_blocks``, float32 on the CPU): each row's
        softmax, D and statistics in one compiled pass (``row_loops``), no map block written. With
        ``pooling`` the same pass sums the rows into thumbnails."""
        edges, row_blocks, sums = pooling.arrays(block) if pooling else NO_POOLING
        rows = block.values.shape[1]
        found = np.empty((len(STATISTICS), block.heads.stop - block.heads.start, rows))
        logits, ends = block.values.detach().numpy(), (block.rows + 1).numpy()
        if self.kind == "diff":
            row_loops.diff_logit_rows(logits, ends, self.trace.lambdas[layer], self.top_k, found, edges, row_blocks, sums)
        else:
            row_loops.softmax_logit_rows(logits, ends, self.top_k, found, edges, row_blocks, sums)
        self.totals[:, layer, block.heads] += found[:, :, self._skip(block):].sum(-1)

    def _skip(self, block: Block) -> int:
        """Rows at the start of ``block`` that are no rows of the means: row 0, which can only attend to itself
        (it comes along: the sink scores and the thumbnails read it)."""
        return 1 if int(block.rows[0]) == 0 and self.trace.seq_len > 1 else 0

    def result(self) -> HeadStats:
        return HeadStats(kind=self.kind, top_k=self.top_k,
                         **{name: self.totals[i] / max(self.counted, 1) for i, name in enumerate(STATISTICS)})


def head_stats(trace: Trace, kind: str | None = None, top_k: int = 5, rows: list[int] | None = None) -> HeadStats:
    """Entropy, top-k mass, first-token mass and negative mass per layer × head, averaged over query
    rows 1..N-1 (row 0 can only attend to itself), or over the query positions ``rows`` (e.g. the
    overview's evenly spaced sample, ``Trace.overview_rows``; row 0 still left out). On the CPU from
    the logits (``HeadStatTotals.from_logits``: no map block written), elsewhere from the map blocks."""
    kind = kind or trace.kinds[0]
    positions = None if rows is None else sorted(int(r) for r in rows)
    totals = HeadStatTotals(trace, kind, top_k, positions)
    if trace.device.type == "cpu":
        def one_layer(layer: int) -> None:
            for block in trace.logit_blocks(layer, kind, rows=positions):
                totals.from_logits(layer, block)

        for _ in per_layer(trace, one_layer):
            pass
    else:
        scan(trace, kind, positions, maps=totals)
    return totals.result()
