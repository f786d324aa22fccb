"""Token tagging tab: entities with a colour per label, per-token labels and confidences (a page of
rows at a time), and where A and B disagree."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis
from diffllama.tokens import display_token

from . import paging, panel, run_store
from .errors import user_errors
from .exports import plain
from .model_queue import gpu
from .model_slots import model_slots, slot_info
from .panel.tab import Tab, run_models, wire

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


def token_rows(text: str, results: dict, traces: dict) -> tuple[list[list], list]:
    """Per token of A: its label and confidence, B's labels on the same characters, and whether they
    differ; and the text with each differing token marked with both labels."""
    alignment = analysis.align_tokens(traces["A"], traces["B"])
    labels_b = {(t.start, t.end): t.label for t in results["B"].tokens}
    b_by_position = {i: labels_b.get(tuple(o)) for i, o in enumerate(traces["B"].offsets)}
    rows, disagreements, cursor = [], [], 0
    token_index = [i for i, s in enumerate(traces["A"].sequence_ids) if s is not None]
    for token, position in zip(results["A"].tokens, token_index):
        others = sorted({b_by_position[j] for j in alignment.a_to_b[position] if b_by_position.get(j)})
        differs = others != [token.label]
        rows.append([position, display_token(token.token), token.label, round(token.score, 3), "/".join(others),
                     "✗" if differs else ""])
        if token.end > token.start >= cursor:  # the text itself, each differing token marked with both labels
            disagreements += [(text[cursor:token.start], None),
                              (text[token.start:token.end], f"A {token.label} · B {'/'.join(others) or '—'}" if differs else None)]
            cursor = token.end
    return rows, [piece for piece in disagreements + [(text[cursor:], None)] if piece[0]]


def page_of(rows: list[list], page: int) -> dict:
    """Rows of page ``page`` of the per-token table (``paging.page_of``)."""
    return paging.page_of(rows, page, "per-token labels (B's tokens matched to A's by characters)", "tokens")


@user_errors
@gpu
def tag(text: str, source_a: str, source_b: str, request: gr.Request = None):
    models = {"A": source_a, "B": source_b}
    found = {}

    def record(results):
        traces = {slot: result.trace for slot, result in results.items()}
        found["rows"], found["disagreements"] = token_rows(text, results, traces)
        return run_store.Run(TASK, models, traces, texts={"A": text, "B": text}, inputs={"text": text}, rows=found["rows"])
    results = run_models(request, TASK, models, lambda model: model.tag(text), record)
    marked = {label for _, label in found["disagreements"] if label}
    return (entity_pieces(text, results["A"].entities), entity_pieces(text, results["B"].entities),
            page_of(found["rows"], 1), gr.update(value=found["disagreements"], color_map={label: DISAGREE for label in marked}),
            {slot: plain(result) for slot, result in results.items()}, 1)


@user_errors
def turn_page(tab: str, page: int, request: gr.Request = None):
    """Another page of the last run's per-token table."""
    return page_of(run_store.current(request, tab).rows, page)


def build() -> Tab:
    with gr.Tab("Token tagging", id=TASK):
        text = gr.Textbox(label="text", lines=2, value=EXAMPLES[0], render=False)
        gr.Examples(EXAMPLES, [text], label="Examples (the last two: the bundled A and B disagree)")
        slots = model_slots(TASK)
        (source_a, _, _), (source_b, _, _) = slots
        text.render()
        button = gr.Button("Tag with A and B", variant="primary")
        with gr.Row():
            entities_a = gr.HighlightedText(label="A: entities", color_map=COLOURS, show_legend=True, elem_classes=["long-text"])
            entities_b = gr.HighlightedText(label="B: entities", color_map=COLOURS, show_legend=True, elem_classes=["long-text"])
        disagreement = gr.HighlightedText(label="where A and B disagree: the text, each differing token marked with "
                                                "both models' labels", elem_classes=["long-text"])
        page = gr.Number(1, precision=0, minimum=1, label=f"page of the per-token table ({paging.PAGE_ROWS} tokens a page)")
        table = gr.Dataframe(headers=["position", "token", "A label", "A confidence", "B label", "disagree"],
                             label="per-token labels (B's tokens matched to A's by characters)")
        raw = gr.JSON(visible=False)
        run = gr.State(TASK)  # the key of this tab's last run in the run store
        views = panel.build(run, "tag")
        _, tab = wire(views, button, tag, [text, source_a, source_b], [entities_a, entities_b, table, disagreement, raw, page],
                      "tag", slots, slot_info(TASK))
        page.submit(turn_page, [run, page], table, api_name="tag_page")
    return tab
