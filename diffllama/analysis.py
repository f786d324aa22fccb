"""Analysis over traces: display maps, per-head statistics, the paper's span allocation, λ ablation,
activation outliers and token alignment. Each function computes only what it is asked for, one
head's rows at a time, and returns a typed record of numpy arrays and plain values."""

from __future__ import annotations

import math

import numpy as np
import torch

from .records import (AblationResult, AttentionMap, AttentionRegion, HeadStats, OutlierStats, Overview,
                      SpanAllocation, TokenAlignment)
from .tasks import MAX_ANSWER_TOKENS, answer_tokens, best_spans
from .tokens import display_token, display_tokens
from .tracing import LambdaOverride, Trace, block_edges, task_logits

OUTLIER_RANKS = (1, 2, 3, 10, 100)
MAX_REGION = 256  # tokens per side of a full-resolution region: 256 × 256 cells stay a light figure


# --- maps for display --------------------------------------------------------------------------
def block_labels(trace: Trace, edges: list[int]) -> list[str]:
    """One axis label per block, unique by its position: "12 ␣Lyon", or "8–11 ␣the…␣of" for a block
    of several tokens (see ``diffllama.tokens`` for how tokens are written)."""
    shown = display_tokens(trace.tokens, trace.sequence_ids)
    return [f"{start} {shown[start]}" if end - start == 1 else f"{start}–{end - 1} {shown[start]}…{shown[end - 1]}"
            for start, end in zip(edges, edges[1:])]


def attention_map(trace: Trace, layer: int, head: int, kind: str, max_size: int = 512) -> AttentionMap:
    pooled = trace.pooled(layer, head, kind, max_size)
    return AttentionMap(layer=layer, head=head, kind=kind, values=pooled.values.numpy(), edges=pooled.edges,
                        labels=block_labels(trace, pooled.edges),
                        lambda_=trace.lambdas[layer] if trace.lambdas and kind == "diff" else None)


def attention_region(trace: Trace, layer: int, head: int, kind: str, rows: tuple[int, int],
                     cols: tuple[int, int]) -> AttentionRegion:
    """Query tokens ``rows`` × key tokens ``cols`` (``[start, end)``) of one head's map at full
    resolution, however long the input: only those query rows are computed."""
    for name, (start, end) in (("query", rows), ("key", cols)):
        if not 0 <= start < end <= trace.seq_len:
            raise ValueError(f"the {name} range {start}..{end} must satisfy 0 ≤ start < end ≤ {trace.seq_len} (the input's length)")
        if end - start > MAX_REGION:
            raise ValueError(f"the {name} range covers {end - start} tokens; a full-resolution region shows at most "
                             f"{MAX_REGION} per side: narrow it (the pooled map shows the whole input)")
    values = trace.rows(layer, head, kind, torch.arange(*rows))[:, cols[0]:cols[1]]  # [r, c]
    labels = block_labels(trace, list(range(trace.seq_len + 1)))
    return AttentionRegion(layer=layer, head=head, kind=kind, values=values.numpy(), rows=tuple(rows), cols=tuple(cols),
                           row_labels=labels[rows[0]:rows[1]], col_labels=labels[cols[0]:cols[1]],
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


def overview(trace: Trace, kind: str, size: int = 32) -> Overview:
    """Every layer × head pooled to at most ``size`` × ``size``, computed one head at a time."""
    maps = []
    for layer in range(trace.num_layers):
        qk = trace.queries_keys(layer)  # once per layer, shared by its heads
        maps.append([trace.pooled(layer, head, kind, size, qk).values.numpy() for head in range(trace.num_heads)])
    return Overview(kind=kind, maps=maps, edges=block_edges(trace.seq_len, size), seq_len=trace.seq_len)


# --- per-head statistics -----------------------------------------------------------------------
def row_statistics(rows: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """Per-row entropy, top-k mass, first-token mass and negative share of attention rows [r, N]."""
    magnitude = rows.abs()
    p = magnitude / magnitude.sum(-1, keepdim=True)  # the row as a distribution over keys
    return {
        "entropy": -(p * torch.log(p.clamp_min(1e-30))).sum(-1),
        "top_k_mass": p.topk(min(top_k, p.shape[-1]), dim=-1).values.sum(-1),
        "sink_mass": p[:, 0],
        "negative_mass": rows.clamp(max=0).abs().sum(-1) / magnitude.sum(-1),
    }


def head_stats(trace: Trace, kind: str | None = None, top_k: int = 5) -> HeadStats:
    """Entropy, top-k mass, sink mass and negative mass per layer × head, averaged over query rows
    1..N-1 (row 0 can only attend to itself)."""
    kind = kind or trace.kinds[0]
    names = ("entropy", "top_k_mass", "sink_mass", "negative_mass")
    totals = {name: np.zeros((trace.num_layers, trace.num_heads)) for name in names}
    rows_counted = max(trace.seq_len - 1, 1)
    for layer in range(trace.num_layers):
        qk = trace.queries_keys(layer)
        for head in range(trace.num_heads):
            for rows, block in trace.row_chunks(layer, head, kind, qk):
                keep = rows > 0 if trace.seq_len > 1 else rows >= 0
                for name, values in row_statistics(block[keep], top_k).items():
                    totals[name][layer, head] += float(values.sum())
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
            qk = trace.queries_keys(layer)
            heads = list(range(qk[0].shape[0]))  # all softmax heads: both maps of every differential head
            for start in range(0, trace.seq_len, 256):
                rows = torch.arange(start, min(start + 256, trace.seq_len))
                logits = trace.logit_rows(layer, rows, heads, qk)  # [H, r, N]
                yield logits[torch.isfinite(logits)].cpu()

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
