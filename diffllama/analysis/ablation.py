"""Output change of an intervention: rerun an input changed (λ replaced, heads ablated, ...) and
compare the outputs with the trace's own, position by position. ``lambda_ablation`` is the λ case."""

from __future__ import annotations

import math

import torch

from ..records import AblationResult
from ..tasks import MAX_ANSWER_TOKENS, answer_tokens, best_spans
from ..tokens import display_token, display_tokens
from ..trace import Trace
from .maps import block_labels


def _predictions(model, trace: Trace, top: torch.Tensor) -> list[str]:
    """Readable names of the predicted classes ``top`` [positions]: labels, next tokens, or for QA's
    start and end the token at the predicted position."""
    ids = top.tolist()
    if model.task in ("classification", "tagging"):
        return [model.config.id2label[i] for i in ids]
    if model.task == "qa":
        return block_labels(trace, [e for i in ids for e in (i, i + 1)])[::2]
    special = set(model.tokenizer.all_special_ids)
    return [display_token(model.tokenizer.decode([i]), i in special) for i in ids]


def _distributions(model, logits: torch.Tensor) -> torch.Tensor:
    """Output distributions to compare: per position for LM and tagging, over positions for QA's
    start and end, the single label distribution for classification. Returns [positions, classes]."""
    if model.task == "qa":
        return torch.log_softmax(logits.T, dim=-1)  # [2, N]
    return torch.log_softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)


def _best_answer(trace: Trace, logits: torch.Tensor) -> tuple[int, int, float] | None:
    """The best span (context characters ``[start, end)``, score) decoded as ``answer`` decodes it."""
    spans = best_spans(logits[:, 0], logits[:, 1], answer_tokens(trace), 1, MAX_ANSWER_TOKENS)
    return (trace.offsets[spans[0][0]][0], trace.offsets[spans[0][1]][1], spans[0][2]) if spans else None


def compare_outputs(model, trace: Trace, ablated: torch.Tensor, value: float = math.nan) -> AblationResult:
    """The trace's own outputs against ``ablated`` (the task logits of a changed rerun of its input):
    KL and top prediction per position; ``value`` is the λ set in every layer, when that was the change."""
    original_logp, ablated_logp = _distributions(model, trace.logits), _distributions(model, ablated)
    original_p, ablated_p = original_logp.exp(), ablated_logp.exp()
    # KL is ≥ 0; float32 rounding can dip a hair below 0, which is no change at all
    kl = (original_p * (original_logp - ablated_logp)).sum(-1).clamp_min(0.0)  # [positions]
    before, after = original_logp.argmax(-1), ablated_logp.argmax(-1)  # [positions]
    probability = lambda p, top: p.gather(-1, top[:, None])[:, 0].tolist()  # noqa: E731 - P(top) per position
    qa = model.task == "qa"
    tokens = (display_tokens(trace.tokens, trace.sequence_ids) if len(kl) == trace.seq_len
              else ["start", "end"] if qa else ["label"])
    return AblationResult(value=value, tokens=tokens, kl=kl.tolist(), original=_predictions(model, trace, before),
                          ablated=_predictions(model, trace, after), changed=(before != after).tolist(),
                          original_prob=probability(original_p, before), original_prob_after=probability(ablated_p, before),
                          ablated_prob=probability(ablated_p, after),
                          answers=(_best_answer(trace, trace.logits), _best_answer(trace, ablated)) if qa else None)


def lambda_ablation(model, trace: Trace, value: float = 0.0) -> AblationResult:
    """Rerun ``trace``'s input with λ replaced by ``value`` in every layer (0 switches the subtraction
    off: only A1 drives the output) and compare outputs with the trace's own. Nothing in the model
    changes: the override applies to this forward pass only (``diffllama.interventions.set_lambdas``
    sets any subset of layers, or scales each layer's λ)."""
    from ..interventions.lambdas import set_lambdas  # the interventions build on this module's comparison

    return set_lambdas(model, trace, {layer: value for layer in range(trace.num_layers)}).outputs
