"""Stateless API endpoints: attention values as numbers for any text, straight from model sources,
with no prior run in the session and nothing kept after the call. With the MCP server on
(``server.MCP_ENV``) they are the app's MCP tools: gradio describes each tool and its parameters
from the docstring (one ``name: description`` line per parameter under ``Args:``) and type hints."""

from __future__ import annotations

from dataclasses import asdict

import gradio as gr
import numpy as np

from diffllama import analysis, limits
from diffllama.loading import HEADS

from .errors import user_errors
from .interventions.tools import TOOLS as INTERVENTION_TOOLS
from .model_queue import MODEL_CONCURRENCY, MODEL_QUEUE, gpu
from .model_slots import CACHE

TOP_HEADS = 10  # heads listed by attention_to_span, most attention to the span first
SPAN_MEASURES = analysis.allocation.ALLOCATION_MEASURES


def _trace(text: str, text_pair: str, source: str, task: str):
    """One forward pass of ``source`` loaded for ``task`` over ``text`` (and ``text_pair``: QA's context)."""
    if task not in HEADS:
        raise ValueError(f"task is {task!r}; it takes one of: {', '.join(map(repr, HEADS))}")
    limits.check_text(text)
    limits.check_length(text_pair or "", "text pair")
    return CACHE.get(source, task).trace(text, text_pair or None)


def _continued_trace(text: str, text_pair: str, source: str, task: str, continuation: str):
    """The trace ``attention_to_span`` measures, and what ``reference_allocation`` needs to find its default
    query in a continuation (the text the offsets point into, the prompt's token count)."""
    if not isinstance(continuation, str):
        raise ValueError("continuation: give the continuation's text, or \"\" for none")
    if not continuation:
        return _trace(text, text_pair, source, task), {}
    if task != "generation" or text_pair:
        raise ValueError(f"continuation: only a language model continues a prompt (task \"generation\", text_pair \"\"); "
                         f"got task {task!r}{' and a text_pair' if text_pair else ''}")
    limits.check_text(text, "text")
    limits.check_length(continuation, "continuation")
    trace, prompt_tokens = CACHE.get(source, task).trace_continuation(text, continuation, "text + continuation")
    return trace, dict(text=text + continuation, prompt_tokens=prompt_tokens)


def _about(trace, layer: int, head: int, kind: str) -> dict:
    return {"arch": trace.arch, "layer": layer, "head": head, "kind": kind,
            "lambda": trace.lambdas[layer] if trace.lambdas and kind == "diff" else None,
            "tokens": trace.tokens, "seq_len": trace.seq_len}


@user_errors
@gpu
def attention_map(text: str, text_pair: str, source: str, task: str, layer: int, head: int, kind: str,
                  size: int = 512, value: str = "weight") -> dict:
    """One attention head's map of an input under a DiffLlama, Llama or Persimmon model, as numbers.

    Args:
        text: the input text (a QA question when text_pair holds the context)
        text_pair: a second text read after the first, e.g. the QA context; "" for none
        source: the model: a bundled name (diffllama-lm, llama-lm, persimmon-lm, diffllama-qa, ...), a local checkpoint directory or a hub id owner/name
        task: the head the model is loaded with: "generation", "classification", "qa" or "tagging"
        layer: decoder layer, from 0
        head: head index, from 0 (a DiffLlama head is a differential head: its A1 and A2 are query heads i and i + H/2)
        kind: "diff" (A1 − λ·A2, the map DiffLlama applies to V; can be negative), "a1" or "a2" for DiffLlama; "softmax" for Llama / Persimmon
        size: largest number of blocks per side; longer inputs are averaged into blocks of consecutive tokens
        value: what the cells hold: "weight" (the map), "norm" (‖c‖, how much each key adds to the head's output: its contribution) or "projection" (the contribution along the head output's direction; negative where a key pushes against it); contributions need the map the head applies ("diff" or "softmax")

    Returns:
        values[i][j]: what query block i gives key block j (its weight, or its contribution: see value), block i covering tokens edges[i]:edges[i+1] (one token each unless the input is longer than size); labels: one per block; tokens, seq_len, arch, and lambda, the layer's λ for "diff"
    """
    if size < 1:
        raise ValueError(f"size is {size!r}; it takes a whole number of blocks, at least 1")
    trace = _trace(text, text_pair, source, task)
    view = analysis.attention_map(trace, int(layer), int(head), kind, int(size), value)
    return {**_about(trace, view.layer, view.head, view.kind), "value": view.value, "values": view.values.tolist(),
            "edges": view.edges, "labels": view.labels}


@user_errors
@gpu
def attention_region(text: str, text_pair: str, source: str, task: str, layer: int, head: int, kind: str,
                     query_start: int, query_end: int, key_start: int, key_end: int, value: str = "weight") -> dict:
    """A rectangle of one attention head's map at full resolution, token by token, for an input of any length.

    Args:
        text: the input text (a QA question when text_pair holds the context)
        text_pair: a second text read after the first, e.g. the QA context; "" for none
        source: the model: a bundled name, a local checkpoint directory or a hub id owner/name
        task: the head the model is loaded with: "generation", "classification", "qa" or "tagging"
        layer: decoder layer, from 0
        head: head index, from 0 (a DiffLlama head is a differential head)
        kind: "diff", "a1" or "a2" for DiffLlama; "softmax" for Llama / Persimmon
        query_start: first query token of the rectangle (0-based)
        query_end: query token after the last one (at most 256 more than query_start)
        key_start: first key token of the rectangle
        key_end: key token after the last one (at most 256 more than key_start)
        value: "weight", "norm" or "projection", as for attention_map

    Returns:
        values[i][j]: what query token query_start + i gives key token key_start + j (0 for a future key); rows, cols: the two token ranges; row_labels, col_labels: their tokens; tokens, seq_len, arch, and lambda for "diff"
    """
    trace = _trace(text, text_pair, source, task)
    region = analysis.attention_region(trace, int(layer), int(head), kind, (int(query_start), int(query_end)),
                                       (int(key_start), int(key_end)), value)
    return {**_about(trace, region.layer, region.head, region.kind), "value": region.value, "values": region.values.tolist(),
            "rows": list(region.rows), "cols": list(region.cols), "row_labels": region.row_labels,
            "col_labels": region.col_labels}


