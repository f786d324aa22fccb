"""Activation patching, clean → corrupted: run the corrupted input with one activation taken from the
clean run — one head's output (at every position), or the residual stream entering one layer at one
position — and measure how much of the clean − corrupted difference of the answer's logit (minus a
foil's, when one is given) at the last position comes back."""

from __future__ import annotations

import re

import numpy as np
import torch
from transformers import AutoTokenizer

from ..tokens import display_tokens
from ..trace import Trace
from .core import HeadEdit, Intervention, ResidualEdit, batched, head_shape, require_language_model, run, token_name
from .records import PatchingResult

MAX_RESIDUAL_POSITIONS = 64  # residual patching covers at most this many last positions per layer
NO_DIFFERENCE = 1e-6  # |clean − corrupted| below this: there is nothing to recover, shares are undefined


def clean_head_outputs(lens, trace: Trace) -> dict[int, torch.Tensor]:
    """Each layer's head outputs ``[N, heads, w]`` in ``trace``'s input, as the output projection reads them."""
    recorded: dict[int, torch.Tensor] = {}
    run(lens.model, trace.input_ids, Intervention(record=recorded), last_only=True)
    return {layer: outputs[0] for layer, outputs in recorded.items()}


def activation_patching(lens, clean: Trace, corrupted: Trace, token_id: int, foil_id: int | None = None) -> PatchingResult:
    """Every head's output, and the residual entering every layer at each position from the first
    differing token on (earlier positions hold the same values in both runs; at most the last
    ``MAX_RESIDUAL_POSITIONS``), patched clean → corrupted one at a time; the recovered share
    ``(m_patched − m_corrupted) / (m_clean − m_corrupted)``."""
    require_language_model(lens, "activation patching")
    if clean.seq_len != corrupted.seq_len:
        raise ValueError(f"the clean and corrupted inputs tokenise to {clean.seq_len} and {corrupted.seq_len} tokens; "
                         "patching needs equal lengths: replace a word by one of the same token count")
    vocabulary = clean.logits.shape[-1]
    for name, token in (("answer", token_id), ("foil", foil_id)):
        if token is not None and not 0 <= token < vocabulary:
            raise ValueError(f"{name} token {token} is outside the vocabulary of {vocabulary} tokens")

    def metric(logits: torch.Tensor) -> float:
        return float(logits[token_id] - (logits[foil_id] if foil_id is not None else 0.0))

    n, layers = clean.seq_len, clean.num_layers
    heads = head_shape(lens.model)[0]
    differing = [p for p in range(n) if clean.input_ids[p] != corrupted.input_ids[p]]
    first = differing[0] if differing else n
    sources = clean_head_outputs(lens, clean)
    head_variants = [[HeadEdit(layer, head, "patch", source=sources[layer][:, head])]
                     for layer in range(layers) for head in range(heads)]
    start = max(first, n - MAX_RESIDUAL_POSITIONS)
    positions = range(start, n)
    residual_variants = [[ResidualEdit(layer, p, clean.hidden_states[layer][0, p])] for layer in range(layers) for p in positions]
    logits = batched(lens.model, corrupted.input_ids, head_variants + residual_variants)
    metrics = np.array([metric(row) for row in logits], dtype=np.float64)
    m_clean, m_corrupted = metric(clean.logits[-1]), metric(corrupted.logits[-1])
    gap = m_clean - m_corrupted
    notes = []
    if abs(gap) < NO_DIFFERENCE:
        notes.append("the clean and corrupted inputs give the same metric, so there is nothing to recover: the shares "
                     "are undefined (the patched metrics are still shown)")
    if start > first:
        notes.append(f"the inputs differ from position {first} on; the residual is patched at the last "
                     f"{MAX_RESIDUAL_POSITIONS} positions only ({start}..{n - 1})")
    note = "; ".join(notes) or None
    recovered = (metrics - m_corrupted) / gap if abs(gap) >= NO_DIFFERENCE else np.full_like(metrics, np.nan)
    split = layers * heads
    residual, residual_metric = np.full((layers, n), np.nan), np.full((layers, n), np.nan)
    residual[:, start:] = recovered[split:].reshape(layers, n - start)
    residual_metric[:, start:] = metrics[split:].reshape(layers, n - start)
    return PatchingResult(
        answer=token_name(lens, token_id), foil=None if foil_id is None else token_name(lens, foil_id),
        metric_clean=m_clean, metric_corrupted=m_corrupted,
        heads=recovered[:split].reshape(layers, heads), heads_metric=metrics[:split].reshape(layers, heads),
        residual=residual, residual_metric=residual_metric,
        tokens=display_tokens(clean.tokens, clean.sequence_ids),
        corrupted_tokens=display_tokens(corrupted.tokens, corrupted.sequence_ids), first_difference=first, note=note)


NEEDLE = re.compile(r"The magic number of (.+?) is (\d+)\.")
QUESTION = re.compile(r"What is the magic number of (.+)\?")


def retrieval_pair(context: str, question: str, lead_in: str, tokenizer) -> tuple[str, str, str, str] | None:
    """A clean / corrupted pair (``tokenizer``: a tokenizer, or a checkpoint directory to read one from) from a retrieval input (``diffllama.family.corpus.retrieval``): the clean
    prompt asks for one city's magic number, the corrupted one for another needle city's (the first
    whose prompt has the same token count and whose number starts with another token). Returns
    (clean, corrupted, answer, foil), the two numbers with their leading space; None when no city fits."""
    needles, asked = dict(NEEDLE.findall(context)), QUESTION.fullmatch(question)
    if asked is None or asked.group(1) not in needles:
        return None
    city = asked.group(1)
    if isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    clean = f"{context} {question} {lead_in}"
    length = len(tokenizer(clean)["input_ids"])
    first = lambda number: tokenizer(" " + number, add_special_tokens=False)["input_ids"][0]  # noqa: E731
    for other, number in needles.items():
        corrupted = f"{context} {question.replace(city, other)} {lead_in.replace(city, other)}"
        if first(number) != first(needles[city]) and len(tokenizer(corrupted)["input_ids"]) == length:
            return clean, corrupted, " " + needles[city], " " + number
    return None
