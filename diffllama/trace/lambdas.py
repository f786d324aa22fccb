"""DiffLlama's λ, one scalar per layer, formed from the parameters exactly as
``DiffLlamaAttention.forward`` forms it: ``λ = exp(Σ λ_q1·λ_k1) − exp(Σ λ_q2·λ_k2) + λ_init``."""

from __future__ import annotations

import torch


@torch.no_grad()
def layer_lambda(attn) -> tuple[float, float]:
    """``(λ, λ_init)`` of one DiffLlama attention module."""
    lambda_1 = torch.exp(torch.sum(attn.lambda_q1 * attn.lambda_k1, dim=-1, dtype=torch.float32))
    lambda_2 = torch.exp(torch.sum(attn.lambda_q2 * attn.lambda_k2, dim=-1, dtype=torch.float32))
    return float(lambda_1 - lambda_2 + attn.lambda_init), float(attn.lambda_init)


def model_lambdas(model) -> tuple[list[float], list[float]]:
    """λ and λ_init per layer of a DiffLlama model."""
    pairs = [layer_lambda(layer.self_attn) for layer in model.base_model.layers]
    return [lam for lam, _ in pairs], [init for _, init in pairs]
