"""The backend calls the Interventions views and tools share: a model and its trace, the answer's token,
parsed λ tables and head lists, patching and the quantized comparison, and records as JSON."""

from __future__ import annotations

import math

import numpy as np

from diffllama import interventions, limits

from ..exports import plain
from ..model_slots import CACHE

TASK = "generation"
SLOTS = ("A", "B")


def model_and_trace(source: str, text: str):
    limits.check_text(text)
    lens = CACHE.get(source, TASK)
    return lens, lens.trace(text)


def answer_token(lens, text: str, answer: str) -> int | None:
    limits.check_length(answer or "", "answer")
    return interventions.answer_id(lens, text, answer or "")


def parse_lambdas(table) -> dict[int, float]:
    """``{layer: λ'}`` from rows ``[layer, λ']`` (a table or a list of pairs); rows with an empty λ' are left out."""
    rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
    values = {}
    for row in rows:
        if len(row) < 2 or row[1] is None or str(row[1]).strip() in ("", "nan"):
            continue
        try:
            layer, value = int(float(row[0])), float(row[1])
        except (TypeError, ValueError):
            raise ValueError(f"λ per layer: each row is a layer number and a value, e.g. [0, -1.4]; got {row!r}") from None
        values[layer] = value
    return values


def parse_heads(text: str) -> list[tuple[int, int]]:
    """Heads typed as ``layer.head`` separated by commas or spaces: ``"1.0, 2.3"``."""
    heads = []
    for part in (text or "").replace(",", " ").split():
        layer, _, head = part.partition(".")
        if not (layer.isdigit() and head.isdigit()):
            raise ValueError(f"heads: write each as layer.head (e.g. 1.0, 2.3); got {part!r}")
        heads.append((int(layer), int(head)))
    if not heads:
        raise ValueError("heads: name at least one, as layer.head (e.g. 1.0)")
    return heads


def as_json(record) -> dict:
    """A record as JSON: NaN (an undefined share) as null."""
    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return clean(plain(record))



def patching(source: str, clean: str, corrupted: str, answer: str, foil: str):
    limits.check_text(corrupted, "corrupted text")
    lens, clean_trace = model_and_trace(source, clean)
    token = answer_token(lens, clean, answer)
    if token is None:
        token = int(np.argmax(clean_trace.logits[-1].numpy()))
    return interventions.activation_patching(lens, clean_trace, lens.trace(corrupted, what="corrupted text"), token,
                                             answer_token(lens, corrupted, foil))



def quantized(source: str, scheme: str, text: str, answer: str):
    if scheme not in interventions.SCHEMES:
        raise ValueError(f"scheme {scheme!r} is not a quantization; choose one of {', '.join(interventions.SCHEMES)}")
    lens, _ = model_and_trace(source, text)
    quantized = CACHE.get(f"{interventions.split_source(source)[0]}#{scheme}", TASK)
    return interventions.compare_quantized(lens, quantized, text, answer_token(lens, text, answer))
