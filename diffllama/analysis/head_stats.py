"""Per-head statistics of one kind of map: entropy, top-k mass, first-token mass, negative mass
(definitions in ``measures``)."""

from __future__ import annotations

import numpy as np
import torch

from ..records import HeadStats
from ..tracing import Trace
from .outliers import MagnitudeSummary, add_logit_block


TOP_K_GROUP = 64  # keys per group when the k largest entries of a long row are looked for group-wise


def top_k_sum(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the k largest entries of each row ``[..., N]``. A long row is read in groups of
    ``TOP_K_GROUP`` keys and only the k groups with the largest maxima are searched: each of the k
    largest entries lies in one of them (a group left out holds nothing above the k-th largest group
    maximum, and those k maxima are entries), and finding them is cheaper than a top-k over the row."""
    n = rows.shape[-1]
    groups = n // TOP_K_GROUP
    if groups <= 2 * k:
        return rows.topk(min(k, n), dim=-1).values.sum(-1)
    grouped = rows[..., :groups * TOP_K_GROUP].unflatten(-1, (groups, TOP_K_GROUP))  # [..., groups, G]
    best = grouped.amax(-1).topk(k, dim=-1).indices  # [..., k]
    searched = grouped.gather(-2, best[..., None].expand(*best.shape, TOP_K_GROUP)).flatten(-2)  # [..., k·G]
    return torch.cat([searched, rows[..., groups * TOP_K_GROUP:]], -1).topk(k, dim=-1).values.sum(-1)


def row_statistics(rows: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """Per-row entropy, top-k mass, first-token mass and negative share of attention rows [..., N].
    A row is read as p = |row| / Σ|row|, so its entropy −Σ p·log p is log Σ|row| − Σ |row|·log|row| / Σ|row|
    (passes over the row: no p is formed, and a softmax row, never negative, is its own magnitude)."""
    signed = bool(rows.min() < 0)
    magnitude = rows.abs() if signed else rows
    total = magnitude.sum(-1)
    tiny = torch.finfo(rows.dtype).tiny  # 0·log 0 = 0: keys after the row's own position are 0
    return {
        "entropy": torch.log(total) - (magnitude * magnitude.clamp_min(tiny).log_()).sum(-1) / total,
        "top_k_mass": top_k_sum(magnitude, top_k) / total,
        "sink_mass": magnitude[..., 0] / total,
        "negative_mass": -rows.clamp(max=0).sum(-1) / total if signed else torch.zeros_like(total),
    }


def head_stats(trace: Trace, kind: str | None = None, top_k: int = 5, logits: MagnitudeSummary | None = None) -> HeadStats:
    """Entropy, top-k mass, first-token mass and negative mass per layer × head, averaged over query
    rows 1..N-1 (row 0 can only attend to itself). ``logits`` (a ``logit_summary``): the same pass
    also feeds every causal pre-softmax logit into it (pass 1 of ``activation_outliers``), which needs
    every softmax head, so ``kind`` must be ``diff`` or ``softmax``."""
    kind = kind or trace.kinds[0]
    if logits is not None and kind not in ("diff", "softmax"):
        raise ValueError(f"the logits of every softmax head come with kind 'diff' or 'softmax', not {kind!r}")
    names = ("entropy", "top_k_mass", "sink_mass", "negative_mass")
    totals = {name: np.zeros((trace.num_layers, trace.num_heads)) for name in names}
    skip = 1 if trace.seq_len > 1 else 0  # row 0 comes along (the logits need it) but is no row of the means
    feed = None if logits is None else lambda block: add_logit_block(logits, block)
    for layer in range(trace.num_layers):
        for block in trace.map_blocks(layer, kind, logits=feed):  # a few heads × rows at a time
            values = block.values[:, skip:] if block.span.start == 0 else block.values  # [h, r, e]
            for name, value in row_statistics(values, top_k).items():
                totals[name][layer, block.heads] += value.sum(-1).double().cpu().numpy()
    return HeadStats(kind=kind, top_k=top_k, **{name: totals[name] / max(trace.seq_len - 1, 1) for name in names})
