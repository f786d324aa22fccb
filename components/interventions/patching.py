"""Activation patching clean → corrupted: the recovered share per head and per residual position."""

from __future__ import annotations

import gradio as gr
import numpy as np
from plotly.subplots import make_subplots

from diffllama.analysis import measures

from .. import figures
from ..errors import user_errors
from ..model_queue import gpu, model_queue
from ..safe_text import for_markdown
from .calls import SLOTS, patching
from .plots import heat_trace, layout, stamp


@user_errors
@gpu
def patching_view(clean: str, corrupted: str, answer: str, foil: str, source_a: str, source_b: str):
    figures_out, notes = [], []
    for slot, source in zip(SLOTS, (source_a, source_b)):
        result = patching(source, clean, corrupted, answer, foil)
        figure = make_subplots(rows=1, cols=2, column_widths=[0.3, 0.7], horizontal_spacing=0.08,
                               subplot_titles=("each head's output", "residual entering each layer, by position"))
        count = result.heads.shape[1]
        figure.add_trace(heat_trace(result.heads, list(range(count)), [f"head {h}" for h in range(count)], "recovered", 1.0),
                         row=1, col=1)
        patched = np.flatnonzero(~np.isnan(result.residual).all(axis=0))  # positions from the first difference on
        labels = [f"{p} {result.tokens[p]}" for p in patched]
        figure.add_trace(heat_trace(result.residual[:, patched], list(range(len(patched))), labels, "recovered", 1.0,
                                     showscale=False), row=1, col=2)
        figure.update_xaxes(title_text="head", dtick=1, col=1)
        figure.update_xaxes(tickvals=list(range(len(patched))), ticktext=[figures.plotly_text(t) for t in labels], col=2)
        foil_text = f" − {figures.plotly_text(result.foil)}" if result.foil else ""
        layout(figure, f"Model {slot}: recovered share of m = logit {figures.plotly_text(result.answer)}{foil_text}<br>"
                        f"(clean {result.metric_clean:.2f}, corrupted {result.metric_corrupted:.2f})")
        figures_out.append(stamp(figure, {slot: source}, {"clean": clean, "corrupted": corrupted, "answer": answer, "foil": foil}))
        if result.note:
            notes.append(f"Model {slot}: {for_markdown(result.note)}")
    return "\n\n".join(notes) or measures.markdown("recovered share"), figures_out[0], figures_out[1]



def section(clean: gr.Textbox, answer: gr.Textbox, sources: list[gr.Dropdown], corrupted_text: str, foil_text: str) -> None:
    """``clean``: the tab's input; ``corrupted_text``, ``foil_text``: the example's corrupted twin and its answer."""
    with gr.Accordion("Activation patching clean → corrupted", open=False):
        with gr.Row():
            corrupted = gr.Textbox(corrupted_text, lines=4, label="corrupted input (same token length as the input)")
            foil = gr.Textbox(foil_text, label="foil: the corrupted input's answer (empty: the answer's logit alone)")
        run = gr.Button("Patch", variant="primary")
        out = gr.Markdown()
        with gr.Row():
            plot_a, plot_b = gr.Plot(), gr.Plot()
    run.click(patching_view, [clean, corrupted, answer, foil, *sources], [out, plot_a, plot_b],
              api_name="interventions_patching", **model_queue())
