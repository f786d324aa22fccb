"""Display-sized maps: block edges, row samples and the pooling of a stream of ``Block`` s."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from .blocks import Block

OVERVIEW_LOGITS = 1 << 28  # an overview beyond this many logits averages over a sample of rows


@dataclass
class PooledMap:
    """A display-sized map: ``values[i, j]`` is the attention mass the query tokens
    ``edges[i]:edges[i+1]`` give (on average) to the key tokens ``edges[j]:edges[j+1]`` — mean over
    query rows, sum over key columns, so rows keep their sums (1, or 1 − λ for ``diff``). Edges equal
    ``range(N + 1)`` when the map is not pooled."""

    values: torch.Tensor  # [B, B] float32
    edges: list[int]

    @property
    def is_pooled(self) -> bool:
        return len(self.edges) - 1 < self.edges[-1]


def block_edges(n: int, max_size: int) -> list[int]:
    """Boundaries of at most ``max_size`` near-equal contiguous blocks covering ``0..n``."""
    blocks = min(n, max_size)
    return [math.floor(i * n / blocks) for i in range(blocks + 1)]


def sample_rows(n: int, edges: list[int], per_block: int) -> list[int]:
    """``per_block`` evenly spaced query positions in each block of ``edges`` (all of a smaller block):
    the sample an overview averages over."""
    rows = []
    for start, end in zip(edges, edges[1:]):
        size = end - start
        count = min(size, per_block)
        rows.extend(start + (2 * i + 1) * size // (2 * count) for i in range(count))
    return rows


def overview_rows(n: int, softmax_heads: int, size: int, max_logits: int = OVERVIEW_LOGITS) -> list[int] | None:
    """The query positions an overview of ``softmax_heads`` maps (every layer's) of ``n`` tokens at
    ``size`` blocks averages over: None (every row) when that is at most ``max_logits`` causal logits,
    else the same number of evenly spaced rows in each block (``sample_rows``), as many as the bound allows."""
    if softmax_heads * n * (n + 1) // 2 <= max_logits:
        return None
    edges = block_edges(n, size)
    # sampled rows see N/2 keys on average
    per_block = max(1, max_logits // (softmax_heads * max(n // 2, 1) * (len(edges) - 1)))
    return sample_rows(n, edges, per_block)


def pool_columns(values: torch.Tensor, edges: list[int]) -> torch.Tensor:
    """Sum ``values`` [..., N] over column blocks → [..., B]."""
    block_of_col = torch.bucketize(torch.arange(values.shape[-1]), torch.tensor(edges[1:]), right=True).to(values.device)
    out = torch.zeros(*values.shape[:-1], len(edges) - 1, device=values.device)
    return out.index_add_(values.dim() - 1, block_of_col, values)


def row_blocks(rows: list[int], edges: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The block of rows each query position of ``rows`` falls in (``edges``), and how many fall in each
    block (float32); every block needs one."""
    block_of_row = torch.bucketize(torch.tensor(rows), torch.tensor(edges[1:]), right=True)  # [len(rows)]
    rows_per_block = torch.bincount(block_of_row, minlength=len(edges) - 1).float()
    if not bool((rows_per_block > 0).all()):
        raise ValueError("every block of rows needs at least one sampled row")
    return block_of_row, rows_per_block


def pool(blocks: Iterator[Block], count: int, edges: list[int], rows: list[int], n: int) -> torch.Tensor:
    """Pooled maps ``[count, B, B]`` (CPU) of the ``blocks`` of ``count`` heads over the query
    positions ``rows`` of ``n`` tokens: the mean over each block of rows, the sum over each block of keys."""
    size = len(edges) - 1
    block_of_row, rows_per_block = row_blocks(rows, edges)
    sums = None  # row blocks summed, columns not yet
    for block in blocks:
        if sums is None:
            sums = torch.zeros(count, size, n, device=block.values.device)
        values = block.values  # [h, r, e]
        sums[block.heads, :, :values.shape[2]].index_add_(1, block_of_row[block.span].to(values.device), values)
    return (pool_columns(sums, edges) / rows_per_block[:, None].to(sums.device)).cpu()  # [count, B, B]
