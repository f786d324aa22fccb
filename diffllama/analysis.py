"""Analysis over traces: display maps, per-head statistics, the paper's span allocation, λ ablation,
activation outliers and token alignment. Each function computes only what it is asked for, one
head's rows at a time, and returns a typed record of numpy arrays and plain values."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from .records import (AblationResult, AttentionMap, HeadStats, OutlierStats, Overview, SpanAllocation,
                      TokenAlignment)
from .tracing import LambdaOverride, Trace, block_edges, task_logits

OUTLIER_RANKS = (1, 2, 3, 10, 100)


# --- maps for display --------------------------------------------------------------------------
def block_labels(tokens: list[str], edges: list[int]) -> list[str]:
    """One axis label per block: the token itself, or its first and last tokens with positions."""
    labels = []
    for start, end in zip(edges, edges[1:]):
        if end - start == 1:
            labels.append(f"{tokens[start]!r} ({start})")
        else:
            labels.append(f"{tokens[start]!r}…{tokens[end - 1]!r} ({start}–{end - 1})")
    return labels


def attention_map(trace: Trace, layer: int, head: int, kind: str, max_size: int = 512) -> AttentionMap:
    pooled = trace.pooled(layer, head, kind, max_size)
    return AttentionMap(layer=layer, head=head, kind=kind, values=pooled.values.numpy(), edges=pooled.edges,
                        labels=block_labels(trace.tokens, pooled.edges),
                        lambda_=trace.lambdas[layer] if trace.lambdas and kind == "diff" else None)


def attention_row(trace: Trace, layer: int, head: int | None, kind: str, query: int) -> np.ndarray:
    """Attention of the token at ``query`` over all keys ``[N]`` (zero after ``query``);
    ``head=None`` averages the layer's heads."""
    if not 0 <= query < trace.seq_len:
        raise ValueError(f"token position {query} is out of range: the input has positions 0..{trace.seq_len - 1}")
    heads = range(trace.num_heads) if head is None else [head]
    qk = trace.queries_keys(layer)
    rows = [trace.rows(layer, h, kind, torch.tensor([query]), qk)[0] for h in heads]
    return torch.stack(rows).mean(0).numpy()


def overview_layers(trace: Trace, kind: str, size: int = 32) -> Iterator[Overview]:
    """Every layer × head pooled to at most ``size`` × ``size``, one layer at a time: each yield holds
    the layers done so far, so a view can draw the first layer while the others are computed. Long
    inputs are averaged over an evenly spaced sample of query rows, which the record names."""
    edges, rows = block_edges(trace.seq_len, size), trace.overview_rows(size)
    maps = []
    for layer in range(trace.num_layers):
        values, _ = trace.pooled_heads(layer, kind, size, rows=rows)  # [heads, b, b], one pass over the layer
        maps.append(list(values.numpy()))
        yield Overview(kind=kind, maps=list(maps), edges=edges, seq_len=trace.seq_len, query_rows=rows)


def overview(trace: Trace, kind: str, size: int = 32) -> Overview:
    """The whole overview of ``overview_layers``."""
    *_, whole = overview_layers(trace, kind, size)
    return whole


