"""Typed records of interventions: plain values and numpy arrays, no torch. Each names the answer
first (its probability and rank before → after), then the rest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..records import AblationResult, OutlierStats


@dataclass
class AnswerChange:
    """The answer token at the query position (the last token), before and after an intervention."""

    token: str  # for display
    token_id: int
    position: int  # the query position whose next-token distribution is read
    probability: tuple[float, float]  # before, after
    rank: tuple[int, int]  # 1 = the top prediction
    logit: tuple[float, float]
    chosen: str  # "given" (the visitor named it) or "predicted" (the model's own top prediction before)


@dataclass
class InterventionResult:
    """One intervention on one input: the answer first, then every position's output change."""

    description: str  # what was changed, in words
    answer: AnswerChange | None  # None for models without a next-token head (classification, QA, tagging)
    outputs: AblationResult  # KL and top prediction per position (``value`` is NaN unless one λ was set everywhere)


@dataclass
class HeadEffects:
    """The answer's logit change (after − before) at the query position when each head is ablated alone."""

    answer: str  # the answer token, for display
    mode: str  # "zero" | "mean"
    logit_change: np.ndarray  # [L, H]
    probability_change: np.ndarray  # [L, H]
    probability: float  # the answer's probability without ablation


@dataclass
class PatchingResult:
    """Activation patching clean → corrupted: the recovered share of the clean − corrupted metric
    (the answer's logit, minus the foil's when one is given) at the query position."""

    answer: str
    foil: str | None
    metric_clean: float
    metric_corrupted: float
    heads: np.ndarray  # [L, H] recovered share, one head's output patched at every position
    heads_metric: np.ndarray  # [L, H] the metric after the patch
    residual: np.ndarray  # [L, N] recovered share, the residual entering layer l patched at position p (NaN where not patched: before the first difference, or before the last 64 positions)
    residual_metric: np.ndarray  # [L, N]
    tokens: list[str]  # the clean input's tokens
    corrupted_tokens: list[str]
    first_difference: int  # the first position whose token differs (N when none does)
    note: str | None  # why the shares are undefined, when they are


@dataclass
class LogitLens:
    """What each layer's residual stream predicts at the query position, read through the final norm and
    the output head. Entries: 0 = the embeddings, e ≥ 1 = after decoder layer e − 1 (layers counted from 0; the last
    entry is the model's output)."""

    answer: str
    answer_id: int
    position: int
    probability: list[float]  # the answer's probability per entry
    rank: list[int]  # the answer's rank per entry, 1 = top
    top: list[str]  # the top prediction per entry
    top_probability: list[float]
    emergence: int | None  # the first entry from which the answer stays the top prediction to the end; None if it never is


@dataclass
class QuantizationComparison:
    """A model against its quantized copy on one input."""

    full: str  # the two sources
    quantized: str
    answer: AnswerChange | None  # full → quantized
    kl: list[float]  # KL(full ‖ quantized) per position
    top1_agreement: float  # share of positions with the same top prediction
    lambdas: tuple[list[float], list[float]] | None  # λ per layer, full and quantized (DiffLlama)
    map_change: list[float]  # per layer: mean |Δ| over every head's map entry (the model's own map: D or softmax)
    map_change_max: list[float]  # per layer: the largest |Δ|
    outliers: tuple[OutlierStats, OutlierStats]  # full, quantized