def _plain(values: np.ndarray) -> list:
    """An array as nested lists, NaN (a reading not reported there) as None."""
    return np.where(np.isnan(values), None, values).tolist()


@user_errors
@gpu
def attention_to_span(text: str, text_pair: str, source: str, task: str, span: str, kind: str = "", context: str = "",
                      query: int = -1, continuation: str = "") -> dict:
    """Which heads attend to a span of the input (e.g. the answer): per layer and head, the attention the query token gives the span's tokens vs the rest of the context (the Differential Transformer paper's attention to answer vs attention noise), in every reading, with each DiffLlama layer's λ, 1 − λ and regime beside.

    Args:
        text: the input text (a QA question when text_pair holds the context); for a language model, the prompt
        text_pair: a second text read after the first, e.g. the QA context; "" for none
        source: the model: a bundled name (diffllama-lm, llama-lm, ...), a local checkpoint directory or a hub id owner/name
        task: the head the model is loaded with: "generation", "classification", "qa" or "tagging"
        span: the span, typed exactly as it occurs (same case) in text_pair when one is given, else in text; its first occurrence is measured
        kind: the map: "" for the model's own ("diff", A1 − λ·A2, for DiffLlama; "softmax" otherwise), or "a1" / "a2" for a DiffLlama's two softmax maps
        context: the context's text, typed exactly as it occurs and holding the span (e.g. the passage before a question); "" for the whole text the span is in (text_pair when given), before the query token
        query: the query token's position; -1 for the default: the token whose next-token prediction is the answer's first token — the last input token, or with a continuation the token before the span's text where the continuation says it (the last prompt token if it does not)
        continuation: a language model's continuation of text (e.g. what /generate wrote), measured as the Generation tab's compare view measures it: the prompt's tokens, then the continuation's, in one pass; the span and context are still found in text; "" for none

    Returns:
        attention_to_span[reading][layer][head] and attention_noise[reading][layer][head] for every reading (net, the default: signed share of the row's magnitude; absolute = adds + subtracts; signed; normalised, null where 1 − λ < 0.1; contribution and projection: shares of what the head writes), null where a reading is not reported (gaps says why); top_heads: the heads with the most attention to the span in the net reading; table: the rows the app's compare view shows (mean over layers and per layer, λ beside) with its notes; span_tokens [start, end) and their tokens; context_tokens and context_rule; query: position, token and how it was chosen; lambdas: per layer λ, 1 − λ, regime and note (DiffLlama); definitions of every measure; arch, kind
    """
    if not isinstance(span, str) or not span.strip():
        raise ValueError("span: give the text to measure, e.g. the answer, exactly as it occurs in the input")
    if not isinstance(context, str):
        raise ValueError("context: give the context's text as it occurs in the input, or \"\" for the whole text")
    try:
        query = int(query)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"query: {query!r} is not a token position; give a whole number, or -1 for the default") from None
    trace, continued = _continued_trace(text, text_pair, source, task, continuation)
    sequence = 1 if text_pair else 0
    measured_text = text_pair if sequence else text
    reference = analysis.find_reference(measured_text, span, sequence, "marked span")
    chars = analysis.find_context(measured_text, context, reference) if context.strip() else None
    allocation = analysis.reference_allocation(trace, reference, chars, kind=kind or None,
                                               query=None if query == -1 else query, **continued)
    default = allocation.answer_mass[analysis.READINGS[0]]  # [L, H]
    ranked = np.argsort(-default, axis=None, kind="stable")[:TOP_HEADS]
    top = [{"layer": int(layer), "head": int(head), "attention_to_span": float(default[layer, head]),
            "attention_noise": float(allocation.noise_mass[analysis.READINGS[0]][layer, head])}
           for layer, head in zip(*np.unravel_index(ranked, default.shape))]
    start, end = allocation.answer
    table = analysis.allocation_table({f"{source} ({trace.arch})": allocation})
    return {"arch": trace.arch, "kind": allocation.kind,
            "span_tokens": [start, end], "span_token_texts": trace.tokens[start:end],
            "context_tokens": list(allocation.context), "context_rule": allocation.context_rule,
            "query": {"position": allocation.query, "token": allocation.query_token, "rule": allocation.query_rule},
            "default_reading": analysis.READINGS[0],
            "attention_to_span": {r: _plain(m) for r, m in allocation.answer_mass.items()},
            "attention_noise": {r: _plain(m) for r, m in allocation.noise_mass.items()},
            "lambdas": [asdict(entry) for entry in allocation.lambdas] if allocation.lambdas else None,
            "gaps": allocation.gaps, "top_heads": top,
            "table": {"headers": table.headers, "rows": table.rows, "notes": table.notes},
            "definitions": {name: analysis.measures.MEASURES[name].text for name in SPAN_MEASURES}}


TOOLS = (attention_map, attention_region, attention_to_span, *INTERVENTION_TOOLS)  # stateless: API endpoints, and MCP tools when on


def build() -> None:
    """Register the endpoints (inside the app's Blocks), queued with every other model run."""
    for fn in TOOLS:
        gr.api(fn, api_name=fn.__name__, concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY)
