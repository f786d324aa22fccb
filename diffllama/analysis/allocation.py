"""Span allocation, the paper's Table 3: attention from the last token to a reference span vs to the
rest of the context, in the three readings defined in ``measures`` (computed together)."""

from __future__ import annotations

import numpy as np
import torch

from ..records import READINGS, ReferenceSpan, SpanAllocation
from ..trace import Trace
from .alignment import token_spans


def readings(rows: torch.Tensor, answer: tuple[int, int], context: tuple[int, int],
             row_sum: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(answer mass [q], noise mass [q])`` of attention rows ``[q, N]`` in each reading; ``row_sum``
    is what a causal row sums to: 1 − λ for a differential map, 1 for a softmax map."""
    (a0, a1), (c0, c1) = answer, context
    on_answer, on_context = rows[:, a0:a1].sum(-1), rows[:, c0:c1].sum(-1)
    magnitude = rows.abs()
    total = magnitude.sum(-1)
    abs_answer, abs_context = magnitude[:, a0:a1].sum(-1), magnitude[:, c0:c1].sum(-1)
    measured = {"signed": (on_answer, on_context - on_answer),
                "normalised": (on_answer / row_sum, (on_context - on_answer) / row_sum),
                "absolute": (abs_answer / total, (abs_context - abs_answer) / total)}
    return {reading: measured[reading] for reading in READINGS}


def span_allocation(trace: Trace, query_positions: list[int], answer: tuple[int, int], context: tuple[int, int],
                    kind: str | None = None, reference: str = "marked span") -> SpanAllocation:
    """Attention from ``query_positions`` to the ``answer`` token span vs to the rest of ``context``
    ("attention to answer" and "attention noise"), per layer × head and reading, averaged over
    query positions. ``reference`` says where the answer span came from."""
    kind = kind or trace.kinds[0]
    (a0, a1), (c0, c1) = answer, context
    if not (c0 <= a0 < a1 <= c1 <= trace.seq_len):
        raise ValueError(f"the answer span {answer} must lie inside the context span {context} within 0..{trace.seq_len}")
    if not query_positions or min(query_positions) < 0 or max(query_positions) >= trace.seq_len:
        raise ValueError(f"query positions must be non-empty and within 0..{trace.seq_len - 1}")
    queries = torch.tensor(query_positions)
    shape = (trace.num_layers, trace.num_heads)
    answer_mass = {reading: np.zeros(shape) for reading in READINGS}
    noise_mass = {reading: np.zeros(shape) for reading in READINGS}
    for layer in range(trace.num_layers):
        row_sum = 1.0 - trace.lambdas[layer] if kind == "diff" else 1.0
        for head in range(trace.num_heads):
            rows = trace.rows(layer, head, kind, queries)  # [q, N]
            for reading, (on_answer, noise) in readings(rows, answer, context, row_sum).items():
                answer_mass[reading][layer, head] = float(on_answer.mean())
                noise_mass[reading][layer, head] = float(noise.mean())
    return SpanAllocation(kind=kind, query_positions=list(query_positions), answer=tuple(answer),
                          context=tuple(context), answer_mass=answer_mass, noise_mass=noise_mass, reference=reference)


def find_reference(text: str, wanted: str, sequence: int, source: str) -> ReferenceSpan:
    """The first occurrence of ``wanted`` in ``text`` as a reference span."""
    wanted = wanted.strip()
    where = text.find(wanted) if wanted else -1
    if where < 0:
        raise ValueError(f"the {source} {wanted!r} does not occur in the {'context' if sequence else 'input'}: "
                         "type text that appears in it exactly (same case), or leave it empty")
    return ReferenceSpan(where, where + len(wanted), sequence, source)


def reference_allocation(trace: Trace, reference: ReferenceSpan, context_chars: tuple[int, int] | None = None,
                         kind: str | None = None) -> SpanAllocation:
    """Allocation from the last token to ``reference``'s characters vs the rest of its sequence (or of
    ``context_chars`` in it). Tokens are found by character offsets, so two models with different
    tokenisers are measured on the same characters."""
    answer = token_spans(trace, reference.start, reference.end, reference.sequence)
    if context_chars is not None:
        context = token_spans(trace, *context_chars, reference.sequence)
    else:
        tokens = [i for i, s in enumerate(trace.sequence_ids) if s == reference.sequence]
        context = (tokens[0], tokens[-1] + 1)
    return span_allocation(trace, [trace.seq_len - 1], answer, context, kind, reference.source)
