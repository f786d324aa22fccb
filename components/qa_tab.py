"""QA spans tab: the best answer highlighted in the context, top-k spans, start/end logits, and the
paper's attention to answer vs attention noise for A and B, measured on the gold answer (or on a
model's prediction when picked, labelled so)."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis
from diffllama.records import ReferenceSpan

from . import attention_panel, figures
from .common import CACHE, gpu, model_slots, plain, slot_info, user_errors

TASK = "qa"
EXAMPLES = [["What is the magic number of Lyon?",
             "The magic number of Paris is 4341. A light wind came from the sea. The magic number of Lyon is 6087. "
             "Children played near the fountain. The magic number of Oslo is 5912. A bus passed by slowly.", "6087"],
            ["What is the magic number of Rome?",
             "The magic number of Rome is 1234. The shops opened early in the morning. The magic number of Porto is 9876.",
             "1234"]]
REFERENCES = ["gold answer", "A's prediction", "B's prediction"]  # predictions only when picked, and labelled so


def highlight(context: str, spans) -> list:
    """The context with the best span marked "answer" and the other top spans "candidate"."""
    if not spans:
        return [(context, None)]
    best = spans[0]
    return [(context[: best.start], None), (context[best.start: best.end], "answer"), (context[best.end:], None)]


def reference(context: str, gold: str, choice: str, results: dict) -> tuple[ReferenceSpan | None, str | None]:
    """The span allocation is measured on (the gold answer, or a model's best span when picked), or
    None and why: a gold answer missing from the context still lets the answers show."""
    if choice == REFERENCES[0]:
        if not gold or not gold.strip():
            return None, None
        try:
            return analysis.find_reference(context, gold, 1, "gold answer"), None
        except ValueError as error:
            return None, str(error)
    best = results[choice[0]].spans[:1]
    return (ReferenceSpan(best[0].start, best[0].end, 1, choice), None) if best else (None, f"{choice[0]} found no span")


@user_errors
@gpu
def answer(question: str, context: str, top_k: int, source_a: str, source_b: str, gold: str = "",
           measure_on: str = REFERENCES[0]):
    run = {"task": TASK, "text": context, "models": {"A": source_a, "B": source_b}, "span_sequence": 1}
    marked, tables, plots, results, records = [], [], [], {}, {}
    for slot, source in (("A", source_a), ("B", source_b)):
        result = results[slot] = CACHE.get(source, TASK).answer(question, context, top_k=int(top_k))
        trace = run[slot] = result.trace
        records[slot] = plain(result)
        marked.append(highlight(context, result.spans))
        tables.append([[s.text, round(s.score, 4), s.start, s.end] for s in result.spans])
        tokens = [trace.tokens[p] for p in result.context_positions]
        plots.append(figures.qa_logits(tokens, result.start_logits, result.end_logits, f"{slot}: start / end logits along the context"))
    span, problem = reference(context, gold, measure_on, results)
    run["span"] = span
    allocations = {}
    for slot in results if span else ():
        try:
            allocations[slot] = analysis.reference_allocation(run[slot], span)
        except ValueError as error:  # a long context's best window may not hold the gold answer
            problem = f"model {slot}: {error}"
    table = attention_panel.allocation_table(allocations, {slot: run[slot].arch for slot in results})
    label = problem or attention_panel.allocation_label(allocations, span, context)
    allocation = gr.update(value=table, label=label)
    return (marked[0], marked[1], tables[0], tables[1], plots[0], plots[1], allocation, records, run)


def build():
    with gr.Tab("QA spans"):
        (source_a, info_a, _), (source_b, info_b, _) = model_slots(TASK)
        question = gr.Textbox(label="question", value=EXAMPLES[0][0])
        context = gr.Textbox(label="context", lines=4, value=EXAMPLES[0][1])
        with gr.Row():
            gold = gr.Textbox(label="gold answer (optional; text of the context that allocation is measured on)",
                              value=EXAMPLES[0][2])
            measure_on = gr.Radio(REFERENCES, value=REFERENCES[0], label="measure attention to answer on")
        top_k = gr.Slider(1, 10, value=5, step=1, label="top-k spans")
        button = gr.Button("Answer with A and B", variant="primary")
        with gr.Row():
            with gr.Column():
                marked_a = gr.HighlightedText(label="A: best answer in the context", color_map={"answer": "#4c6ef5"})
                table_a = gr.Dataframe(headers=["span", "score", "start", "end"], label="A: top spans")
                plot_a = gr.Plot()
            with gr.Column():
                marked_b = gr.HighlightedText(label="B: best answer in the context", color_map={"answer": "#f76707"})
                table_b = gr.Dataframe(headers=["span", "score", "start", "end"], label="B: top spans")
                plot_b = gr.Plot()
        allocation = gr.Dataframe(headers=["model", "reading", "attention to answer ↑", "attention noise ↓"],
                                  label="attention from the last token to the gold answer vs the rest of the context "
                                        "(the Differential Transformer paper's Table 3 measure; mean over layers and heads)")
        gr.Markdown(attention_panel.ALLOCATION_NOTE)
        raw = gr.JSON(visible=False)
        run = gr.State()
        panel = attention_panel.build(run, "qa")
        gr.Examples(EXAMPLES, [question, context, gold])
        panel.run_on(button, answer, [question, context, top_k, source_a, source_b, gold, measure_on],
                     [marked_a, marked_b, table_a, table_b, plot_a, plot_b, allocation, raw, run], run, "answer")
    return (source_a, source_b), (info_a, info_b), slot_info(TASK)
