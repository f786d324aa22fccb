"""A vs B: head statistics, attention to a reference span vs the rest (the paper's allocation, in
every reading), attention sinks, and — on their own button, a pass of their own — the exact
activation outliers. The numbers come from ``analysis.derived`` (computed once per trace)."""

from __future__ import annotations

import gradio as gr

from diffllama import analysis
from diffllama.analysis import derived
from diffllama.analysis.allocation import ALLOCATION_MEASURES

from .. import figures
from ..errors import user_errors
from ..exports import export_json, plain
from ..model_queue import gpu
from ..run_store import current
from .provenance import view_provenance
from .spec import Action, ViewSpec

ALLOCATION_NOTE = analysis.measures.markdown(*ALLOCATION_MEASURES)
COMPARISON_NOTE = analysis.measures.markdown("entropy", "top-k mass", "first-token mass", "negative mass",
                                             *ALLOCATION_MEASURES, "attention-logit outliers",
                                             "hidden-state outliers", "sink score", "sink share")
OUTLIER_COLUMNS = [f"top-{k}" for k in analysis.OUTLIER_RANKS] + ["median"]
NO_SPAN = "attention to answer vs noise: no reference span (give the gold answer or mark a span)"


def allocation_shown(allocations: dict, traces: dict, problem: str | None = None):
    """The backend's one allocation table (``analysis.allocation_table``: per model the mean over layers
    and a row per layer, with λ, 1 − λ and the regime beside each DiffLlama layer, in every reading, the
    default — net — first) as the Dataframe's update, labelled by what was measured (``allocation_label``)."""
    table = analysis.allocation_table({f"{slot} ({traces[slot].arch})": found for slot, found in allocations.items()})
    # with nothing measured, the table's own headers over no rows (gradio would number the columns 1, 2, 3)
    return gr.update(value={"headers": table.headers, "data": table.rows},
                     label=allocation_label(table) if allocations else problem or NO_SPAN)


def allocation_label(table) -> str:
    """The table's label: what each model was measured from and on (its query token, span and context);
    the λ regimes are the table's own columns, and the definitions say where a reading is not reported."""
    return " · ".join(table.measured)


def sink_rows(slot: str, trace, sinks) -> list[list]:
    """Per map of one model: the share of heads whose first-token sink score exceeds ε, and the scores' mean."""
    return [[f"{slot} ({trace.arch})", kind, round(sinks.share_above(kind), 4), round(float(scores.mean()), 4),
             round(float(scores.max()), 4)] for kind, scores in sinks.scores.items()]


def _span(run, slot: str, span_text: str | None):
    """The reference span to measure in ``slot``'s input: the typed text found there (a marked span),
    else the tab's own reference (QA: the gold answer). Generation inputs differ per model (prompt +
    own continuation), so the typed text is looked up in each."""
    if span_text and span_text.strip():
        return analysis.find_reference(run.texts[slot], span_text, run.span_sequence, "marked span")
    return run.reference


def _query(run, slot: str, query: int | None) -> dict:
    """The query token ``reference_allocation`` measures from: a chosen position (``query`` ≥ 0, or
    counted from the end when negative), else (None or -1) the default, which reads, for a generated
    continuation, the text and where the prompt ends (the token before the answer is the query)."""
    if query is not None and int(query) != -1:
        position = int(query) if int(query) >= 0 else run.traces[slot].seq_len + int(query)
        return dict(query=position)
    generated = [position for position, name in run.segments.get(slot, ()) if name == "generated"]
    return dict(text=run.texts[slot], prompt_tokens=generated[0] if generated else None)


def _comparison(run, span_text: str | None, query: int | None = None) -> dict:
    """Every model's statistics and sinks (``derived.comparison``), and the allocation on the span from
    the query token (``analysis.reference_allocation``, the one call every surface makes)."""
    traces = run.traces
    measured = {slot: derived.comparison(trace) for slot, trace in traces.items()}
    references = {slot: _span(run, slot, span_text) for slot in traces}
    allocation = {slot: analysis.reference_allocation(traces[slot], reference, **_query(run, slot, query))
                  for slot, reference in references.items() if reference is not None}
    return dict(stats={slot: m.stats for slot, m in measured.items()}, allocation=allocation,
                sinks=[row for slot, m in measured.items() for row in sink_rows(slot, traces[slot], m.sinks)],
                shown=allocation_shown(allocation, traces))