# --- per-head statistics -----------------------------------------------------------------------
def row_statistics(rows: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """Per-row entropy, top-k mass, first-token mass and negative share of attention rows [..., N]."""
    magnitude = rows.abs()
    p = magnitude / magnitude.sum(-1, keepdim=True)  # the row as a distribution over keys
    return {
        "entropy": -(p * torch.log(p.clamp_min(1e-30))).sum(-1),
        "top_k_mass": p.topk(min(top_k, p.shape[-1]), dim=-1).values.sum(-1),
        "sink_mass": p[..., 0],
        "negative_mass": rows.clamp(max=0).abs().sum(-1) / magnitude.sum(-1),
    }


def head_stats(trace: Trace, kind: str | None = None, top_k: int = 5) -> HeadStats:
    """Entropy, top-k mass, sink mass and negative mass per layer × head, averaged over query rows
    1..N-1 (row 0 can only attend to itself)."""
    kind = kind or trace.kinds[0]
    names = ("entropy", "top_k_mass", "sink_mass", "negative_mass")
    totals = {name: np.zeros((trace.num_layers, trace.num_heads)) for name in names}
    rows_counted = max(trace.seq_len - 1, 1)
    rows = range(1, trace.seq_len) if trace.seq_len > 1 else None
    for layer in range(trace.num_layers):
        for block in trace.map_blocks(layer, kind, rows=rows):  # a few heads × rows at a time
            for name, values in row_statistics(block.values, top_k).items():
                totals[name][layer, block.heads] += values.sum(-1).double().cpu().numpy()
    return HeadStats(kind=kind, top_k=top_k, **{name: totals[name] / rows_counted for name in names})


# --- span allocation (paper, Table 3) ------------------------------------------------------------
def token_spans(trace: Trace, char_start: int, char_end: int, sequence: int | None = None) -> tuple[int, int]:
    """The token span ``[s, e)`` whose characters overlap ``[char_start, char_end)`` (in the text
    whose sequence id is ``sequence``, or any non-special token when None)."""
    hits = [i for i, ((a, b), seq) in enumerate(zip(trace.offsets, trace.sequence_ids))
            if seq is not None and (sequence is None or seq == sequence) and a < char_end and b > char_start]
    if not hits:
        raise ValueError(f"no token covers characters {char_start}..{char_end}")
    return hits[0], hits[-1] + 1


def span_allocation(trace: Trace, query_positions: list[int], answer: tuple[int, int],
                    context: tuple[int, int], kind: str | None = None) -> SpanAllocation:
    """Attention from ``query_positions`` to the ``answer`` token span vs to the rest of ``context``
    ("attention to answer" and "attention noise"), per layer × head, averaged over query positions."""
    kind = kind or trace.kinds[0]
    (a0, a1), (c0, c1) = answer, context
    if not (c0 <= a0 < a1 <= c1 <= trace.seq_len):
        raise ValueError(f"the answer span {answer} must lie inside the context span {context} within 0..{trace.seq_len}")
    if not query_positions or min(query_positions) < 0 or max(query_positions) >= trace.seq_len:
        raise ValueError(f"query positions must be non-empty and within 0..{trace.seq_len - 1}")
    queries = torch.tensor(query_positions)
    answer_mass = np.zeros((trace.num_layers, trace.num_heads))
    noise_mass = np.zeros_like(answer_mass)
    for layer in range(trace.num_layers):
        qk = trace.queries_keys(layer)
        # differential rows sum to 1 − λ; normalise so DiffLlama and softmax models compare
        norm = 1.0 - trace.lambdas[layer] if kind == "diff" else 1.0
        for head in range(trace.num_heads):
            rows = trace.rows(layer, head, kind, queries, qk) / norm  # [q, N]
            on_answer = rows[:, a0:a1].sum(-1)
            answer_mass[layer, head] = float(on_answer.mean())
            noise_mass[layer, head] = float((rows[:, c0:c1].sum(-1) - on_answer).mean())
    return SpanAllocation(kind=kind, query_positions=list(query_positions), answer=tuple(answer),
                          context=tuple(context), answer_mass=answer_mass, noise_mass=noise_mass)


# --- λ ablation ----------------------------------------------------------------------------------
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


# --- activation outliers (paper, Table 5) -------------------------------------------------------
class MagnitudeSummary:
    """Exact top-k and median of |values| over a stream of chunks too large to hold at once.

    The top-k is kept as the chunks pass. The median needs a second pass: a histogram over
    [0, max] finds the bin holding the middle rank, and only that bin's values are then kept."""

    BINS = 4096

    def __init__(self, chunks):
        self.chunks = chunks  # callable returning an iterator of 1-D tensors, so it can be replayed
        keep = max(OUTLIER_RANKS)
        top, count = torch.empty(0), 0
        for chunk in self.chunks():
            top = torch.cat([top, chunk.abs().topk(min(keep, chunk.numel())).values])
            top = top.topk(min(keep, top.numel())).values  # sorted, largest first
            count += chunk.numel()
        if count == 0:
            raise ValueError("nothing to summarise: the input is empty")
        self.top, self.count = top, count
        self.width = float(top[0]) / self.BINS or 1.0  # histogram bins over [0, max]

    def _bins(self, chunk: torch.Tensor) -> torch.Tensor:
        return (chunk.abs() / self.width).long().clamp(max=self.BINS)

    def median(self) -> float:
        # torch.median takes the lower middle value of an even count; so do we, for equal answers
        rank = (self.count - 1) // 2
        histogram = torch.zeros(self.BINS + 1, dtype=torch.long)
        for chunk in self.chunks():
            histogram += torch.bincount(self._bins(chunk), minlength=self.BINS + 1)
        cumulative = histogram.cumsum(0)
        target = int(torch.searchsorted(cumulative, torch.tensor(rank), right=True))
        below = int(cumulative[target - 1]) if target else 0
        in_bin = torch.cat([chunk.abs()[self._bins(chunk) == target] for chunk in self.chunks()])
        return float(in_bin.sort().values[rank - below])

    def as_row(self) -> dict[str, float]:
        row = {f"top-{k}": float(self.top[k - 1]) if k <= self.top.numel() else math.nan for k in OUTLIER_RANKS}
        row["median"] = self.median()
        return row


def activation_outliers(trace: Trace) -> OutlierStats:
    """|pre-softmax attention logits| over every layer, softmax head and causal (query, key) pair,
    and |hidden states| of every layer output, summarised as the paper's Table 5."""

    def logit_chunks():
        for layer in range(trace.num_layers):
            for values in trace.causal_logits(layer):
                yield values.cpu()

    def hidden_chunks():
        for hidden in trace.hidden_states[1:]:
            yield hidden.float().flatten().cpu()

    return OutlierStats(attention_logits=MagnitudeSummary(logit_chunks).as_row(),
                        hidden_states=MagnitudeSummary(hidden_chunks).as_row())


# --- comparing two tokenisations ------------------------------------------------------------------
def align_tokens(trace_a: Trace, trace_b: Trace) -> TokenAlignment:
    """Map tokens of A to tokens of B (and back) that share characters of the same input text."""

    def overlaps(source: Trace, target: Trace) -> list[list[int]]:
        spans = [(i, a, b, s) for i, ((a, b), s) in enumerate(zip(target.offsets, target.sequence_ids)) if s is not None and b > a]
        return [[i for i, a, b, s in spans if s == seq and a < end and b > start] if seq is not None and end > start else []
                for (start, end), seq in zip(source.offsets, source.sequence_ids)]

    return TokenAlignment(a_to_b=overlaps(trace_a, trace_b), b_to_a=overlaps(trace_b, trace_a))
