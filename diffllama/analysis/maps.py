"""Maps for display: one head's (pooled) map, one query's row, and every layer × head as thumbnails."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..records import AttentionMap, Overview
from ..tracing import Trace, block_edges


def block_labels(tokens: list[str], edges: list[int]) -> list[str]:
    """One axis label per block: the token itself, or its first and last tokens with positions."""
    labels = []
    for start, end in zip(edges, edges[1:]):
        if end - start == 1:
            labels.append(f"{tokens[start]!r} ({start})")
        else:
            labels.append(f"{tokens[start]!r}…{tokens[end - 1]!r} ({start}–{end - 1})")
    return labels


def attention_map(trace: Trace, layer: int, head: int, kind: str, max_size: int = 512) -> AttentionMap:
    pooled = trace.pooled(layer, head, kind, max_size)
    return AttentionMap(layer=layer, head=head, kind=kind, values=pooled.values.numpy(), edges=pooled.edges,
                        labels=block_labels(trace.tokens, pooled.edges),
                        lambda_=trace.lambdas[layer] if trace.lambdas and kind == "diff" else None)


def attention_row(trace: Trace, layer: int, head: int | None, kind: str, query: int) -> np.ndarray:
    """Attention of the token at ``query`` over all keys ``[N]`` (zero after ``query``);
    ``head=None`` averages the layer's heads."""
    if not 0 <= query < trace.seq_len:
        raise ValueError(f"token position {query} is out of range: the input has positions 0..{trace.seq_len - 1}")
    heads = range(trace.num_heads) if head is None else [head]
    qk = trace.queries_keys(layer)
    rows = [trace.rows(layer, h, kind, torch.tensor([query]), qk)[0] for h in heads]
    return torch.stack(rows).mean(0).numpy()


def overview_layers(trace: Trace, kind: str, size: int = 32) -> Iterator[Overview]:
    """Every layer × head pooled to at most ``size`` × ``size``, one layer at a time: each yield holds
    the layers done so far, so a view can draw the first layer while the others are computed. Long
    inputs are averaged over an evenly spaced sample of query rows, which the record names."""
    edges, rows = block_edges(trace.seq_len, size), trace.overview_rows(size)
    maps = []
    for layer in range(trace.num_layers):
        values, _ = trace.pooled_heads(layer, kind, size, rows=rows)  # [heads, b, b], one pass over the layer
        maps.append(list(values.numpy()))
        yield Overview(kind=kind, maps=list(maps), edges=edges, seq_len=trace.seq_len, query_rows=rows)


def overview(trace: Trace, kind: str, size: int = 32) -> Overview:
    """The whole overview of ``overview_layers``."""
    *_, whole = overview_layers(trace, kind, size)
    return whole
