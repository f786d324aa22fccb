"""Span allocation, the paper's Table 3: attention from the query token to a reference span vs to the
rest of the context, in every reading defined in ``measures`` (computed together), per layer × head,
with each DiffLlama layer's λ, 1 − λ and regime carried beside the numbers (``SpanAllocation``), and
the table every surface shows (``allocation_table``)."""

from __future__ import annotations

import math

import numpy as np

from ..records import READINGS, LayerLambda, ReferenceSpan, SpanAllocation, Table
from ..trace import Trace
from . import measures
from .alignment import token_spans

ALLOCATION_MEASURES = ("query token", "context", "attention to answer", "attention noise",
                       *(f"{reading} reading" for reading in READINGS), "λ regime")
LAST_TOKEN = "the last input token"
BEFORE_ANSWER = "the token before the answer in the continuation"
NOT_CONTINUED = "the last prompt token (the answer does not appear in the continuation)"
CHOSEN = "chosen"
CONTEXT_GIVEN = "the context's characters"
CONTEXT_WHOLE = "the whole text the span is in, before the query token (give the context to leave out a question)"


def layer_lambdas(trace: Trace) -> list[LayerLambda] | None:
    """Each layer's λ, 1 − λ and regime (``measures.regime``) of a DiffLlama trace; None otherwise."""
    if not trace.lambdas:
        return None
    return [LayerLambda(layer, float(value), 1.0 - float(value), measures.regime(value),
                        measures.REGIME_NOTES[measures.regime(value)]) for layer, value in enumerate(trace.lambdas)]


def readings(row, answer: tuple[int, int], context: tuple[int, int], lambda_: float | None = None,
             norms=None, projections=None, output_norm: float | None = None) -> dict[str, tuple[float, float]]:
    """``{reading: (attention to answer, attention noise)}`` of one attention row ``[N]`` of the query
    token, in every reading of ``measures`` (``READINGS``). ``lambda_``: the layer's λ when the row is a
    differential row (None: a softmax row, summing to 1). ``norms``, ``projections``, ``output_norm``:
    the row's contributions (``Trace.contributions``), for the contribution and projection readings;
    without them those readings are NaN. A reading a row does not define is NaN."""
    (a0, a1), (c0, c1) = answer, context
    d = np.asarray(row, dtype=np.float64)

    def split(values: np.ndarray) -> tuple[float, float]:  # (on the span, on the rest of the context)
        on_span = float(values[a0:a1].sum())
        return on_span, float(values[c0:c1].sum()) - on_span

    magnitude = float(np.abs(d).sum())
    signed = split(d)
    measured = {"net": tuple(v / magnitude for v in signed),
                "absolute": tuple(v / magnitude for v in split(np.abs(d))),
                "adds": tuple(v / magnitude for v in split(np.clip(d, 0, None))),
                "subtracts": tuple(v / magnitude for v in split(np.clip(-d, 0, None))),
                "signed": signed}
    row_sum = 1.0 if lambda_ is None else 1.0 - lambda_
    measured["normalised"] = (tuple(v / row_sum for v in signed) if lambda_ is None or measures.normalised_defined(lambda_)
                              else (math.nan, math.nan))
    if norms is None:
        measured["contribution"] = measured["projection"] = (math.nan, math.nan)
    else:
        norms, projections = np.asarray(norms, dtype=np.float64), np.asarray(projections, dtype=np.float64)
        measured["contribution"] = tuple(v / float(norms.sum()) for v in split(norms))
        measured["projection"] = tuple(v / float(output_norm) for v in split(projections))
    return {reading: measured[reading] for reading in READINGS}


def default_query(trace: Trace, reference: ReferenceSpan, text: str | None = None,
                  prompt_tokens: int | None = None) -> tuple[int, str]:
    """The query token (``measures``: "query token") and how it was chosen. ``prompt_tokens``: the
    prompt's length in tokens when the trace holds a generated continuation after it (``text``: the
    characters the trace's offsets point into, prompt and continuation); the query is then the token
    before the answer's first token in the continuation, or the last prompt token."""
    if prompt_tokens is None or prompt_tokens >= trace.seq_len:
        return trace.seq_len - 1, LAST_TOKEN
    if text is None:
        raise ValueError("the query in a generated continuation needs the text the trace's offsets point into")
    if not 0 < prompt_tokens:
        raise ValueError(f"the prompt length must be 1..{trace.seq_len} tokens; got {prompt_tokens}")
    wanted = text[reference.start:reference.end]
    continuation = trace.offsets[prompt_tokens][0]
    where = text.find(wanted, max(continuation, reference.end)) if wanted else -1
    if where >= 0:
        first = next(i for i in range(prompt_tokens, trace.seq_len) if trace.offsets[i][1] > where)
        return first - 1, BEFORE_ANSWER
    return prompt_tokens - 1, NOT_CONTINUED


