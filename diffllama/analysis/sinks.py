"""Attention sinks on the first token (Gu et al., "When Attention Sink Emerges in Language Models",
ICLR 2025): per head and per map, the mean attention the first token receives over all queries,
and the share of heads whose score exceeds ε = 0.3."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from ..records import SinkScores
from ..tracing import Trace

SINK_THRESHOLD = 0.3  # ε of Gu et al.


def sink_score(blocks: Iterable[torch.Tensor]) -> float:
    """Mean over query rows of the first key's attention, from a map given in row blocks ``[r, N]``."""
    received, rows = 0.0, 0
    for block in blocks:
        received += float(block[:, 0].sum())
        rows += block.shape[0]
    return received / rows


def sink_scores(trace: Trace, threshold: float = SINK_THRESHOLD) -> SinkScores:
    """Sink scores ``[L, H]`` of every map kind of ``trace``. For DiffLlama only A1 and A2 are
    computed: a column mean is linear, so D = A1 − λ·A2 scores exactly A1's score − λ·A2's."""
    softmax_kinds = [kind for kind in trace.kinds if kind != "diff"]
    scores = {kind: np.zeros((trace.num_layers, trace.num_heads)) for kind in softmax_kinds}
    for layer in range(trace.num_layers):
        for kind in softmax_kinds:
            for block in trace.map_blocks(layer, kind):  # a few heads × rows at a time
                scores[kind][layer, block.heads] += block.values[:, :, 0].sum(-1).double().cpu().numpy()
    scores = {kind: value / trace.seq_len for kind, value in scores.items()}  # mean over every query row
    if "diff" in trace.kinds:
        scores["diff"] = scores["a1"] - np.asarray(trace.lambdas)[:, None] * scores["a2"]
    return SinkScores(threshold=threshold, scores={kind: scores[kind] for kind in trace.kinds})
