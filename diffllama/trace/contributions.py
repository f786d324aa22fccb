"""What each key adds to the residual stream through one head (the "contribution" measure of
``analysis/measures.py``), computed a block of query rows at a time.

Key k's contribution vector to query i's output is ``c_ik = w_ik · W_h v_k``: ``v_k`` its value
vector, ``W_h`` the head's slice of the output projection, and ``w_ik`` the weight the head really
gives it: the map the head applies to its values (``kinds[0]``) times the factor the layer applies to
the head's mixed values (``Architecture.post_mix_scale``: ``(1 − λ_init)·s_i`` for DiffLlama, ``s_i``
its sub-layer RMSNorm's scale of row i). ``Σ_k c_ik`` is the head's part of the attention output. An
output projection's bias (Persimmon's ``dense`` has one) is added once per token whatever the keys
are, so it is no key's contribution and is left out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch

from .blocks import Block

if TYPE_CHECKING:
    from .lazy import Trace


def head_projection(trace: "Trace", layer: int, head: int) -> torch.Tensor:
    """``W_h`` [D, w] (float32): the columns of the layer's output projection that head ``head``'s
    output (its w numbers of the attention output) passes through."""
    attn = trace._model.base_model.layers[layer].self_attn
    width = trace.architecture.shape.value_width
    return trace.architecture.output_projection(attn).weight[:, head * width:(head + 1) * width].float()


@torch.no_grad()
def contribution_blocks(trace: "Trace", layer: int, head: int,
                        rows: list[int]) -> Iterator[tuple[Block, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per block of query rows: the block, the weights ``w`` [r, e] the head really gives each key,
    the keys' value vectors ``v`` [e, w] and the weighted sums ``m_i = Σ_k w_ik v_k`` [r, w]. With
    ``W_h = head_projection`` [D, w]: ``c_ik = w_ik·W_h v_k`` and the head's output ``o_i = W_h m_i``."""
    attn = trace._model.base_model.layers[layer].self_attn
    value = trace._values(layer)[trace.architecture.kv_head(head)]  # [N, w]
    lambda_init = trace.lambda_inits[layer] if trace.lambda_inits else None
    for block in trace.map_blocks(layer, trace.kinds[0], [head], rows):
        weights = block.values[0]  # [r, e]
        end = weights.shape[1]
        mixed = weights @ value[:end]  # [r, w]
        scale = trace.architecture.post_mix_scale(attn, mixed, lambda_init)  # [r, 1] or None
        if scale is not None:
            weights, mixed = weights * scale, mixed * scale
        yield block, weights, value[:end], mixed


@torch.no_grad()
def contribution_values(trace: "Trace", layer: int, head: int, rows: list[int], norms: bool = True,
                        projections: bool = True) -> Iterator[tuple[Block, torch.Tensor | None, torch.Tensor | None, torch.Tensor]]:
    """Per block of query rows: the block, ‖c_ik‖ [r, e] (if ``norms``), c_ik·o_i/‖o_i‖ [r, e] (if
    ``projections``) and ‖o_i‖ [r]. Computed in the value space through G = W_hᵀW_h [w, w], so no
    vector of the model's width D is built per key: ‖c_ik‖ = |w_ik|·√(v_kᵀ G v_k) and
    c_ik·o_i = w_ik·v_kᵀ G m_i."""
    gram = head_projection(trace, layer, head)
    gram = gram.T @ gram  # [w, w]
    if norms:  # ‖W_h v_k‖ of every key [N], once
        every = trace._values(layer)[trace.architecture.kv_head(head)]  # [N, w]
        key_norms = ((every @ gram) * every).sum(-1).clamp_min(0).sqrt()
    for block, weights, values, mixed in contribution_blocks(trace, layer, head, rows):
        pulled = mixed @ gram  # [r, w]: W_hᵀ o_i
        sizes = (pulled * mixed).sum(-1).clamp_min(0).sqrt()  # ‖o_i‖ [r]
        block_norms = weights.abs() * key_norms[:weights.shape[1]] if norms else None
        block_projections = None
        if projections:  # a zero output has no direction: its keys project to 0
            block_projections = weights * (pulled @ values.T) / sizes.clamp_min(torch.finfo(sizes.dtype).tiny)[:, None]
        yield block, block_norms, block_projections, sizes
