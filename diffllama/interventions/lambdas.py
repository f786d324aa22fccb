"""λ per layer: override DiffLlama's λ in any subset of layers with any real value (negative, 0, above
1), or scale each layer's learned λ, for one forward pass."""

from __future__ import annotations

import math

from ..trace import LambdaOverride, Trace, architecture_of
from .core import Intervention, intervene
from .records import InterventionResult


def learned_lambdas(lens) -> list[float] | None:
    """The model's learned λ per layer (DiffLlama), else None."""
    values = architecture_of(lens.model.config).lambdas(lens.model)
    return values[0] if values else None


def lambda_values(trace: Trace, values: dict[int, float] | None = None, scale: float | None = None) -> dict[int, float]:
    """The λ' per layer an override sets: ``values`` (layer -> λ'), or every layer's λ times ``scale``."""
    if trace.lambdas is None:
        raise ValueError(f"λ ablation needs a DiffLlama; this is a {trace.arch} model, which has no λ")
    if (values is None) == (scale is None):
        raise ValueError("give either λ values per layer or a scale for every layer's λ, not both")
    if scale is not None:
        if not math.isfinite(scale):
            raise ValueError(f"scale must be a finite number, not {scale}")
        return {layer: scale * lam for layer, lam in enumerate(trace.lambdas)}
    if not values:
        raise ValueError(f"no layer given: set λ for at least one of layers 0..{trace.num_layers - 1}")
    for layer, value in values.items():
        trace._check_layer(layer)
        if not math.isfinite(value):
            raise ValueError(f"λ for layer {layer} must be a finite number, not {value}")
        if value != 0.0 and abs(trace.lambdas[layer]) < 1e-12:
            raise ValueError(f"layer {layer} has λ = 0, so λ cannot be rescaled there; set it to 0 or leave it")
    return dict(values)


def set_lambdas(lens, trace: Trace, values: dict[int, float] | None = None, scale: float | None = None,
                token_id: int | None = None) -> InterventionResult:
    """Rerun ``trace``'s input with λ' per layer (``lambda_values``) and read the change, the answer
    (``token_id``; the model's own prediction when None) first."""
    targets = lambda_values(trace, values, scale)
    override = LambdaOverride(values=targets, lambdas=trace.lambdas)
    uniform = {*targets.values()} if len(targets) == trace.num_layers else set()
    description = (f"every layer's λ × {scale:g}" if scale is not None else
                   ", ".join(f"layer {layer}: λ {trace.lambdas[layer]:.3f} → {value:g}" for layer, value in sorted(targets.items())))
    return intervene(lens, trace, Intervention(lambdas=override), description, token_id,
                     value=uniform.pop() if len(uniform) == 1 and scale is None else math.nan)
