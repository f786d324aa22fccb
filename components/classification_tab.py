"""Classification tab: label probabilities for A and B, and what the pooled token attended to."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis

from . import attention_panel, run_store
from .common import CACHE, gpu, model_slots, plain, slot_info, token_heat, user_errors

TASK = "classification"
EXAMPLES = ["The film was not bad at all. We were in Lyon. I would recommend it.",
            "It was April. The hotel was disappointing. I would not recommend it.",
            "I went with Anna. The coffee was not great."]


@user_errors
@gpu
def classify(text: str, source_a: str, source_b: str, request: gr.Request = None):
    models = {"A": source_a, "B": source_b}
    labels, heats, records, traces = [], [], {}, {}
    with run_store.recording(request, TASK) as keep:
        for slot, source in models.items():
            model = CACHE.get(source, TASK)
            result = model.classify(text)
            trace = traces[slot] = result.trace
            # what the pooled token (the one the head reads) attended to: the last layer, mean over heads
            row = analysis.attention_row(trace, trace.num_layers - 1, None, trace.kinds[0], result.pooled_index)
            labels.append({s.label: s.probability for s in result.labels})
            heats.append(token_heat(text, trace.offsets, row))
            records[slot] = plain(result)
        keep(run_store.Run(TASK, models, traces, texts={"A": text, "B": text}))
    return labels[0], labels[1], heats[0], heats[1], records


def build():
    with gr.Tab("Classification"):
        (source_a, info_a, _), (source_b, info_b, _) = model_slots(TASK)
        text = gr.Textbox(label="text", lines=3, value=EXAMPLES[0])
        button = gr.Button("Classify with A and B", variant="primary")
        with gr.Row():
            with gr.Column():
                label_a = gr.Label(label="A: label probabilities")
                heat_a = gr.HighlightedText(label="A: attention of the pooled (last) token, last layer, mean over heads")
            with gr.Column():
                label_b = gr.Label(label="B: label probabilities")
                heat_b = gr.HighlightedText(label="B: attention of the pooled (last) token, last layer, mean over heads")
        raw = gr.JSON(label="records", visible=False)
        run = gr.State(TASK)  # the key of this tab's last run in the run store
        panel = attention_panel.build(run, "classify")
        gr.Examples(EXAMPLES, [text])
        panel.run_on(button, classify, [text, source_a, source_b],
                     [label_a, label_b, heat_a, heat_b, raw], run, "classify")
    return (source_a, source_b), (info_a, info_b), slot_info(TASK)
