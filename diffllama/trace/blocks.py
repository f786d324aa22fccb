"""Blocks of one layer's logits: which heads and query rows go together (``schedule``: sized to stay
in the CPU's cache) and the scaled, causally masked logits of each (``logit_blocks``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

BLOCK_ROWS = 64  # query rows a block of logits aims for (fewer heads per block instead)


@dataclass
class Block:
    """A piece of one layer's maps (or logits): ``values[i, j, k]`` belongs to head ``heads`` [i] (an
    index into the heads asked for), query position ``rows[j]`` (entry ``span`` [j] of the positions
    asked for) and key position k < e; keys from e on are in the future of every row of the block."""

    heads: slice
    span: slice
    rows: torch.Tensor  # [r] query positions
    values: torch.Tensor  # [h, r, e]
    logits: torch.Tensor | None = None  # [h, r, e]: the logits whose softmax ``values`` is (softmax maps only)


def block_values(device: torch.device) -> int:
    """Numbers in one block of logits: 2 MB of float32 stays in a CPU core's cache while softmax and
    the statistics run over it; a GPU wants large launches instead."""
    return 1 << 25 if device.type == "cuda" else 1 << 19


def schedule(rows: list[int], heads: int, unit: int, limit: int) -> Iterator[tuple[slice, slice]]:
    """``(heads, span)`` pieces covering ``heads`` heads (in whole groups of ``unit``) × the query
    positions ``rows`` (ascending) once each. A piece's logits reach keys 0..rows[span][-1], so it
    holds about ``limit`` numbers, with at least ``BLOCK_ROWS`` rows where it can (a matrix product
    of a few rows runs far below the machine's speed)."""
    if not rows:
        return
    width = max(unit, limit // (BLOCK_ROWS * (rows[-1] + 1)) // unit * unit)
    for first_head in range(0, heads, width):
        group = min(width, heads - first_head)
        start = 0
        while start < len(rows):
            count = max(1, min(len(rows) - start, limit // (group * (rows[start] + 1))))
            while count > 1 and group * count * (rows[start + count - 1] + 1) > limit:
                count = max(1, limit // (group * (rows[start + count - 1] + 1)))
            yield slice(first_head, first_head + group), slice(start, start + count)
            start += count


def logit_blocks(queries: torch.Tensor, keys: torch.Tensor, heads: list[int], rows: list[int],
                 unit: int = 1, masked: bool = True) -> Iterator[Block]:
    """Scaled, causally masked pre-softmax logits of query heads ``heads`` for the query positions
    ``rows`` (ascending), from ``queries`` [H, len(rows), d] (row j at position rows[j], already
    multiplied by the layer's scaling) and ``keys``
    [KV, N, d] (GQA: query head h reads KV head h // (H / KV)), in the blocks of ``schedule``: keys
    0..e-1, e the block's last position + 1, every later key being in the future of every row. Unless
    ``masked`` is False (for readers that stop at each row's own position), a row's keys after its
    position are −inf."""
    groups = queries.shape[0] // keys.shape[0]
    positions = torch.tensor(rows, device=queries.device)
    for head_slice, span in schedule(rows, len(heads), unit, block_values(queries.device)):
        group, block = heads[head_slice], positions[span]
        first, end = rows[span.start], rows[span.stop - 1] + 1
        logits = torch.empty(len(group), len(block), end, device=queries.device)
        for i, head in enumerate(group):
            torch.mm(queries[head, span], keys[head // groups, :end].T, out=logits[i])  # [r, e]
        if masked and end - first > 1:  # keys after a row's own position: only among the block's later columns
            future = torch.arange(first + 1, end, device=logits.device)[None, :] > block[:, None]  # [r, e - first - 1]
            logits[:, :, first + 1:].masked_fill_(future, float("-inf"))
        yield Block(head_slice, span, block, logits)