@user_errors
@gpu
def compare(tab: str, span_text: str | None, query: int | None = -1, request: gr.Request = None) -> dict:
    """A vs B: head statistics, attention from the query token (-1: the default) to a reference span vs
    the rest of the context, attention sinks."""
    found = _comparison(current(request, tab), span_text, query)
    return {"stats": figures.head_stats_comparison(found["stats"]), "sinks": found["sinks"],
            "allocation": found["shown"]}


def outlier_rows(run) -> list[list]:
    """The outlier table's rows: each model's attention logits and hidden states, at ``OUTLIER_RANKS``."""
    rows = []
    for slot, trace in run.traces.items():
        found = derived.outliers(trace)
        rows += [[f"{slot} ({trace.arch})", what] + [round(values[k], 3) for k in OUTLIER_COLUMNS]
                 for what, values in (("attention logits", found.attention_logits), ("hidden states", found.hidden_states))]
    return rows


@user_errors
@gpu
def outliers(tab: str, request: gr.Request = None) -> dict:
    """Activation outliers (the paper's Table 5) of both models: their own pass over every logit."""
    return {"outliers": outlier_rows(current(request, tab))}


@user_errors
@gpu
def export_comparison(tab: str, span_text: str | None, query: int | None = -1, request: gr.Request = None) -> dict:
    """The numbers behind the comparison, the outliers included, as JSON, written only when asked for."""
    run = current(request, tab)
    found = _comparison(run, span_text, query)
    return {"json": export_json("comparison", {"head_stats": {s: plain(r) for s, r in found["stats"].items()},
                                               "span_allocation": {s: plain(r) for s, r in found["allocation"].items()},
                                               "outliers": outlier_rows(run), "sinks": found["sinks"]},
                                view_provenance(request, run, "compare", span_text=span_text or None, query=query))}


def build() -> ViewSpec:
    with gr.Accordion("A vs B: entropy, sparsity, sink, negative mass, span allocation, outliers", open=False) as box:
        with gr.Row():
            span = gr.Textbox(label="span to measure (text from the input; empty = the tab's own reference, e.g. the gold answer)",
                              scale=3)
            query = gr.Number(-1, precision=0, minimum=-(1 << 20), maximum=1 << 20, scale=1,
                              label="query token: a position (negative: from the end); -1 = the token whose next-token "
                                    "prediction is the answer's first token")
        with gr.Row():
            button = gr.Button("Compare A and B")
            export_button = gr.Button("Export the comparison's numbers (JSON)", size="sm")
        outputs = dict(stats=gr.Plot(show_label=False), allocation=gr.Dataframe(
            label="attention from the query token to the span vs the rest of the context, every reading", wrap=True,
            elem_classes=["allocation-table"]),
            sinks=gr.Dataframe(headers=["model", "map", f"share of heads with sink score > {analysis.SINK_THRESHOLD}",
                                        "mean sink score", "largest sink score"], label="attention sinks on the first token"))
        # exact top-k and median of every logit: a pass of its own, so only when asked for
        outliers_button = gr.Button("Activation outliers (exact, one more pass over every logit)", size="sm")
        table = gr.Dataframe(headers=["model", "values", *OUTLIER_COLUMNS],
                             label="activation outliers: |pre-softmax attention logits| and |decoder-layer outputs|")
        comparison_file = gr.File(label="numbers behind the comparison (JSON)", elem_classes=["export-file"])
        with gr.Accordion("definitions of these measures", open=False):
            gr.Markdown(COMPARISON_NOTE)
    actions = [Action(outliers_button, outliers, [], {"outliers": table}, "outliers"),
               Action(export_button, export_comparison, [span, query], {"json": comparison_file}, "compare_export")]
    return ViewSpec("compare", compare, {"span_text": span, "query": query}, outputs, button, "compare", box, actions=actions)
