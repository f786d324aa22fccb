"""Head ablation: heads ablated together, and the map of each head's effect alone on the answer."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from diffllama import interventions
from diffllama.analysis import measures

from .. import figures
from ..errors import user_errors
from ..model_queue import gpu, model_queue
from .calls import SLOTS, answer_token, model_and_trace, parse_heads
from .plots import heat_trace, layout, readout, stamp


@user_errors
@gpu
def heads_view(text: str, answer: str, source_a: str, source_b: str, heads: str, mode: str):
    parts, maps = [], []
    for slot, source in zip(SLOTS, (source_a, source_b)):
        lens, trace = model_and_trace(source, text)
        token = answer_token(lens, text, answer)
        if heads.strip():
            parts.append(readout(slot, source, interventions.ablate_heads(lens, trace, parse_heads(heads), mode, token)))
        effects = interventions.head_effects(lens, trace, token, mode)
        title = (f"Model {slot}: answer {figures.plotly_text(effects.answer)} (p = {effects.probability:.3f}),<br>"
                 f"logit change when each head is {mode}-ablated alone")
        count = effects.logit_change.shape[1]
        figure = go.Figure(heat_trace(effects.logit_change, list(range(count)), [f"head {h}" for h in range(count)], "Δ logit"))
        figure.update_xaxes(title_text="head", dtick=1)
        maps.append(stamp(layout(figure, title), {slot: source}, {"text": text, "answer": answer}))
    note = measures.markdown("answer logit change")
    return "\n\n".join(parts) or note, maps[0], maps[1]



def section(text: gr.Textbox, answer: gr.Textbox, sources: list[gr.Dropdown]) -> None:
    with gr.Accordion("Head ablation", open=False):
        with gr.Row():
            heads = gr.Textbox("", label="heads ablated together, layer.head (e.g. 1.0, 2.3); empty: the map only")
            mode = gr.Radio(list(interventions.HEAD_MODES), value="zero", label="ablation")
            run = gr.Button("Ablate", variant="primary")
        out = gr.Markdown()
        with gr.Row():
            map_a, map_b = gr.Plot(), gr.Plot()
    run.click(heads_view, [text, answer, *sources, heads, mode], [out, map_a, map_b], api_name="interventions_heads",
              **model_queue())
