"""The Interventions tools: JSON endpoints for any text and model, no session needed, also the app's MCP
tools (``components.api``). Each docstring is the tool's description."""

from __future__ import annotations

from diffllama import interventions

from ..errors import user_errors
from ..model_queue import gpu
from .calls import answer_token, as_json, model_and_trace, parse_heads, parse_lambdas, patching, quantized


@user_errors
@gpu
def set_lambdas(text: str, source: str, lambdas: list, scale: float | None = None, answer: str = "") -> dict:
    """Rerun a DiffLlama language model with λ replaced in some layers (any value, negative included), or every layer's λ scaled, and read what changes: the answer's probability and rank first, then the KL per position.

    Args:
        text: the input text, e.g. a retrieval prompt ending in "The magic number of Lyon is"
        source: a DiffLlama language model: a bundled name (diffllama-lm), a directory or hub id; add #int8 or #int8-dynamic for its quantized copy
        lambdas: [layer, λ'] pairs, e.g. [[0, -1.4], [2, 0.0]] (0 switches the subtraction off in that layer); [] when scale is given
        scale: multiply every layer's learned λ by this instead (null to use lambdas)
        answer: the text that should come next (e.g. " 4821"); "" reads the model's own top prediction

    Returns:
        description; answer: token, probability [before, after], rank [before, after] (1 = top), logit [before, after]; outputs: kl, original and ablated top prediction per position
    """
    lens, trace = model_and_trace(source, text)
    values = None if scale is not None else parse_lambdas(lambdas)
    return as_json(interventions.set_lambdas(lens, trace, values, scale, answer_token(lens, text, answer)))


@user_errors
@gpu
def ablate_heads(text: str, source: str, heads: str, mode: str = "zero", answer: str = "") -> dict:
    """Rerun a model with some attention heads ablated (output set to zero, or to its mean over the input's positions) and read what changes, the answer first. A DiffLlama head is a differential head: both of its softmax maps.

    Args:
        text: the input text
        source: a language model (DiffLlama, Llama or Persimmon): a bundled name (diffllama-lm, llama-lm), a directory or hub id
        heads: the heads ablated together, as layer.head separated by commas, e.g. "1.0, 2.3"
        mode: "zero" or "mean"
        answer: the text that should come next; "" reads the model's own top prediction

    Returns:
        description; answer: token, probability [before, after], rank [before, after], logit [before, after]; outputs: kl and top predictions per position
    """
    lens, trace = model_and_trace(source, text)
    return as_json(interventions.ablate_heads(lens, trace, parse_heads(heads), mode, answer_token(lens, text, answer)))


@user_errors
@gpu
def head_ablation_map(text: str, source: str, answer: str = "", mode: str = "zero") -> dict:
    """For every layer and head, the change of the answer's logit and probability at the last position when that head alone is ablated.

    Args:
        text: the input text
        source: a language model: a bundled name (diffllama-lm, llama-lm), a directory or hub id
        answer: the text that should come next; "" reads the model's own top prediction
        mode: "zero" or "mean"

    Returns:
        answer (its token), probability (without ablation), logit_change[layer][head], probability_change[layer][head]
    """
    lens, trace = model_and_trace(source, text)
    return as_json(interventions.head_effects(lens, trace, answer_token(lens, text, answer), mode))



@user_errors
@gpu
def patch_activations(clean: str, corrupted: str, source: str, answer: str = "", foil: str = "") -> dict:
    """Activation patching: run the corrupted input with one activation taken from the clean run — each head's output, and the residual entering each layer at each position — and report the recovered share of the clean − corrupted logit difference of the answer (minus the foil's).

    Args:
        clean: the clean input, e.g. a prompt asking for Lyon's number
        corrupted: the corrupted input, of the same token length (e.g. another city of the same token count)
        source: a language model: a bundled name (diffllama-lm, llama-lm), a directory or hub id
        answer: the clean answer's text (e.g. " 4821"); "" takes the model's top prediction on the clean input
        foil: the corrupted answer's text (e.g. " 1234"); "" measures the answer's logit alone

    Returns:
        metric_clean, metric_corrupted; heads[layer][head] recovered share (null when undefined); residual[layer][position]; tokens; first_difference; note
    """
    return as_json(patching(source, clean, corrupted, answer, foil))


@user_errors
@gpu
def logit_lens(text: str, source: str, answer: str = "") -> dict:
    """The logit lens at the last token: what the residual stream after each layer predicts through the model's final norm and output head; the answer's probability and rank per layer, and the layer where it emerges.

    Args:
        text: the input text
        source: a language model: a bundled name (diffllama-lm, llama-lm), a directory or hub id
        answer: the text that should come next; "" reads the model's own final prediction

    Returns:
        answer, probability[entry], rank[entry] (entry 0 = the embeddings, entry e = after layer e − 1, layers counted from 0), top[entry], top_probability[entry], emergence: the first entry from which the answer stays on top (null if never)
    """
    lens, trace = model_and_trace(source, text)
    return as_json(interventions.logit_lens(lens, trace, answer_token(lens, text, answer)))


@user_errors
@gpu
def compare_quantized(text: str, source: str, scheme: str = "int8", answer: str = "") -> dict:
    """A model against its quantized copy (torchao through transformers) on one input: output KL and top-1 agreement per position, the answer, λ and the attention maps' change per layer, and activation outliers (Table 5) of both.

    Args:
        text: the input text
        source: a language model: a bundled name (diffllama-lm, llama-lm), a directory or hub id
        scheme: "int8" (weight-only), "int8-dynamic" (int8 weights and activations) or "int4" (where its kernels exist)
        answer: the text that should come next; "" reads the full model's own top prediction

    Returns:
        answer (full → quantized), kl per position, top1_agreement, lambdas [full, quantized], map_change and map_change_max per layer, outliers [full, quantized]
    """
    return as_json(quantized(source, scheme, text, answer))



TOOLS = (set_lambdas, ablate_heads, head_ablation_map, patch_activations, logit_lens, compare_quantized)
