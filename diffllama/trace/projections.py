"""A layer's queries and values, recomputed on request by the layer's own modules (``run_attention``):
no forked projection, RoPE or qk-norm code. Keys are not here: the trace keeps each layer's keys from
its forward pass, where they were computed anyway."""

from __future__ import annotations

import torch

from .hooks import run_attention


def queries(model, hidden: torch.Tensor, layer: int, rows: list[int] | None = None) -> torch.Tensor:
    """Post-RoPE queries ``[H, r, d]`` (float32) of layer ``layer`` at the positions ``rows`` (all by
    default): only those rows are projected."""
    captured = []

    def capture(query, key, value):
        captured.append(query[0])
        return True

    run_attention(model, layer, hidden, capture, rows)
    return captured[0].float().contiguous()


def values(model, hidden: torch.Tensor, layer: int, calls: int) -> torch.Tensor:
    """Value vectors ``[KV, N, w]`` (float32) of layer ``layer`` as it hands them to its ``calls``
    attention calls, each call's side by side (w = calls · head_dim)."""
    captured = []

    def capture(query, key, value):
        captured.append(value[0])  # [KV, N, d]
        return len(captured) == calls

    run_attention(model, layer, hidden, capture)
    return torch.cat(captured, dim=-1).float().contiguous()
