"""Token tagging tab: entities with a colour per label, per-token labels and confidences, and where
A and B disagree."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis

from . import attention_panel, run_store
from .common import CACHE, gpu, model_slots, plain, slot_info, user_errors

TASK = "tagging"
COLOURS = {"PER": "#ffa8a8", "LOC": "#a5d8ff", "ORG": "#b2f2bb", "NUM": "#ffec99", "DATE": "#d0bfff",
           "disagree": "#ff6b6b"}
EXAMPLES = ["Anna works at Acme Corp in Lyon.", "On 12 May 2021 Bob met Clara at Helix Labs.",
            "Northwind hired 40 people in Oslo."]


def entity_pieces(text: str, entities) -> list:
    pieces, cursor = [], 0
    for entity in entities:
        pieces += [(text[cursor: entity.start], None), (text[entity.start: entity.end], entity.label)]
        cursor = entity.end
    return pieces + [(text[cursor:], None)]


@user_errors
@gpu
def tag(text: str, source_a: str, source_b: str, request: gr.Request = None):
    models = {"A": source_a, "B": source_b}
    with run_store.recording(request, TASK) as keep:
        results = {slot: CACHE.get(source, TASK).tag(text) for slot, source in models.items()}
        traces = {slot: result.trace for slot, result in results.items()}
        keep(run_store.Run(TASK, models, traces, texts={"A": text, "B": text}))
    # per-token disagreement, with tokens of the two tokenisations matched by characters
    alignment = analysis.align_tokens(traces["A"], traces["B"])
    labels_b = {(t.start, t.end): t.label for t in results["B"].tokens}
    b_by_position = {i: labels_b.get(tuple(o)) for i, o in enumerate(traces["B"].offsets)}
    rows, disagreements = [], []
    token_index = [i for i, s in enumerate(traces["A"].sequence_ids) if s is not None]
    for token, position in zip(results["A"].tokens, token_index):
        others = sorted({b_by_position[j] for j in alignment.a_to_b[position] if b_by_position.get(j)})
        differs = others != [token.label]
        rows.append([token.token, token.label, round(token.score, 3), "/".join(others), "✗" if differs else ""])
        disagreements.append((token.token, "disagree" if differs else None))
    records = {slot: plain(result) for slot, result in results.items()}
    return (entity_pieces(text, results["A"].entities), entity_pieces(text, results["B"].entities), rows,
            disagreements, records)


def build():
    with gr.Tab("Token tagging"):
        (source_a, info_a, _), (source_b, info_b, _) = model_slots(TASK)
        text = gr.Textbox(label="text", lines=2, value=EXAMPLES[0])
        button = gr.Button("Tag with A and B", variant="primary")
        with gr.Row():
            entities_a = gr.HighlightedText(label="A: entities", color_map=COLOURS, show_legend=True)
            entities_b = gr.HighlightedText(label="B: entities", color_map=COLOURS, show_legend=True)
        disagreement = gr.HighlightedText(label="tokens where A and B disagree", color_map=COLOURS)
        table = gr.Dataframe(headers=["token", "A label", "A confidence", "B label", "disagree"],
                             label="per-token labels (B's tokens matched to A's by characters)")
        raw = gr.JSON(visible=False)
        run = gr.State(TASK)  # the key of this tab's last run in the run store
        panel = attention_panel.build(run, "tag")
        gr.Examples(EXAMPLES, [text])
        panel.run_on(button, tag, [text, source_a, source_b],
                     [entities_a, entities_b, table, disagreement, raw], run, "tag")
    return (source_a, source_b), (info_a, info_b), slot_info(TASK)
