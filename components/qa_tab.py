"""QA spans tab: the best answer highlighted in the context, top-k spans, start/end logits, and the
paper's attention to answer vs attention noise for A and B."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis

from . import attention_panel, figures, run_store
from .common import CACHE, gpu, model_slots, plain, slot_info, user_errors

TASK = "qa"
EXAMPLES = [["What is the magic number of Lyon?",
             "The magic number of Paris is 4341. A light wind came from the sea. The magic number of Lyon is 6087. "
             "Children played near the fountain. The magic number of Oslo is 5912. A bus passed by slowly."],
            ["What is the magic number of Rome?",
             "The magic number of Rome is 1234. The shops opened early in the morning. The magic number of Porto is 9876."]]


def highlight(context: str, spans) -> list:
    """The context with the best span marked "answer" and the other top spans "candidate"."""
    if not spans:
        return [(context, None)]
    best = spans[0]
    return [(context[: best.start], None), (context[best.start: best.end], "answer"), (context[best.end:], None)]


@user_errors
@gpu
def answer(question: str, context: str, top_k: int, source_a: str, source_b: str, request: gr.Request = None):
    models = {"A": source_a, "B": source_b}
    marked, tables, plots, allocation_rows, records, traces, spans = [], [], [], [], {}, {}, {}
    with run_store.recording(request, TASK) as keep:
        for slot, source in models.items():
            result = CACHE.get(source, TASK).answer(question, context, top_k=int(top_k))
            trace = traces[slot] = result.trace  # the window holding this model's own best answer
            records[slot] = plain(result)
            marked.append(highlight(context, result.spans))
            tables.append([[s.text, round(s.score, 4), s.start, s.end] for s in result.spans])
            tokens = [trace.tokens[p] for p in result.context_positions]
            plots.append(figures.qa_logits(tokens, result.start_logits, result.end_logits, f"{slot}: start / end logits along the context"))
            if result.spans:
                # each model is measured on its own best answer, inside the window it was found in
                best = result.spans[0]
                spans[slot] = (best.start, best.end)
                span = analysis.token_spans(trace, best.start, best.end, sequence=1)
                context_span = (result.context_positions[0], result.context_positions[-1] + 1)
                allocation = analysis.span_allocation(trace, [trace.seq_len - 1], span, context_span)
                allocation_rows.append([f"{slot} ({trace.arch})", round(allocation.mean_answer, 4), round(allocation.mean_noise, 4)])
        keep(run_store.Run(TASK, models, traces, texts={"A": context, "B": context}, spans=spans, span_sequence=1))
    return (marked[0], marked[1], tables[0], tables[1], plots[0], plots[1], allocation_rows, records)


def build():
    with gr.Tab("QA spans"):
        (source_a, info_a, _), (source_b, info_b, _) = model_slots(TASK)
        question = gr.Textbox(label="question", value=EXAMPLES[0][0])
        context = gr.Textbox(label="context", lines=4, value=EXAMPLES[0][1])
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
        allocation = gr.Dataframe(headers=["model", "attention to answer ↑", "attention noise ↓"],
                                  label="attention from the last token to each model's own best answer vs the rest of its context window "
                                        "(the Differential Transformer paper's Table 3 measure; mean over layers and heads)")
        raw = gr.JSON(visible=False)
        run = gr.State(TASK)  # the key of this tab's last run in the run store
        panel = attention_panel.build(run, "qa")
        gr.Examples(EXAMPLES, [question, context])
        panel.run_on(button, answer, [question, context, top_k, source_a, source_b],
                     [marked_a, marked_b, table_a, table_b, plot_a, plot_b, allocation, raw], run, "answer")
    return (source_a, source_b), (info_a, info_b), slot_info(TASK)
