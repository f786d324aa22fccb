"""λ per layer: rerun each DiffLlama slot with λ set in some layers, or every λ scaled, and read the answer."""

from __future__ import annotations

import gradio as gr

from diffllama import interventions

from ..errors import user_errors
from ..model_queue import gpu, model_queue
from ..model_slots import CACHE
from ..safe_text import for_markdown
from .calls import SLOTS, TASK, answer_token, model_and_trace, parse_lambdas
from .plots import readout


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
        lens, trace = model_and_trace(source, text)
        if trace.lambdas is None:
            parts.append(f"**Model {slot}** ({for_markdown(source)}): {lens.arch} has no λ (standard attention).")
            continue
        result = interventions.set_lambdas(lens, trace, values, scale, answer_token(lens, text, answer))
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



def section(text: gr.Textbox, answer: gr.Textbox, sources: list[gr.Dropdown]) -> None:
    with gr.Accordion("λ per layer (DiffLlama)", open=True):
        table = gr.Dataframe(headers=["layer", "λ'"], datatype=["number", "number"], column_count=(2, "fixed"),
                             row_count=(1, "dynamic"), value=[[0, 0.0]], interactive=True,
                             label="layers to set and their new λ (any real number; empty λ' keeps the layer's own)")
        with gr.Row():
            scale = gr.Textbox("", label="or scale every layer's λ by (e.g. -1 or 0.5; empty: use the table)")
            fill = gr.Button("Fill with the learned λ")
            run = gr.Button("Run λ", variant="primary")
        out = gr.Markdown()
    fill.click(learned_lambdas, sources, table, api_name="interventions_learned_lambdas", **model_queue())
    run.click(lambdas_view, [text, answer, *sources, table, scale], out, api_name="interventions_lambdas", **model_queue())
