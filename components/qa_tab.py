"""QA spans tab: the best answer highlighted in the context, top-k spans, start/end logits, the
paper's attention to answer vs attention noise for A and B measured on the gold answer (or on a
model's prediction when picked, labelled so), and — for a context read in windows — which window
the views show, with the choice of another."""

from __future__ import annotations

import dataclasses

import gradio as gr

from diffllama import analysis
from diffllama.records import ReferenceSpan
from diffllama.tokens import display_tokens

from . import figures, panel, run_store, token_heat
from .errors import user_errors
from .exports import plain
from .model_queue import gpu, model_queue
from .model_slots import CACHE, model_slots, slot_info
from .panel.provenance import stamp, view_provenance
from .panel.tab import Tab, run_models, wire

TASK = "qa"
LONG_CONTEXT = " ".join(f"The magic number of City{i} is {1000 + 37 * i}. A bus passed by slowly." for i in range(60)) + \
    " The magic number of Lyon is 6087. Children played near the fountain."
KEEP_AROUND = 300  # characters of context kept either side of a marked answer ...
GAP_AT_LEAST = 200  # ... when that cuts out at least this many
EXAMPLES = [["What is the magic number of Lyon?",
             "The magic number of Paris is 4341. A light wind came from the sea. The magic number of Lyon is 6087. "
             "Children played near the fountain. The magic number of Oslo is 5912. A bus passed by slowly.", "6087"],
            ["What is the magic number of Oslo?",
             "The magic number of Oslo is 7310. The magic number of Lyon is 4821. The magic number of Rome is 5555.", "7310"],
            ["What is the magic number of Lyon?", LONG_CONTEXT, "6087"]]  # longer than the models' positions: windows
BEST = "each model's best-answer window"
REFERENCES = ["gold answer", "A's prediction", "B's prediction"]  # predictions only when picked, and labelled so


ANSWER_COLOURS = {"A": "#4c6ef5", "B": "#f76707", "A and B": "#40c057"}


def highlight(context: str, best: dict) -> list:
    """The context once, each model's best span marked with its name ("A and B" where they overlap);
    ``best``: slot -> its best ``AnswerSpan`` (or None)."""
    marks = [[] for _ in context]
    for slot, span in best.items():
        for i in range(span.start, span.end) if span else ():
            marks[i].append(slot)
    pieces = []
    for char, mark in zip(context, marks):
        label = " and ".join(mark) or None
        if pieces and pieces[-1][1] == label:
            pieces[-1][0] += char
        else:
            pieces.append([char, label])
    return [tuple(piece) for piece in pieces] or [(context, None)]


def around_answers(pieces: list, keep: int = KEEP_AROUND) -> list:
    """``highlight``'s pieces with each unmarked stretch longer than 2 × ``keep`` + ``GAP_AT_LEAST``
    characters cut to the ``keep`` characters next to an answer, the cut named by its length: a long
    context's answers stay in sight (the whole context is in its box above)."""
    if all(label is None for _, label in pieces):  # no answer to keep in sight
        return pieces
    shown = []
    for i, (text, label) in enumerate(pieces):
        before, after = (keep if i > 0 else 0), (keep if i < len(pieces) - 1 else 0)  # the ends that touch an answer
        if label is not None or len(text) <= before + after + GAP_AT_LEAST:
            shown.append((text, label))
            continue
        cut = f" ⋯ {len(text) - before - after:,} characters ⋯ "
        shown.append((text[:before] + cut + (text[-after:] if after else ""), None))
    return shown


def span_rows(spans) -> list[list]:
    return [[s.text, round(s.score, 4), f"{s.start}–{s.end}"] for s in spans]


def windows_note(run) -> str:
    """Which window of the context every view of this run is drawn from."""
    notes = {slot: panel.window_note(run, slot, trace) for slot, trace in run.traces.items()}
    return "  \n".join(f"Views of **{slot}** read {note}." for slot, note in notes.items() if note) or \
        "The whole context fits in one window: the views read all of it."


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


def allocations(traces: dict, span: ReferenceSpan | None) -> tuple[dict, str | None]:
    """Allocation on ``span`` in each model's trace; a long context's window may not hold it (said why)."""
    found, problem = {}, None
    for slot, trace in traces.items() if span else ():
        try:
            found[slot] = analysis.reference_allocation(trace, span)
        except ValueError as error:
            problem = f"model {slot}: {error}"
    return found, problem


@user_errors
@gpu
def answer(question: str, context: str, top_k: int, source_a: str, source_b: str, gold: str = "",
           measure_on: str = REFERENCES[0], request: gr.Request = None):
    models = {"A": source_a, "B": source_b}
    found = {}

    def record(results):
        traces = {slot: result.trace for slot, result in results.items()}
        found["span"], problem = reference(context, gold, measure_on, results)
        found["measured"], missing = allocations(traces, found["span"])
        found["problem"] = problem or missing
        windows = {slot: (r.spans[0].window if r.spans else 0, r.num_windows) for slot, r in results.items()}
        found["run"] = run_store.Run(
            TASK, models, traces, texts={"A": context, "B": context}, reference=found["span"], span_sequence=1,
            question=question, segments={s: context_start(t) for s, t in traces.items()}, windows=windows,
            inputs=dict(question=question, context=context, top_k=int(top_k), gold=gold, measure_on=measure_on))
        return found["run"]
    results = run_models(request, TASK, models, lambda model: model.answer(question, context, top_k=int(top_k)), record)
    record_of = view_provenance(request, found["run"], "maps")
    plots = {slot: stamp(logit_plot(slot, result), record_of) for slot, result in results.items()}
    return (around_answers(highlight(context, {slot: r.spans[0] if r.spans else None for slot, r in results.items()})),
            span_rows(results["A"].spans), span_rows(results["B"].spans), plots["A"], plots["B"],
            panel.allocation_shown(found["measured"], {slot: r.trace for slot, r in results.items()}, found["problem"]),
            {slot: plain(result) for slot, result in results.items()})


