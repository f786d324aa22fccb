"""Interventions tab: change one forward pass and read what the answer does — λ per layer, head
ablation (and the map of each head's effect), activation patching clean → corrupted, the logit lens,
and a model against its quantized copy; A and B side by side. Each view is an API endpoint; the
``TOOLS`` (JSON, stateless) are also the app's MCP tools (``components.api``)."""

from __future__ import annotations

import math

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from diffllama import interventions, limits
from diffllama.analysis import measures
from diffllama.interventions.patching import retrieval_pair
from diffllama.provenance import provenance
from diffllama.registry import bundled_models
from diffllama.study import retrieval_examples
from diffllama.study.measure import prompt

from . import figures
from .common import CACHE, MODEL_CONCURRENCY, MODEL_QUEUE, default_sources, gpu, plain, user_errors
from .safe_text import for_markdown

TASK = "generation"
SLOTS = ("A", "B")
MEASURES = ("answer probability and rank", "answer logit change", "recovered share", "logit lens", "output KL",
            "top-1 agreement", "map change")


# --- the backend calls, shared by the views and the tools ----------------------------------------------------
def _model_and_trace(source: str, text: str):
    limits.check_text(text)
    lens = CACHE.get(source, TASK)
    return lens, lens.trace(text)


def _answer(lens, text: str, answer: str) -> int | None:
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


def _json(record) -> dict:
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


# --- tools: JSON endpoints, also MCP tools -------------------------------------------------------------------
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
    lens, trace = _model_and_trace(source, text)
    values = None if scale is not None else parse_lambdas(lambdas)
    return _json(interventions.set_lambdas(lens, trace, values, scale, _answer(lens, text, answer)))


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
    lens, trace = _model_and_trace(source, text)
    return _json(interventions.ablate_heads(lens, trace, parse_heads(heads), mode, _answer(lens, text, answer)))


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
    lens, trace = _model_and_trace(source, text)
    return _json(interventions.head_effects(lens, trace, _answer(lens, text, answer), mode))


def _patching(source: str, clean: str, corrupted: str, answer: str, foil: str):
    limits.check_text(corrupted, "corrupted text")
    lens, clean_trace = _model_and_trace(source, clean)
    token = _answer(lens, clean, answer)
    if token is None:
        token = int(np.argmax(clean_trace.logits[-1].numpy()))
    return interventions.activation_patching(lens, clean_trace, lens.trace(corrupted), token,
                                             _answer(lens, corrupted, foil))


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
    return _json(_patching(source, clean, corrupted, answer, foil))


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
    lens, trace = _model_and_trace(source, text)
    return _json(interventions.logit_lens(lens, trace, _answer(lens, text, answer)))


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
    return _json(_quantized(source, scheme, text, answer))


def _quantized(source: str, scheme: str, text: str, answer: str):
    if scheme not in interventions.SCHEMES:
        raise ValueError(f"scheme {scheme!r} is not a quantization; choose one of {', '.join(interventions.SCHEMES)}")
    lens, _ = _model_and_trace(source, text)
    quantized = CACHE.get(f"{interventions.split_source(source)[0]}#{scheme}", TASK)
    return interventions.compare_quantized(lens, quantized, text, _answer(lens, text, answer))


TOOLS = (set_lambdas, ablate_heads, head_ablation_map, patch_activations, logit_lens, compare_quantized)


# --- views -------------------------------------------------------------------------------------------------
def readout(slot: str, source: str, result) -> str:
    """The answer first (before → after), then the rest, as Markdown (visitor text escaped)."""
    lines = [f"**Model {slot}** ({for_markdown(source)}): {result.description}"]  # the description is the app's own words and numbers
    answer = result.answer
    if answer is not None:
        lines.append(f"- answer {for_markdown(answer.token)} ({answer.chosen}): probability "
                     f"{answer.probability[0]:.4f} → **{answer.probability[1]:.4f}**, rank {answer.rank[0]} → "
                     f"**{answer.rank[1]}**, logit {answer.logit[0]:.2f} → {answer.logit[1]:.2f}")
    outputs = result.outputs
    worst = int(np.argmax(outputs.kl))
    lines.append(f"- {sum(outputs.changed)} of {len(outputs.changed)} top predictions change; mean KL "
                 f"{np.mean(outputs.kl):.3g} nats, largest {outputs.kl[worst]:.3g} at position {worst} "
                 f"{for_markdown(outputs.tokens[worst])}")
    return "\n".join(lines)


def _stamp(figure: go.Figure, sources: dict, inputs: dict) -> go.Figure:
    return figures.provenance_note(figure, provenance(sources, inputs))


