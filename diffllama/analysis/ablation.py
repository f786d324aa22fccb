"""λ ablation: rerun an input with DiffLlama's λ replaced and compare the outputs."""

from __future__ import annotations

import torch

from ..records import AblationResult
from ..tracing import LambdaOverride, Trace, task_logits


def _predictions(model, logits: torch.Tensor) -> list[str]:
    ids = (logits.argmax(0) if model.task == "qa" else logits.argmax(-1)).reshape(-1).tolist()
    if model.task in ("classification", "tagging"):
        return [model.config.id2label[i] for i in ids]
    if model.task == "qa":  # the most likely start and end positions
        return [str(i) for i in ids]
    return [model.tokenizer.decode([i]) for i in ids]


def _distributions(model, logits: torch.Tensor) -> torch.Tensor:
    """Output distributions to compare: per position for LM and tagging, over positions for QA's
    start and end, the single label distribution for classification. Returns [positions, classes]."""
    if model.task == "qa":
        return torch.log_softmax(logits.T, dim=-1)  # [2, N]
    return torch.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)


def lambda_ablation(model, trace: Trace, value: float = 0.0) -> AblationResult:
    """Rerun ``trace``'s input with λ replaced by ``value`` in every layer (0 switches the subtraction
    off: only A1 drives the output) and compare outputs with the trace's own. Nothing in the model
    changes: the override travels with this forward pass only."""
    if trace.lambdas is None:
        raise ValueError(f"λ ablation needs a DiffLlama; this is a {trace.arch} model, which has no λ")
    if any(abs(lam) < 1e-12 for lam in trace.lambdas) and value != 0.0:
        raise ValueError("a layer has λ = 0, so λ cannot be rescaled; ablate with value 0 instead")
    override = LambdaOverride(value=value, lambdas=trace.lambdas)
    with torch.no_grad():
        output = model.model(input_ids=torch.tensor([trace.input_ids], device=model.device), lens_lambda=override)
    ablated = task_logits(output)
    original_logp, ablated_logp = _distributions(model, trace.logits), _distributions(model, ablated)
    kl = (original_logp.exp() * (original_logp - ablated_logp)).sum(-1)  # [positions]
    original, changed_to = _predictions(model, trace.logits), _predictions(model, ablated)
    tokens = trace.tokens if len(kl) == trace.seq_len else (["start", "end"] if model.task == "qa" else ["label"])
    return AblationResult(value=value, tokens=tokens, kl=kl.tolist(), original=original, ablated=changed_to,
                          changed=[a != b for a, b in zip(original, changed_to)])
