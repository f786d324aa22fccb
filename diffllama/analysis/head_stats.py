"""Per-head statistics of one kind of map: entropy, top-k mass, first-token mass, negative mass
(definitions in ``measures``)."""

from __future__ import annotations

import numpy as np
import torch

from ..records import HeadStats
from ..tracing import Trace


def row_statistics(rows: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """Per-row entropy, top-k mass, first-token mass and negative share of attention rows [..., N]."""
    magnitude = rows.abs()
    p = magnitude / magnitude.sum(-1, keepdim=True)  # the row as a distribution over keys
    return {
        "entropy": -(p * torch.log(p.clamp_min(1e-30))).sum(-1),
        "top_k_mass": p.topk(min(top_k, p.shape[-1]), dim=-1).values.sum(-1),
        "sink_mass": p[..., 0],
        "negative_mass": rows.clamp(max=0).abs().sum(-1) / magnitude.sum(-1),
    }


def head_stats(trace: Trace, kind: str | None = None, top_k: int = 5) -> HeadStats:
    """Entropy, top-k mass, first-token mass and negative mass per layer × head, averaged over query
    rows 1..N-1 (row 0 can only attend to itself)."""
    kind = kind or trace.kinds[0]
    names = ("entropy", "top_k_mass", "sink_mass", "negative_mass")
    totals = {name: np.zeros((trace.num_layers, trace.num_heads)) for name in names}
    rows_counted = max(trace.seq_len - 1, 1)
    rows = range(1, trace.seq_len) if trace.seq_len > 1 else None
    for layer in range(trace.num_layers):
        for block in trace.map_blocks(layer, kind, rows=rows):  # a few heads × rows at a time
            for name, values in row_statistics(block.values, top_k).items():
                totals[name][layer, block.heads] += values.sum(-1).double().cpu().numpy()
    return HeadStats(kind=kind, top_k=top_k, **{name: totals[name] / rows_counted for name in names})