def logit_plot(slot: str, result):
    """A model's start / end logits along the context (its window's tokens)."""
    trace = result.trace
    tokens = display_tokens([trace.tokens[p] for p in result.context_positions], [1] * len(result.context_positions))
    return figures.qa_logits(tokens, result.start_logits, result.end_logits, f"{slot}: start / end logits along the context")


def context_start(trace) -> list[tuple[int, str]]:
    """Where the context begins in a question + context trace: the segment boundary maps mark."""
    return [(trace.sequence_ids.index(1), "context")] if 1 in trace.sequence_ids else []


def after_run(tab: str, request: gr.Request = None):
    """The window note, and the window choices sized to the context's windows."""
    run = run_store.current(request, tab)
    total = max(windows for _, windows in run.windows.values())
    return windows_note(run), gr.update(choices=[BEST] + [str(w) for w in range(1, total + 1)], value=BEST)


@user_errors
@gpu
def choose_window(tab: str, choice: str, request: gr.Request = None) -> str:
    """Views of window ``choice`` (1-based, clamped to each model's windows; or each best one): both
    models' traces are replaced by those windows' in the session's run."""
    run = run_store.current(request, tab)
    traces, windows = {}, {}
    for slot, source in run.models.items():
        total = run.windows[slot][1]
        window = None if choice == BEST else min(int(choice), total) - 1
        result = CACHE.get(source, TASK).answer(run.question, run.texts[slot], window=window)
        traces[slot] = result.trace
        windows[slot] = (window if window is not None else result.spans[0].window if result.spans else 0, total)
    chosen = dataclasses.replace(run, traces=traces, windows=windows,
                                 segments={s: context_start(t) for s, t in traces.items()})
    run_store.STORE.keep(run_store.session_of(request), tab, chosen)
    return windows_note(chosen)


def answer_column(slot: str):
    """A model's top spans and its start/end logits."""
    with gr.Column(min_width=0):
        table = gr.Dataframe(headers=["answer", "score", "characters"], label=f"{slot}: top spans", wrap=True,
                             column_widths=["62%", "18%", "20%"], elem_classes=["span-table"])
        return table, gr.Plot(show_label=False)  # the chart titles itself


def build() -> Tab:
    with gr.Tab("QA spans", id=TASK):
        question = gr.Textbox(label="question", value=EXAMPLES[0][0], render=False)
        context = gr.Textbox(label="context", lines=4, max_lines=8, value=EXAMPLES[0][1], render=False)
        gold = gr.Textbox(label="gold answer (optional; text of the context that allocation is measured on)",
                          value=EXAMPLES[0][2], render=False)
        gr.Examples(EXAMPLES, [question, context, gold],
                    label="Examples (the first two: the bundled A and B answer differently; the last is read in windows)")
        slots = model_slots(TASK)
        (source_a, _, _), (source_b, _, _) = slots
        question.render()
        context.render()
        with gr.Row():
            gold.render()
            measure_on = gr.Radio(REFERENCES, value=REFERENCES[0], label="measure attention to answer on")
        top_k = gr.Slider(1, 10, value=5, step=1, label="top-k spans")
        button = gr.Button("Answer with A and B", variant="primary")
        marked = gr.HighlightedText(label="best answers in the context (A, B, or both; a long context around them)",
                                    color_map=ANSWER_COLOURS, show_legend=True)
        with gr.Row():
            table_a, plot_a = answer_column("A")
            table_b, plot_b = answer_column("B")
        allocation = gr.Dataframe(label="attention from the query token to the gold answer vs the rest of the context "
                                        "(the Differential Transformer paper's Table 3 measure), every reading", wrap=True,
                                  elem_classes=["allocation-table"])
        gr.Markdown(panel.ALLOCATION_NOTE)
        with gr.Row():
            window = gr.Dropdown([BEST], value=BEST, label="context window the views read (a long context is read in windows)")
            window_note = gr.Markdown()
        with gr.Accordion("What the last token attended to (token heat over question and context)", open=True):
            heat = token_heat.build("the context's last token")
        raw = gr.JSON(visible=False)
        run = gr.State(TASK)  # the key of this tab's last run in the run store
        views = panel.build(run, "qa", heat)
        ready, tab = wire(views, button, answer, [question, context, top_k, source_a, source_b, gold, measure_on],
                          [marked, table_a, table_b, plot_a, plot_b, allocation, raw], "answer", slots, slot_info(TASK), heat)
        ready.success(after_run, [run], [window_note, window], api_visibility="private")
        picked = window.input(choose_window, [run, window], window_note, api_name="qa_window", **model_queue())
        heat.wire(run, views.refresh_on(picked))
    return tab