def _heat_trace(values: np.ndarray, x: list[int], labels: list[str], colour_title: str, limit: float | None = None,
                showscale: bool = True) -> go.Heatmap:
    """Rows = layers, columns ``x`` (heads or positions, ``labels`` for hover), on a diverging scale centred at 0;
    NaN (not measured, or undefined) left blank."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    limit = limit or max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-6)
    return go.Heatmap(z=np.where(np.isfinite(values), values, None), x=x, y=list(range(values.shape[0])),
                      colorscale=figures.DIVERGING, zmin=-limit, zmax=limit, zmid=0, showscale=showscale,
                      customdata=np.array([[figures.plotly_text(label) for label in labels]] * values.shape[0], dtype=object),
                      colorbar=dict(title=colour_title), hovertemplate="layer %{y} · %{customdata}<br>%{z:.3f}<extra></extra>")


def _layout(figure: go.Figure, title: str) -> go.Figure:
    figure.update_yaxes(title_text="layer", autorange="reversed", dtick=1)
    figure.update_layout(title=title, height=340, margin=dict(l=10, r=10, t=80, b=10))
    return figure


@user_errors
@gpu
def lambdas_view(text: str, answer: str, source_a: str, source_b: str, table, scale: str):
    """λ per layer (or every λ scaled) in each DiffLlama slot; a slot with a standard-attention model is said so."""
    try:
        scale = float(scale) if str(scale or "").strip() else None
    except ValueError:
        raise ValueError(f"scale: give a number (e.g. -1 or 0.5) or leave it empty to use the table; got {scale!r}") from None
    values, parts = (parse_lambdas(table) if scale is None else None), []
    for slot, source in zip(SLOTS, (source_a, source_b)):
        lens, trace = _model_and_trace(source, text)
        if trace.lambdas is None:
            parts.append(f"**Model {slot}** ({for_markdown(source)}): {lens.arch} has no λ (standard attention).")
            continue
        result = interventions.set_lambdas(lens, trace, values, scale, _answer(lens, text, answer))
        parts.append(readout(slot, source, result))
    return "\n\n".join(parts)


@user_errors
@gpu
def learned_lambdas(source_a: str, source_b: str):
    """The learned λ per layer of the first DiffLlama slot, as the table's starting values."""
    for source in (source_a, source_b):
        learned = interventions.learned_lambdas(CACHE.get(source, TASK))
        if learned is not None:
            return [[layer, round(value, 4)] for layer, value in enumerate(learned)]
    raise ValueError("neither slot holds a DiffLlama: λ per layer needs one")


@user_errors
@gpu
def heads_view(text: str, answer: str, source_a: str, source_b: str, heads: str, mode: str):
    parts, maps = [], []
    for slot, source in zip(SLOTS, (source_a, source_b)):
        lens, trace = _model_and_trace(source, text)
        token = _answer(lens, text, answer)
        if heads.strip():
            parts.append(readout(slot, source, interventions.ablate_heads(lens, trace, parse_heads(heads), mode, token)))
        effects = interventions.head_effects(lens, trace, token, mode)
        title = (f"Model {slot}: answer {figures.plotly_text(effects.answer)} (p = {effects.probability:.3f}),<br>"
                 f"logit change when each head is {mode}-ablated alone")
        count = effects.logit_change.shape[1]
        figure = go.Figure(_heat_trace(effects.logit_change, list(range(count)), [f"head {h}" for h in range(count)], "Δ logit"))
        figure.update_xaxes(title_text="head", dtick=1)
        maps.append(_stamp(_layout(figure, title), {slot: source}, {"text": text, "answer": answer}))
    note = measures.markdown("answer logit change")
    return "\n\n".join(parts) or note, maps[0], maps[1]


@user_errors
@gpu
def patching_view(clean: str, corrupted: str, answer: str, foil: str, source_a: str, source_b: str):
    figures_out, notes = [], []
    for slot, source in zip(SLOTS, (source_a, source_b)):
        result = _patching(source, clean, corrupted, answer, foil)
        figure = make_subplots(rows=1, cols=2, column_widths=[0.3, 0.7], horizontal_spacing=0.08,
                               subplot_titles=("each head's output", "residual entering each layer, by position"))
        count = result.heads.shape[1]
        figure.add_trace(_heat_trace(result.heads, list(range(count)), [f"head {h}" for h in range(count)], "recovered", 1.0),
                         row=1, col=1)
        patched = np.flatnonzero(~np.isnan(result.residual).all(axis=0))  # positions from the first difference on
        labels = [f"{p} {result.tokens[p]}" for p in patched]
        figure.add_trace(_heat_trace(result.residual[:, patched], list(range(len(patched))), labels, "recovered", 1.0,
                                     showscale=False), row=1, col=2)
        figure.update_xaxes(title_text="head", dtick=1, col=1)
        figure.update_xaxes(tickvals=list(range(len(patched))), ticktext=[figures.plotly_text(t) for t in labels], col=2)
        foil_text = f" − {figures.plotly_text(result.foil)}" if result.foil else ""
        _layout(figure, f"Model {slot}: recovered share of m = logit {figures.plotly_text(result.answer)}{foil_text}<br>"
                        f"(clean {result.metric_clean:.2f}, corrupted {result.metric_corrupted:.2f})")
        figures_out.append(_stamp(figure, {slot: source}, {"clean": clean, "corrupted": corrupted, "answer": answer, "foil": foil}))
        if result.note:
            notes.append(f"Model {slot}: {for_markdown(result.note)}")
    return "\n\n".join(notes) or measures.markdown("recovered share"), figures_out[0], figures_out[1]