def span_allocation(trace: Trace, query: int, answer: tuple[int, int], context: tuple[int, int], kind: str | None = None,
                    reference: str = "marked span", query_rule: str = CHOSEN, context_rule: str = CONTEXT_GIVEN) -> SpanAllocation:
    """Attention from the query token at position ``query`` to the ``answer`` token span vs to the rest
    of ``context`` ("attention to answer" and "attention noise"), per layer × head and reading.
    ``reference`` says where the answer span came from, ``query_rule`` and ``context_rule`` how the
    query and the context were chosen."""
    kind = kind or trace.kinds[0]
    trace.check(0, 0, kind)
    (a0, a1), (c0, c1) = answer, context
    if not (c0 <= a0 < a1 <= c1 <= trace.seq_len):
        raise ValueError(f"the answer span {answer} must lie inside the context span {context} within 0..{trace.seq_len}")
    if not 0 <= query < trace.seq_len:
        raise ValueError(f"the query token must be a position in 0..{trace.seq_len - 1}; got {query}")
    if a0 > query:
        raise ValueError(f"the span (tokens {a0}..{a1 - 1}) lies after the query token (position {query}), which "
                         "cannot attend to it: choose a later query token or an earlier span")
    lambdas = layer_lambdas(trace)
    contributing = kind == trace.kinds[0]  # A1 or A2 alone adds nothing to the output
    shape = (trace.num_layers, trace.num_heads)
    answer_mass = {reading: np.zeros(shape) for reading in READINGS}
    noise_mass = {reading: np.zeros(shape) for reading in READINGS}
    for layer in range(trace.num_layers):
        lambda_ = trace.lambdas[layer] if kind == "diff" else None
        for head in range(trace.num_heads):
            row = trace.rows(layer, head, kind, [query])[0].numpy()
            parts = {}
            if contributing:
                made = trace.contributions(layer, head, rows=[query])
                parts = dict(norms=made.norms[0], projections=made.projections[0], output_norm=float(made.output_norms[0]))
            for reading, (on_answer, noise) in readings(row, answer, context, lambda_, **parts).items():
                answer_mass[reading][layer, head] = on_answer
                noise_mass[reading][layer, head] = noise
    return SpanAllocation(kind=kind, query=query, query_token=trace.tokens[query], query_rule=query_rule,
                          answer=(a0, a1), context=(c0, c1), context_rule=context_rule, answer_mass=answer_mass,
                          noise_mass=noise_mass, lambdas=lambdas, gaps=_gaps(kind, contributing, lambdas),
                          reference=reference)


def _gaps(kind: str, contributing: bool, lambdas: list[LayerLambda] | None) -> dict[str, str]:
    gaps = {}
    if kind == "diff" and lambdas:
        missing = [entry for entry in lambdas if not measures.normalised_defined(entry.lambda_)]
        if missing:
            gaps["normalised"] = ("not reported for layer" + ("s " if len(missing) > 1 else " ") +
                                  ", ".join(f"{e.layer} (1 − λ = {e.row_sum:.3g}, {e.regime})" for e in missing) +
                                  f": below {measures.NORMALISED_FLOOR} dividing by 1 − λ blows up near 0 and flips "
                                  "every sign below 0; so neither is the mean over layers")
    if not contributing:
        gaps["contribution"] = gaps["projection"] = (f"not reported: {kind.upper()} alone adds nothing to the output; "
                                                     "contributions come from the map the head applies (D)")
    return gaps


def find_reference(text: str, wanted: str, sequence: int, source: str) -> ReferenceSpan:
    """The first occurrence of ``wanted`` in ``text`` as a reference span."""
    wanted = wanted.strip()
    where = text.find(wanted) if wanted else -1
    if where < 0:
        raise ValueError(f"the {source} {wanted!r} does not occur in the {'context' if sequence else 'input'}: "
                         "type text that appears in it exactly (same case), or leave it empty")
    return ReferenceSpan(where, where + len(wanted), sequence, source)


