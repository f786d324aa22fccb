"""DiffLlama (Differential Transformer): head i's first softmax map A1 is query head i, its second
A2 query head i + H/2 (transformers' pairing, not the paper's 2i, 2i + 1). The layer calls the
attention function twice, with V's two halves of KV heads (each repeated over both halves), so a
differential head mixes values of width 2·head_dim: KV head g's value vector is both calls' vectors
side by side, and A1 and A2 of a head read the same one per key. D = A1 − λ·A2; each head's mixed
values pass a weightless RMSNorm scaled by 1 − λ_init."""

from __future__ import annotations

import torch

from ..lambdas import model_lambdas
from .base import Architecture


class DiffLlama(Architecture):
    name = "diffllama"
    class_prefix = "DiffLlama"
    kinds = ("diff", "a1", "a2")
    value_calls = 2

    @staticmethod
    def map_heads_of(heads: int) -> int:
        return heads // 2

    def softmax_maps(self, kind: str) -> tuple[str, ...]:
        return ("a1", "a2") if kind == "diff" else (kind,)

    def softmax_heads(self, heads: list[int], kind: str) -> list[int]:
        half = self.shape.map_heads
        if kind == "diff":
            return [h + offset for h in heads for offset in (0, half)]
        return [h + half for h in heads] if kind == "a2" else list(heads)

    def combine(self, softmax: torch.Tensor, kind: str, lambda_: float | None) -> torch.Tensor:
        if kind != "diff":
            return softmax
        return torch.sub(softmax[0::2], softmax[1::2], alpha=lambda_)  # A1 − λ·A2, what the layer applies to V

    def post_mix_scale(self, attn, mixed: torch.Tensor, lambda_init: float | None) -> torch.Tensor:
        eps = attn.groupnorm.eps if attn.groupnorm.eps is not None else torch.finfo(mixed.dtype).eps
        return (1 - lambda_init) * torch.rsqrt(mixed.pow(2).mean(-1, keepdim=True) + eps)  # [r, 1]

    def lambdas(self, model) -> tuple[list[float], list[float]]:
        return model_lambdas(model)

