"""Attention sinks on the first token (Gu et al., "When Attention Sink Emerges in Language Models",
ICLR 2025), one definition for softmax and differential maps (``measures``: "sink score"): per head
and map, the first token's mean share of each row's magnitude over query rows 1..T−1 of the first
T tokens (T = 64 by default, or the whole input), and the share of heads whose score exceeds ε."""

from __future__ import annotations

import numpy as np
import torch

from ..records import SinkScores, Table
from ..trace import Block, Trace
from . import measures
from .allocation import layer_lambdas
from .measures import SINK_THRESHOLD, SINK_WINDOW
from .passes import scan


def first_token_shares(rows: torch.Tensor) -> torch.Tensor:
    """``|M[i, 0]| ÷ Σ_k |M[i, k]|`` of rows ``[..., N]``."""
    magnitude = rows.abs()
    return magnitude[..., 0] / magnitude.sum(-1)


def window_rows(trace: Trace, window: int | None = SINK_WINDOW) -> int:
    """T: the window's length in tokens (the whole input when ``window`` is None or longer)."""
    if window is not None and window < 2:
        raise ValueError(f"a sink window needs at least 2 tokens (row 0 attends only to itself); got {window}")
    return trace.seq_len if window is None else min(window, trace.seq_len)


class SinkTotals:
    """``sink_scores`` accumulated from the softmax blocks of a pass (a ``scan`` ``softmax`` reader),
    which may hand it more rows than the window: rows 1..T−1 are counted. For DiffLlama the blocks hold
    A1 and A2 alternating, and D = A1 − λ·A2 is formed from them here, so one pass gives all three maps."""

    def __init__(self, trace: Trace, threshold: float = SINK_THRESHOLD, window: int | None = SINK_WINDOW):
        self.trace, self.threshold = trace, threshold
        self.window = window_rows(trace, window)
        self.softmax_kinds = trace.architecture.softmax_maps(trace.kinds[0])  # what a scan's softmax blocks hold
        self.shares = {kind: np.zeros((trace.num_layers, trace.num_heads)) for kind in trace.kinds}

    def __call__(self, layer: int, block: Block) -> None:
        counted = (block.rows > 0) & (block.rows < self.window)
        if not bool(counted.any()):
            return
        values = block.values[:, counted.to(block.values.device)]  # [h·m, r, e]: each head's m softmax maps in turn
        maps = len(self.softmax_kinds)
        heads = slice(block.heads.start // maps, block.heads.stop // maps)
        rows = {kind: values[i::maps] for i, kind in enumerate(self.softmax_kinds)}
        rows[self.trace.kinds[0]] = self.trace.architecture.combine(values, self.trace.kinds[0], self.trace.lambdas and self.trace.lambdas[layer])
        for kind, kind_rows in rows.items():
            self.shares[kind][layer, heads] += first_token_shares(kind_rows).sum(-1).double().cpu().numpy()

    def result(self) -> SinkScores:
        rows = max(self.window - 1, 1)
        return SinkScores(threshold=self.threshold, window=self.window,
                          scores={kind: self.shares[kind] / rows for kind in self.trace.kinds},
                          lambdas=layer_lambdas(self.trace))


def sink_scores(trace: Trace, threshold: float = SINK_THRESHOLD, window: int | None = SINK_WINDOW) -> SinkScores:
    """Sink scores ``[L, H]`` of every map kind of ``trace`` over the first ``window`` tokens (None: the
    whole input), in one pass over those rows of its softmax maps."""
    totals = SinkTotals(trace, threshold, window)
    scan(trace, trace.kinds[0], list(range(1, totals.window)) or [0], softmax=totals)
    return totals.result()


def sink_table(sinks: dict[str, SinkScores]) -> Table:
    """Sink scores of several models ({label: scores}) as one table: per map, the share of heads above
    ε and the mean and largest score, over all layers and per layer, λ, 1 − λ and regime beside each
    DiffLlama layer."""
    headers = ["model", "map", "layer", "λ", "1 − λ", "regime", "T (tokens)", "sink share", "mean sink score", "largest"]
    rows, notes = [], []
    for label, result in sinks.items():
        for kind, scores in result.scores.items():
            above = scores > result.threshold
            rows.append([label, kind, "all", "", "", "", result.window, round(float(above.mean()), 4),
                         round(float(scores.mean()), 4), round(float(scores.max()), 4)])
            for layer, values in enumerate(scores):
                entry = result.lambdas[layer] if result.lambdas else None
                about = [round(entry.lambda_, 4), round(entry.row_sum, 4), entry.regime] if entry else ["", "", ""]
                rows.append([label, kind, layer, *about, result.window, round(float(above[layer].mean()), 4),
                             round(float(values.mean()), 4), round(float(values.max()), 4)])
        if result.window < SINK_WINDOW:
            notes.append(f"{label}: the input has {result.window} tokens, fewer than the {SINK_WINDOW}-token window")
    return Table(headers, rows, notes, measures.markdown("sink score", "sink share", "λ regime"))
