"""Stateless API endpoints: attention values as numbers for any text, straight from model sources,
with no prior run in the session and nothing kept after the call."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis, limits

from .common import CACHE, MODEL_CONCURRENCY, MODEL_QUEUE, gpu, user_errors


def _trace(text: str, text_pair: str, source: str, task: str):
    """One forward pass of ``source`` loaded for ``task`` over ``text`` (and ``text_pair``: QA's context)."""
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
                  size: int = 512) -> dict:
    """One head's attention map of ``text`` (and ``text_pair``, e.g. question + context) under the
    model ``source`` (a bundled name, directory or hub id) with its ``task`` head ("generation",
    "classification", "qa", "tagging"). ``kind``: "diff", "a1", "a2" for DiffLlama, "softmax" for
    Llama / Persimmon. Returns ``values[i][j]``, the attention query block i gives key block j, where
    block i covers tokens ``edges[i]:edges[i+1]`` (single tokens unless the input is longer than
    ``size``), with ``labels`` per block, the tokens, and λ of the layer for "diff"."""
    trace = _trace(text, text_pair, source, task)
    view = analysis.attention_map(trace, int(layer), int(head), kind, int(size))
    return {**_about(trace, view.layer, view.head, view.kind), "values": view.values.tolist(), "edges": view.edges,
            "labels": view.labels}


@user_errors
@gpu
def attention_region(text: str, text_pair: str, source: str, task: str, layer: int, head: int, kind: str,
                     query_start: int, query_end: int, key_start: int, key_end: int) -> dict:
    """Query tokens ``query_start:query_end`` × key tokens ``key_start:key_end`` of one head's map at
    full resolution (at most 256 a side), for any input length; otherwise as ``attention_map``."""
    trace = _trace(text, text_pair, source, task)
    region = analysis.attention_region(trace, int(layer), int(head), kind, (int(query_start), int(query_end)),
                                       (int(key_start), int(key_end)))
    return {**_about(trace, region.layer, region.head, region.kind), "values": region.values.tolist(),
            "rows": list(region.rows), "cols": list(region.cols), "row_labels": region.row_labels,
            "col_labels": region.col_labels}


def build() -> None:
    """Register the endpoints (inside the app's Blocks), queued with every other model run."""
    for fn in (attention_map, attention_region):
        gr.api(fn, api_name=fn.__name__, concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY)
