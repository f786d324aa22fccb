"""Stateless API endpoints: attention values as numbers for any text, straight from model sources,
with no prior run in the session and nothing kept after the call. With the MCP server on
(``server.MCP_ENV``) they are the app's MCP tools: gradio describes each tool and its parameters
from the docstring (one ``name: description`` line per parameter under ``Args:``) and type hints."""

from __future__ import annotations

import gradio as gr
import numpy as np

from diffllama import analysis, limits
from diffllama.loading import HEADS

from .common import CACHE, MODEL_CONCURRENCY, MODEL_QUEUE, gpu, user_errors

TOP_HEADS = 10  # heads listed by attention_to_span, most attention to the span first
SPAN_MEASURES = ("attention to answer", "attention noise", *(f"{reading} reading" for reading in analysis.READINGS))


def _trace(text: str, text_pair: str, source: str, task: str):
    """One forward pass of ``source`` loaded for ``task`` over ``text`` (and ``text_pair``: QA's context)."""
    if task not in HEADS:
        raise ValueError(f"task is {task!r}; it takes one of: {', '.join(map(repr, HEADS))}")
    limits.check_text(text)
    limits.check_length(text_pair or "", "text pair")
    return CACHE.get(source, task).trace(text, text_pair or None)


def _about(trace, layer: int, head: int, kind: str) -> dict:
    return {"arch": trace.arch, "layer": layer, "head": head, "kind": kind,
            "lambda": trace.lambdas[layer] if trace.lambdas and kind == "diff" else None,
            "tokens": trace.tokens, "seq_len": trace.seq_len, "truncated_from": trace.truncated_from}


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
        values[i][j]: what query block i gives key block j (its weight, or its contribution: see value), block i covering tokens edges[i]:edges[i+1] (one token each unless the input is longer than size); labels: one per block; tokens, seq_len, truncated_from (token count of an input cut to the model's positions), arch, and lambda, the layer's λ for "diff"
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


@user_errors
@gpu
def attention_to_span(text: str, text_pair: str, source: str, task: str, span: str, kind: str = "") -> dict:
    """Which heads attend to a span of the input (e.g. the answer): per layer and head, the attention the last token gives the span's tokens vs the rest of the text the span is in (the Differential Transformer paper's attention to answer vs attention noise), in every reading.

    Args:
        text: the input text (a QA question when text_pair holds the context)
        text_pair: a second text read after the first, e.g. the QA context; "" for none
        source: the model: a bundled name (diffllama-lm, llama-lm, ...), a local checkpoint directory or a hub id owner/name
        task: the head the model is loaded with: "generation", "classification", "qa" or "tagging"
        span: the span, typed exactly as it occurs (same case) in text_pair when one is given, else in text; its first occurrence is measured
        kind: the map: "" for the model's own ("diff", A1 − λ·A2, for DiffLlama; "softmax" otherwise), or "a1" / "a2" for a DiffLlama's two softmax maps

    Returns:
        attention_to_span[reading][layer][head] and attention_noise[reading][layer][head] for the readings absolute (share of the row's magnitude, in [0, 1]; the default), normalised and signed (equal for softmax maps); top_heads: the heads with the most attention to the span in the absolute reading; span_tokens [start, end) and their tokens; query, the last token's position and token; definitions of every measure; arch, kind, lambdas (λ per layer for DiffLlama), truncated_from
    """
    if not span.strip():
        raise ValueError("span is empty; give the span to measure: text that occurs in the input, e.g. the answer")
    trace = _trace(text, text_pair, source, task)
    sequence = 1 if text_pair else 0
    reference = analysis.find_reference(text_pair if sequence else text, span, sequence, "marked span")
    allocation = analysis.reference_allocation(trace, reference, kind=kind or None)
    absolute = allocation.answer_mass[analysis.READINGS[0]]  # [L, H]
    ranked = np.argsort(-absolute, axis=None, kind="stable")[:TOP_HEADS]
    top = [{"layer": int(layer), "head": int(head), "attention_to_span": float(absolute[layer, head]),
            "attention_noise": float(allocation.noise_mass[analysis.READINGS[0]][layer, head])}
           for layer, head in zip(*np.unravel_index(ranked, absolute.shape))]
    start, end = allocation.answer
    query = allocation.query_positions[0]
    return {"arch": trace.arch, "kind": allocation.kind, "lambdas": trace.lambdas, "truncated_from": trace.truncated_from,
            "span_tokens": [start, end], "span_token_texts": trace.tokens[start:end],
            "query": {"position": query, "token": trace.tokens[query]},
            "attention_to_span": {r: m.tolist() for r, m in allocation.answer_mass.items()},
            "attention_noise": {r: m.tolist() for r, m in allocation.noise_mass.items()},
            "top_heads": top, "caveat": allocation.caveat,
            "definitions": {name: analysis.measures.MEASURES[name].text for name in SPAN_MEASURES}}


TOOLS = (attention_map, attention_region, attention_to_span)  # stateless: API endpoints, and MCP tools when on


def build() -> None:
    """Register the endpoints (inside the app's Blocks), queued with every other model run."""
    for fn in TOOLS:
        gr.api(fn, api_name=fn.__name__, concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY)
