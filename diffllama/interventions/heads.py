"""Head ablation: a head's output (as the output projection reads it) set to zero, or to its mean over
the input's positions, for one forward pass. A DiffLlama head is a differential head: both of its
softmax maps (A1 and A2), since its output is the normed ``A1·V − λ·A2·V``."""

from __future__ import annotations

import numpy as np

from ..trace import Trace
from .core import HEAD_MODES, HeadEdit, Intervention, answer_change, batched, head_shape, intervene, require_language_model
from .records import HeadEffects, InterventionResult


def check_heads(lens, trace: Trace, heads: list[tuple[int, int]], mode: str) -> None:
    if mode not in HEAD_MODES:
        raise ValueError(f"mode {mode!r} is not an ablation; choose one of {', '.join(HEAD_MODES)}")
    if not heads:
        raise ValueError("no head given: name at least one (layer, head)")
    count = head_shape(lens.model)[0]
    for layer, head in heads:
        trace._check_layer(layer)
        if not 0 <= head < count:
            raise ValueError(f"head {head} is out of range: this model has heads 0..{count - 1}")


def ablate_heads(lens, trace: Trace, heads: list[tuple[int, int]], mode: str = "zero",
                 token_id: int | None = None) -> InterventionResult:
    """Rerun ``trace``'s input with the heads ``heads`` ((layer, head) pairs) ablated together, and read
    the change, the answer first."""
    check_heads(lens, trace, heads, mode)
    edits = [HeadEdit(layer, head, mode) for layer, head in sorted(set(heads))]
    description = f"{mode}-ablated: " + ", ".join(f"L{layer} H{head}" for layer, head in sorted(set(heads)))
    return intervene(lens, trace, Intervention(heads=edits), description, token_id)


def head_effects(lens, trace: Trace, token_id: int | None = None, mode: str = "zero") -> HeadEffects:
    """The answer's logit and probability change at the last position when each head is ablated alone
    (several heads' ablations run side by side in one batched pass)."""
    require_language_model(lens, "the head ablation map")
    heads = head_shape(lens.model)[0]
    pairs = [(layer, head) for layer in range(trace.num_layers) for head in range(heads)]
    check_heads(lens, trace, pairs, mode)
    logits = batched(lens.model, trace.input_ids, [[HeadEdit(layer, head, mode)] for layer, head in pairs])
    before = trace.logits[-1]
    changes = [answer_change(lens, before, after, token_id, trace.seq_len - 1) for after in logits]
    shape = (trace.num_layers, heads)
    return HeadEffects(answer=changes[0].token, mode=mode,
                       logit_change=np.array([c.logit[1] - c.logit[0] for c in changes], dtype=np.float32).reshape(shape),
                       probability_change=np.array([c.probability[1] - c.probability[0] for c in changes],
                                                   dtype=np.float32).reshape(shape),
                       probability=changes[0].probability[0])



