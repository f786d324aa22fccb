"""Classification tab: label probabilities for A and B, and what the pooled token attended to."""

from __future__ import annotations

import gradio as gr

from . import panel, run_store, token_heat
from .errors import user_errors
from .exports import plain
from .model_queue import gpu
from .model_slots import model_slots, slot_info
from .panel.tab import Tab, run_models, wire

TASK = "classification"
EXAMPLES = [  # held-out reviews (seed 1): the bundled A and B agree on the first (mixed), disagree on the rest
    "Rosa said the service would be delightful, but it was awful, but Grace said the view would be disappointing, but it was great.",
    "The staff was not terrible. Zoe thought it would be fun. We paid 6 euros. The room was not poor at all.",
    "I found the price excellent. We were in Kraków. The hotel was very nice.",
    "The film was not dull at all. We were in Besançon.",
    "The book was not boring at all. It was September. I went with Jonas. The food was quite good."]


@user_errors
@gpu
def classify(text: str, source_a: str, source_b: str, request: gr.Request = None):
    """Label probabilities of A and B, and both records; the run (both traces) goes to the run store."""
    models = {"A": source_a, "B": source_b}
    results = run_models(request, TASK, models, lambda model: model.classify(text), lambda results: run_store.Run(
        TASK, models, {s: r.trace for s, r in results.items()}, texts={"A": text, "B": text}, inputs={"text": text}))
    labels = [{score.label: score.probability for score in results[s].labels} for s in "AB"]
    return labels[0], labels[1], {slot: plain(result) for slot, result in results.items()}


def build() -> Tab:
    with gr.Tab("Classification", id=TASK):
        text = gr.Textbox(label="text", lines=3, value=EXAMPLES[0], render=False)
        gr.Examples(EXAMPLES, [text], label="Examples (held-out; from the 2nd on, the bundled A and B disagree)")
        slots = model_slots(TASK)
        (source_a, _, _), (source_b, _, _) = slots
        text.render()
        button = gr.Button("Classify with A and B", variant="primary")
        with gr.Row():
            label_a = gr.Label(label="A: label probabilities")
            label_b = gr.Label(label="B: label probabilities")
        with gr.Accordion("What the pooled token (the one the head reads) attended to", open=True):
            heat = token_heat.build("the pooled token the head reads")
        raw = gr.JSON(label="records", visible=False)
        views = panel.build(gr.State(TASK), "classify", heat)  # the state: the key of this tab's last run
        _, tab = wire(views, button, classify, [text, source_a, source_b], [label_a, label_b, raw], "classify", slots,
                      slot_info(TASK), heat)
    return tab
