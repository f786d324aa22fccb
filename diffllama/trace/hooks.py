"""The trace's only entry into transformers: the ``"lens"`` attention function and the re-run of one
layer's own modules.

Per-request capture travels as a keyword argument through transformers' ``**kwargs`` plumbing down
to the attention function; interventions (λ override, head and residual edits) through the
``INTERVENTION`` context variable; so concurrent requests never share state.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_IMPLEMENTATION = "lens"

Capture = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], bool]


class _Captured(Exception):
    """Raised by the capture callback to stop a layer once its queries and keys are recorded."""


@dataclass(frozen=True)
class LambdaOverride:
    """Per-request replacement of DiffLlama's λ, layer by layer.

    Each attention call of a DiffLlama layer returns ``[B, N, H, d]`` for all H softmax heads; the
    layer then splits the heads in halves and computes ``out[:H/2] − λ·out[H/2:]``. Scaling the
    second half of both calls by ``λ'/λ`` therefore makes that ``A1·V − λ'·A2·V`` while every other
    number (λ_init, the GroupNorm scale) stays the model's own."""

    values: dict[int, float]  # layer -> λ' (any real number; 0.0 switches the subtraction off); other layers keep λ
    lambdas: list[float]  # the model's learned λ per layer, to form the ratio λ'/λ

    def apply(self, layer_idx: int, output: torch.Tensor) -> torch.Tensor:
        if layer_idx not in self.values:
            return output
        value = self.values[layer_idx]
        half = output.shape[2] // 2  # output: [B, N, H, d]; heads H/2.. hold the A2 maps
        scale = 0.0 if value == 0.0 else value / self.lambdas[layer_idx]
        return torch.cat([output[:, :, :half], output[:, :, half:] * scale], dim=2)


# The intervention of the request running in this context (``diffllama.interventions``), or None. A
# ContextVar, not a keyword argument: the head outputs and residual streams an intervention edits are
# only reachable through module hooks (an output projection's input, a decoder layer's input), which
# the forward call's kwargs never reach; a ContextVar reaches the attention function and those hooks
# alike, and each request's value is its own (a thread or a copied context sees only the value set in it).
INTERVENTION: contextvars.ContextVar = contextvars.ContextVar("lens_intervention", default=None)


def lens_attention(module, query, key, value, attention_mask, lens_capture=None, lens_keys=None, **kwargs):
    """SDPA, plus the per-request hooks of the trace engine and of interventions. ``query`` [B, H, N, d]
    and ``key`` [B, KV, N, d] arrive post-RoPE (and post qk-LayerNorm for Persimmon), ``value`` [B, KV, N, d]
    as the layer hands it over. ``lens_capture(query, key, value)`` returns True once it has what it needs
    and stops the layer; False lets the layer go on to its next attention call (DiffLlama makes two),
    with zeros as this call's output, since nothing after the capture is used. ``lens_keys(layer_idx,
    key)`` is shown the keys of every call of a normal forward pass (the trace keeps them). The active
    intervention's ``LambdaOverride`` (``INTERVENTION``), if any, rescales the A2 half of the output."""
    if lens_capture is not None:
        if lens_capture(query, key, value):
            raise _Captured
        batch, heads, n, _ = query.shape
        return query.new_zeros(batch, n, heads, value.shape[-1]), None  # SDPA's output layout [B, N, H, d]
    if lens_keys is not None:
        lens_keys(module.layer_idx, key)
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    intervention = INTERVENTION.get()
    if intervention is not None and intervention.lambdas is not None:
        output = intervention.lambdas.apply(module.layer_idx, output)
    return output, weights


AttentionInterface.register(ATTENTION_IMPLEMENTATION, lens_attention)
AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)  # same masks as SDPA, padding included


@torch.no_grad()
def run_attention(model, layer: int, hidden: torch.Tensor, capture: Capture, rows: list[int] | None = None) -> None:
    """Run decoder layer ``layer``'s own ``input_layernorm`` and ``self_attn`` on its input ``hidden``
    [1, N, D] (at the token positions ``rows`` only, when given) until ``capture`` (see
    ``lens_attention``) has what it needs. Every step before the attention function works token by
    token, at the rotary position the whole sequence gives it, so the queries of some positions equal
    those rows of the whole sequence's."""
    base = model.base_model
    decoder_layer = base.layers[layer]
    position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
    position_embeddings = base.rotary_emb(hidden, position_ids=position_ids)
    if rows is not None:
        index = torch.tensor(rows, device=hidden.device)
        hidden, position_ids = hidden[:, index], position_ids[:, index]
        position_embeddings = tuple(part[:, index] for part in position_embeddings)
    try:
        decoder_layer.self_attn(
            hidden_states=decoder_layer.input_layernorm(hidden),
            position_embeddings=position_embeddings,
            attention_mask=None,
            position_ids=position_ids,
            lens_capture=capture,
        )
    except _Captured:
        pass