def find_context(text: str, context: str, reference: ReferenceSpan) -> tuple[int, int]:
    """The characters of ``context`` in ``text``: its first occurrence that holds ``reference``."""
    context = context.strip()
    where = text.find(context) if context else -1
    while where >= 0 and not (where <= reference.start and reference.end <= where + len(context)):
        where = text.find(context, where + 1)
    if where < 0:
        raise ValueError(f"the context {context[:60]!r}{'…' if len(context) > 60 else ''} does not occur in the "
                         "input around the span: type (or paste) the passage exactly as it occurs, holding the span, "
                         "or leave it empty for the whole text")
    return where, where + len(context)


def reference_allocation(trace: Trace, reference: ReferenceSpan, context_chars: tuple[int, int] | None = None,
                         kind: str | None = None, query: int | None = None, text: str | None = None,
                         prompt_tokens: int | None = None) -> SpanAllocation:
    """Allocation from the query token to ``reference``'s characters vs the rest of the context: the
    one call behind every surface (the compare view, ``/attention_to_span``, MCP and the study).

    ``context_chars``: the context's characters in the reference's sequence (None: the whole sequence,
    before the query token). ``query``: a position (None: ``default_query``, which reads ``text`` and
    ``prompt_tokens`` for a generated continuation). Tokens are found by character offsets, so two
    models with different tokenisers are measured on the same characters."""
    if query is None:
        query, rule = default_query(trace, reference, text, prompt_tokens)
    else:
        query, rule = int(query), CHOSEN
    answer = token_spans(trace, reference.start, reference.end, reference.sequence)
    if context_chars is not None:
        context, context_rule = token_spans(trace, *context_chars, reference.sequence), CONTEXT_GIVEN
    else:
        tokens = [i for i, s in enumerate(trace.sequence_ids) if s == reference.sequence and i < max(query, answer[1])]
        context, context_rule = (tokens[0], tokens[-1] + 1), CONTEXT_WHOLE
    return span_allocation(trace, query, answer, context, kind, reference.source, rule, context_rule)


def _cell(value: float) -> float | str:
    return "—" if math.isnan(value) else round(float(value), 4)


def allocation_table(allocations: dict[str, SpanAllocation]) -> Table:
    """Every allocation of ``allocations`` ({label: allocation}, e.g. {"A (diffllama)": …}) as one table:
    a row for the mean over layers and one per layer, each with λ, 1 − λ and regime (DiffLlama), and
    attention to answer / noise in every reading ("—" where a reading is not reported); the notes say
    which query and context were measured, each layer's regime and why cells are missing."""
    headers = ["model", "layer", "λ", "1 − λ", "regime"] + [f"{which} ({reading})" for reading in READINGS
                                                            for which in ("answer ↑", "noise ↓")]
    rows, notes, measured = [], [], []
    for label, result in allocations.items():
        lambdas = result.lambdas if result.kind == "diff" else None
        overall, per_layer = {r: result.means(r) for r in READINGS}, {r: result.layer_means(r) for r in READINGS}
        rows.append([label, "all", "", "", ""] + [_cell(overall[r][i]) for r in READINGS for i in (0, 1)])
        for layer in range(len(per_layer[READINGS[0]][0])):
            about = ([round(lambdas[layer].lambda_, 4), round(lambdas[layer].row_sum, 4), lambdas[layer].regime]
                     if lambdas else ["", "", "softmax" if result.kind == "softmax" else result.kind.upper()])
            rows.append([label, layer] + about + [_cell(per_layer[r][i][layer]) for r in READINGS for i in (0, 1)])
        measured.append(f"{label}: query token {result.query} {result.query_token!r} ({result.query_rule}); "
                        f"span tokens {result.answer[0]}..{result.answer[1] - 1} ({result.reference}); context tokens "
                        f"{result.context[0]}..{result.context[1] - 1} ({result.context_rule})")
        notes.append(measured[-1])
        for entry in lambdas or []:
            notes.append(f"{label}, layer {entry.layer}: λ = {entry.lambda_:.3g}, {entry.regime}: {entry.note}")
        notes += [f"{label}, {reading} reading {why}" for reading, why in result.gaps.items()]
        if result.kind != "diff":
            notes.append(f"{label}: a softmax map's net, absolute, adds, signed and normalised readings are equal "
                         "(subtracts is 0)")
    return Table(headers, rows, notes, measures.markdown(*ALLOCATION_MEASURES), measured)
