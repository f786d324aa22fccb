"""The logit lens: each layer's residual at the last token through the final norm and output head."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from diffllama import interventions

from .. import figures
from ..errors import user_errors
from ..model_queue import gpu, model_queue
from ..safe_text import for_markdown
from .calls import SLOTS, answer_token, model_and_trace
from .plots import stamp


@user_errors
@gpu
def lens_view(text: str, answer: str, source_a: str, source_b: str):
    figure = make_subplots(rows=1, cols=2, subplot_titles=SLOTS, shared_yaxes=True)
    lines = []
    for col, (slot, source) in enumerate(zip(SLOTS, (source_a, source_b)), start=1):
        lens, trace = model_and_trace(source, text)
        result = interventions.logit_lens(lens, trace, answer_token(lens, text, answer))
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
    return "\n\n".join(lines), stamp(figure, {"A": source_a, "B": source_b}, {"text": text, "answer": answer})



def section(text: gr.Textbox, answer: gr.Textbox, sources: list[gr.Dropdown]) -> None:
    with gr.Accordion("Logit lens", open=False):
        run = gr.Button("Read each layer", variant="primary")
        out = gr.Markdown()
        plot = gr.Plot()
    run.click(lens_view, [text, answer, *sources], [out, plot], api_name="interventions_lens", **model_queue())
