"""Maps for display: one head's (pooled) map, one query's row, and every layer × head as thumbnails."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..records import AttentionMap, AttentionRegion, Overview
from ..tokens import display_tokens
from ..trace import Trace, block_edges
from .head_stats import HeadStatTotals, Pooling
from .passes import per_layer

MAX_REGION = 256  # tokens per side of a full-resolution region: 256 × 256 cells stay a light figure


def block_labels(trace: Trace, edges: list[int]) -> list[str]:
    """One axis label per block, unique by its position: "12 ␣Lyon", or "8–11 ␣the…␣of" for a block
    of several tokens (see ``diffllama.tokens`` for how tokens are written)."""
    shown = display_tokens(trace.tokens, trace.sequence_ids)
    return [f"{start} {shown[start]}" if end - start == 1 else f"{start}–{end - 1} {shown[start]}…{shown[end - 1]}"
            for start, end in zip(edges, edges[1:])]


def attention_map(trace: Trace, layer: int, head: int, kind: str, max_size: int = 512,
                  value: str = "weight") -> AttentionMap:
    """One head's map, or its keys' contributions (``value``: ``records.VALUES``), pooled to at most
    ``max_size`` blocks a side (mean over a block's query rows, sum over its keys)."""
    pooled = trace.pooled(layer, head, kind, max_size, value)
    return AttentionMap(layer=layer, head=head, kind=kind, values=pooled.values.numpy(), edges=pooled.edges,
                        labels=block_labels(trace, pooled.edges),
                        lambda_=trace.lambdas[layer] if trace.lambdas and kind == "diff" else None, value=value)


def attention_region(trace: Trace, layer: int, head: int, kind: str, rows: tuple[int, int],
                     cols: tuple[int, int], value: str = "weight") -> AttentionRegion:
    """Query tokens ``rows`` × key tokens ``cols`` (``[start, end)``) of one head's map at full
    resolution, however long the input: only that region is computed."""
    for name, (start, end) in (("query", rows), ("key", cols)):
        if not 0 <= start < end <= trace.seq_len:
            raise ValueError(f"the {name} range {start}..{end} must satisfy 0 ≤ start < end ≤ {trace.seq_len} (the input's length)")
        if end - start > MAX_REGION:
            raise ValueError(f"the {name} range covers {end - start} tokens; a full-resolution region shows at most "
                             f"{MAX_REGION} per side: narrow it (the pooled map shows the whole input)")
    values = trace.region(layer, head, kind, tuple(rows), tuple(cols), value)  # [r, c]
    labels = block_labels(trace, list(range(trace.seq_len + 1)))
    return AttentionRegion(layer=layer, head=head, kind=kind, values=values.numpy(), rows=tuple(rows), cols=tuple(cols),
                           row_labels=labels[rows[0]:rows[1]], col_labels=labels[cols[0]:cols[1]],
                           lambda_=trace.lambdas[layer] if trace.lambdas and kind == "diff" else None, value=value)


def attention_row(trace: Trace, layer: int, head: int | None, kind: str, query: int, value: str = "weight") -> np.ndarray:
    """Attention of the token at ``query`` over all keys ``[N]`` (zero after ``query``), or the keys'
    contributions (``value``); ``head=None`` averages the layer's heads."""
    if not 0 <= query < trace.seq_len:
        raise ValueError(f"token position {query} is out of range: the input has positions 0..{trace.seq_len - 1}")
    heads = range(trace.num_heads) if head is None else [head]
    rows = [trace.rows(layer, h, kind, torch.tensor([query]), value)[0] for h in heads]
    return torch.stack(rows).mean(0).numpy()


def overview_layers(trace: Trace, kind: str, size: int = 32, value: str = "weight", top_k: int = 5) -> Iterator[Overview]:
    """Every layer × head pooled to at most ``size`` × ``size``, one layer at a time: each yield holds
    the layers done so far, so a view can draw the first layer while the others are computed; the
    last also holds every head's statistics (``head_stats``) of its weights over the same query rows,
    read from the same pass when the thumbnails show weights. Long inputs are averaged over an evenly
    spaced sample of query rows, which the record names. The layers are shared among worker threads
    (``per_layer``) and yielded in order."""
    edges, rows = block_edges(trace.seq_len, size), trace.overview_rows(size)
    stats = HeadStatTotals(trace, kind, top_k, rows)

    def one_layer(layer: int) -> np.ndarray:
        if value == "weight" and trace.device.type == "cpu":  # thumbnails and statistics from one pass over the logits
            pooling = Pooling(trace.num_heads, edges, list(range(trace.seq_len)) if rows is None else rows)
            for block in trace.logit_blocks(layer, kind, rows=rows):
                stats.from_logits(layer, block, pooling)
            return pooling.means().numpy()
        if value == "weight":
            values, _ = trace.pooled_heads(layer, kind, size, rows=rows, observe=lambda block: stats(layer, block))
        else:  # the thumbnails show contributions; the numbers read the weights
            values, _ = trace.pooled_heads(layer, kind, size, rows=rows, value=value)
            for block in trace.map_blocks(layer, kind, rows=rows):
                stats(layer, block)
        return values.numpy()  # [heads, b, b]

    maps = []
    for values in per_layer(trace, one_layer):
        maps.append(list(values))
        yield Overview(kind=kind, maps=list(maps), edges=edges, seq_len=trace.seq_len, query_rows=rows, value=value,
                       stats=stats.result() if len(maps) == trace.num_layers else None)


def overview(trace: Trace, kind: str, size: int = 32, value: str = "weight", top_k: int = 5) -> Overview:
    """The whole overview of ``overview_layers``."""
    *_, whole = overview_layers(trace, kind, size, value, top_k)
    return whole