@user_errors
@gpu
def lens_view(text: str, answer: str, source_a: str, source_b: str):
    figure = make_subplots(rows=1, cols=2, subplot_titles=SLOTS, shared_yaxes=True)
    lines = []
    for col, (slot, source) in enumerate(zip(SLOTS, (source_a, source_b)), start=1):
        lens, trace = _model_and_trace(source, text)
        result = interventions.logit_lens(lens, trace, _answer(lens, text, answer))
        entries = ["emb"] + [f"L{layer}" for layer in range(len(result.rank) - 1)]
        hover = [figures.plotly_text(f"rank {r} · top {t} ({p:.3f})") for r, t, p in zip(result.rank, result.top, result.top_probability)]
        figure.add_trace(go.Scatter(x=entries, y=result.probability, mode="lines+markers", name=f"{slot}: P(answer)",
                                    customdata=hover, hovertemplate="%{x}: P = %{y:.4f}<br>%{customdata}<extra></extra>",
                                    line_color=figures.MODEL_COLOURS[slot]), row=1, col=col)
        emerged = "never" if result.emergence is None else entries[result.emergence]
        lines.append(f"**Model {slot}** ({for_markdown(source)}): answer {for_markdown(result.answer)}, rank per layer "
                     f"{' → '.join(map(str, result.rank))}; emerges at **{emerged}**")
    figure.update_yaxes(title_text="P(answer) at the last token", type="log", col=1)
    figure.update_layout(title="Logit lens: each layer's residual through the final norm and output head", height=340,
                         margin=dict(l=10, r=10, t=70, b=10))
    return "\n\n".join(lines), _stamp(figure, {"A": source_a, "B": source_b}, {"text": text, "answer": answer})


@user_errors
@gpu
def quantization_view(text: str, answer: str, source_a: str, source_b: str, scheme: str):
    rows, lines = [], []
    figure = make_subplots(rows=1, cols=2, subplot_titles=("mean |Δ map| per layer", "KL per position"))
    for slot, source in zip(SLOTS, (source_a, source_b)):
        result = _quantized(source, scheme, text, answer)
        colour = figures.MODEL_COLOURS[slot]
        figure.add_trace(go.Bar(x=list(range(len(result.map_change))), y=result.map_change, name=slot, marker_color=colour), row=1, col=1)
        figure.add_trace(go.Scatter(y=result.kl, mode="lines", name=slot, marker_color=colour, showlegend=False), row=1, col=2)
        if result.answer is not None:
            a = result.answer
            lines.append(f"**Model {slot}** ({for_markdown(source)} → {for_markdown(result.quantized)}): answer "
                         f"{for_markdown(a.token)} probability {a.probability[0]:.4f} → **{a.probability[1]:.4f}**, rank "
                         f"{a.rank[0]} → **{a.rank[1]}**; top-1 agreement {result.top1_agreement:.3f}, mean KL {np.mean(result.kl):.3g}")
        for which, stats in zip(("full", scheme), result.outliers):
            for kind in ("attention_logits", "hidden_states"):
                row = getattr(stats, kind)
                rows.append([slot, which, kind.replace("_", " "), *(round(row[k], 3) for k in ("top-1", "top-10", "median"))])
    figure.update_layout(height=320, margin=dict(l=10, r=10, t=70, b=10), title=f"full vs {scheme}")
    return ("\n\n".join(lines), _stamp(figure, {"A": source_a, "B": source_b}, {"text": text, "scheme": scheme}), rows)


def _default_example() -> tuple[str, str, str, str]:
    """A held-out retrieval prompt (seed 1: not the training seed), its corrupted twin and both answers."""
    directories = list(bundled_models(TASK).values())
    example = retrieval_examples(1, fillers=(8,), seed=1)[0]
    pair = directories and retrieval_pair(example.context, example.question, example.lead_in, directories[0])
    return pair or (prompt(example), prompt(example), " " + example.answer, "")


