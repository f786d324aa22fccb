"""A model against its quantized copy: output KL, map change per layer, the answer and activation outliers."""

from __future__ import annotations

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from diffllama import interventions

from .. import figures
from ..errors import user_errors
from ..model_queue import gpu, model_queue
from ..safe_text import for_markdown
from .calls import SLOTS, quantized
from .plots import stamp


@user_errors
@gpu
def quantization_view(text: str, answer: str, source_a: str, source_b: str, scheme: str):
    rows, lines = [], []
    figure = make_subplots(rows=1, cols=2, subplot_titles=("mean |Δ map| per layer", "KL per position"))
    for slot, source in zip(SLOTS, (source_a, source_b)):
        result = quantized(source, scheme, text, answer)
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
    return ("\n\n".join(lines), stamp(figure, {"A": source_a, "B": source_b}, {"text": text, "scheme": scheme}), rows)



def section(text: gr.Textbox, answer: gr.Textbox, sources: list[gr.Dropdown]) -> None:
    with gr.Accordion("Quantized copy", open=False):
        with gr.Row():
            scheme = gr.Radio(list(interventions.SCHEMES), value="int8", label="quantization (torchao)")
            run = gr.Button("Compare", variant="primary")
        out = gr.Markdown()
        plot = gr.Plot()
        outliers = gr.Dataframe(headers=["model", "weights", "values", "top-1", "top-10", "median"], label="activation outliers")
    run.click(quantization_view, [text, answer, *sources, scheme], [out, plot, outliers],
              api_name="interventions_quantization", **model_queue())
