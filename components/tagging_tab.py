"""Token tagging tab: entities with a colour per label, per-token labels and confidences, and where
A and B disagree."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis
from diffllama.tokens import display_token

from . import attention_panel, run_store
from .common import CACHE, gpu, model_slots, plain, slot_info, user_errors

TASK = "tagging"
COLOURS = {"PER": "#ffa8a8", "LOC": "#a5d8ff", "ORG": "#b2f2bb", "NUM": "#ffec99", "DATE": "#d0bfff"}
DISAGREE = "#ff6b6b"
EXAMPLES = ["Anna works at Acme Corp in Lyon.", "On 12 May 2021 Bob met Clara at Helix Labs.",
            "Søren Müller left Kraków for São Paulo on 3 May 2024.", "李娜 works at Café Müller in Zürich. 🎉"]


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
        keep(run_store.Run(TASK, models, traces, texts={"A": text, "B": text}, inputs={"text": text}))
    # per-token disagreement, with tokens of the two tokenisations matched by characters
    alignment = analysis.align_tokens(traces["A"], traces["B"])
    labels_b = {(t.start, t.end): t.label for t in results["B"].tokens}
    b_by_position = {i: labels_b.get(tuple(o)) for i, o in enumerate(traces["B"].offsets)}
    rows, disagreements, cursor = [], [], 0
    token_index = [i for i, s in enumerate(traces["A"].sequence_ids) if s is not None]
    for token, position in zip(results["A"].tokens, token_index):
        others = sorted({b_by_position[j] for j in alignment.a_to_b[position] if b_by_position.get(j)})
        differs = others != [token.label]
        rows.append([display_token(token.token), token.label, round(token.score, 3), "/".join(others), "✗" if differs else ""])
        if token.end > token.start >= cursor:  # the text itself, each differing token marked with both labels
            disagreements += [(text[cursor:token.start], None),
                              (text[token.start:token.end], f"A {token.label} · B {'/'.join(others) or '—'}" if differs else None)]
            cursor = token.end
    disagreements = [piece for piece in disagreements + [(text[cursor:], None)] if piece[0]]
    marked = {label for _, label in disagreements if label}
    records = {slot: plain(result) for slot, result in results.items()}
    return (entity_pieces(text, results["A"].entities), entity_pieces(text, results["B"].entities), rows,
            gr.update(value=disagreements, color_map={label: DISAGREE for label in marked}), records)


def build():
    with gr.Tab("Token tagging", id=TASK):
        text = gr.Textbox(label="text", lines=2, value=EXAMPLES[0], render=False)
        gr.Examples(EXAMPLES, [text], label="Examples (the last two: the bundled A and B disagree)")
        (source_a, info_a, _), (source_b, info_b, _) = model_slots(TASK)
        text.render()
        button = gr.Button("Tag with A and B", variant="primary")
        with gr.Row():
            entities_a = gr.HighlightedText(label="A: entities", color_map=COLOURS, show_legend=True)
            entities_b = gr.HighlightedText(label="B: entities", color_map=COLOURS, show_legend=True)
        disagreement = gr.HighlightedText(label="where A and B disagree: the text, each differing token marked with "
                                                "both models' labels")
        table = gr.Dataframe(headers=["token", "A label", "A confidence", "B label", "disagree"],
                             label="per-token labels (B's tokens matched to A's by characters)")
        raw = gr.JSON(visible=False)
        run = gr.State(TASK)  # the key of this tab's last run in the run store
        panel = attention_panel.build(run, "tag")
        panel.run_on(button, tag, [text, source_a, source_b],
                     [entities_a, entities_b, table, disagreement, raw], run, "tag")
        panel.fit_to_models(TASK, [source_a, source_b], [info_a, info_b])
    return (source_a, source_b), (info_a, info_b), slot_info(TASK), panel