def build():
    with gr.Tab("Interventions"):
        gr.Markdown("Change one forward pass and read what the answer does: λ per layer, head ablation, activation "
                    "patching, the logit lens, quantization. Nothing in a model changes: each intervention applies "
                    "to that request's pass only. Add `#int8` or `#int8-dynamic` to a source for its quantized copy.")
        default_a, default_b = default_sources(TASK)
        clean_text, corrupted_text, answer_text, foil_text = _default_example()
        bundled = list(bundled_models(TASK))
        choices = bundled + [f"{name}#{scheme}" for name in bundled for scheme in interventions.SCHEMES]
        with gr.Row():
            source_a, source_b = (gr.Dropdown(choices, value=default, allow_custom_value=True,
                                              label=f"Model {slot} (bundled, a directory or hub id; #int8 for its quantized copy)")
                                  for slot, default in zip(SLOTS, (default_a, default_b)))
        text = gr.Textbox(clean_text, lines=4, label="input (the clean input for patching)")
        answer = gr.Textbox(answer_text, label="answer: the text that should come next (empty: the model's own prediction)")
        queue = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY)
        with gr.Accordion("λ per layer (DiffLlama)", open=True):
            table = gr.Dataframe(headers=["layer", "λ'"], datatype=["number", "number"], column_count=(2, "fixed"),
                                 row_count=(1, "dynamic"), value=[[0, 0.0]], interactive=True,
                                 label="layers to set and their new λ (any real number; empty λ' keeps the layer's own)")
            with gr.Row():
                scale = gr.Textbox("", label="or scale every layer's λ by (e.g. -1 or 0.5; empty: use the table)")
                fill = gr.Button("Fill with the learned λ")
                run_lambdas = gr.Button("Run λ", variant="primary")
            lambdas_out = gr.Markdown()
        with gr.Accordion("Head ablation", open=False):
            with gr.Row():
                heads = gr.Textbox("", label="heads ablated together, layer.head (e.g. 1.0, 2.3); empty: the map only")
                mode = gr.Radio(list(interventions.HEAD_MODES), value="zero", label="ablation")
                run_heads = gr.Button("Ablate", variant="primary")
            heads_out = gr.Markdown()
            with gr.Row():
                heads_a, heads_b = gr.Plot(), gr.Plot()
        with gr.Accordion("Activation patching clean → corrupted", open=False):
            with gr.Row():
                corrupted = gr.Textbox(corrupted_text, lines=4, label="corrupted input (same token length as the input)")
                foil = gr.Textbox(foil_text, label="foil: the corrupted input's answer (empty: the answer's logit alone)")
            run_patching = gr.Button("Patch", variant="primary")
            patching_out = gr.Markdown()
            with gr.Row():
                patching_a, patching_b = gr.Plot(), gr.Plot()
        with gr.Accordion("Logit lens", open=False):
            run_lens = gr.Button("Read each layer", variant="primary")
            lens_out = gr.Markdown()
            lens_plot = gr.Plot()
        with gr.Accordion("Quantized copy", open=False):
            with gr.Row():
                scheme = gr.Radio(list(interventions.SCHEMES), value="int8", label="quantization (torchao)")
                run_quantized = gr.Button("Compare", variant="primary")
            quantized_out = gr.Markdown()
            quantized_plot = gr.Plot()
            outliers = gr.Dataframe(headers=["model", "weights", "values", "top-1", "top-10", "median"], label="activation outliers")
        gr.Markdown(measures.markdown(*MEASURES))
        fill.click(learned_lambdas, [source_a, source_b], table, api_name="interventions_learned_lambdas", **queue)
        run_lambdas.click(lambdas_view, [text, answer, source_a, source_b, table, scale], lambdas_out,
                          api_name="interventions_lambdas", **queue)
        run_heads.click(heads_view, [text, answer, source_a, source_b, heads, mode], [heads_out, heads_a, heads_b],
                        api_name="interventions_heads", **queue)
        run_patching.click(patching_view, [text, corrupted, answer, foil, source_a, source_b],
                           [patching_out, patching_a, patching_b], api_name="interventions_patching", **queue)
        run_lens.click(lens_view, [text, answer, source_a, source_b], [lens_out, lens_plot], api_name="interventions_lens", **queue)
        run_quantized.click(quantization_view, [text, answer, source_a, source_b, scheme],
                            [quantized_out, quantized_plot, outliers], api_name="interventions_quantization", **queue)
