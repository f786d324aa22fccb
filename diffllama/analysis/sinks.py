"""Attention sinks on the first token (Gu et al., "When Attention Sink Emerges in Language Models",
ICLR 2025): per head and per map, the mean attention the first token receives over all queries,
and the share of heads whose score exceeds ε = 0.3."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ..records import SinkScores
from ..trace import Block, Trace
from .passes import scan

SINK_THRESHOLD = 0.3  # ε of Gu et al.


def sink_score(blocks: Iterable[torch.Tensor]) -> float:
    """Mean over query rows of the first key's attention, from a map given in row blocks ``[r, N]``."""
    received, rows = 0.0, 0
    for block in blocks:
        received += float(block[:, 0].sum())
        rows += block.shape[0]
    return received / rows


class SinkTotals:
    """``sink_scores`` accumulated from the softmax blocks of a pass over every query row (a ``scan``
    ``softmax`` reader). For DiffLlama only A1 and A2 are read: a column mean is linear, so
    D = A1 − λ·A2 scores exactly A1's score − λ·A2's."""

    def __init__(self, trace: Trace, threshold: float = SINK_THRESHOLD):
        self.trace, self.threshold = trace, threshold
        self.softmax_kinds = trace.architecture.softmax_maps(trace.kinds[0])  # what a scan's softmax blocks hold
        self.received = {kind: np.zeros((trace.num_layers, trace.num_heads)) for kind in self.softmax_kinds}

    def __call__(self, layer: int, block: Block) -> None:
        first = block.values[:, :, 0].sum(-1).double().cpu().numpy()  # [h]
        maps = len(self.softmax_kinds)  # each head's softmax maps in turn (for diff: A1 and A2 alternate)
        heads = slice(block.heads.start // maps, block.heads.stop // maps)
        for i, kind in enumerate(self.softmax_kinds):
            self.received[kind][layer, heads] += first[i::maps]

    def result(self) -> SinkScores:
        scores = {kind: value / self.trace.seq_len for kind, value in self.received.items()}  # mean over every query row
        if "diff" in self.trace.kinds:
            scores["diff"] = scores["a1"] - np.asarray(self.trace.lambdas)[:, None] * scores["a2"]
        return SinkScores(threshold=self.threshold, scores={kind: scores[kind] for kind in self.trace.kinds})


def sink_scores(trace: Trace, threshold: float = SINK_THRESHOLD) -> SinkScores:
    """Sink scores ``[L, H]`` of every map kind of ``trace``, in one pass over its softmax maps."""
    totals = SinkTotals(trace, threshold)
    scan(trace, trace.kinds[0], softmax=totals)
    return totals.result()
