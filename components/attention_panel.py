"""The attention views every tab shares, for the input of the tab's last run (held in a gr.State
``run`` dict: ``{"A": Trace, "B": Trace, "models": {"A": source, "B": source}, "task": str,
"span": ReferenceSpan | None (a gold answer, or a prediction picked and labelled so), "span_sequence": 0 | 1}``)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from diffllama import analysis

from . import figures
from .common import CACHE, MODEL_CONCURRENCY, MODEL_QUEUE, export_csv, export_json, gpu, plain, user_errors

MAX_INDEX = 127  # slider bound before a run sets the model's own


def _trace(run: dict | None, slot: str):
    if not run or run.get(slot) is None:
        raise ValueError("run the tab first: the attention views show the input of the tab's last run")
    return run[slot]


@user_errors
@gpu
def show_map(run, slot, layer, head, kind, size):
    """Heatmap, DiffLlama decomposition, λ per layer, and the map's numbers as CSV."""
    trace = _trace(run, slot)
    layer, head, size = int(layer), int(head), int(size)
    view = analysis.attention_map(trace, layer, head, kind, size)
    heatmap = figures.attention_heatmap(view, f"Model {slot} · ")
    decomposition = None
    if trace.lambdas is not None:
        views = {k: analysis.attention_map(trace, layer, head, k, size) for k in ("a1", "a2", "diff")}
        decomposition = figures.decomposition(views["a1"], views["a2"], views["diff"], f"Model {slot} · ")
    lambdas = {s: (run[s].lambdas, run[s].lambda_inits) for s in ("A", "B") if run.get(s) is not None and run[s].lambdas}
    profile = figures.lambda_profile({f"{s} ({run['models'][s]})": v for s, v in lambdas.items()}) if lambdas else None
    rows = [[view.labels[i], view.labels[j], float(view.values[i, j])]
            for i in range(len(view.labels)) for j in range(len(view.labels)) if view.values[i, j] != 0]
    csv = export_csv(f"attention-{slot}-L{layer}-H{head}-{kind}", ["query", "key", "value"], rows)
    note = (f"Input of {trace.seq_len} tokens shown as {len(view.labels)}×{len(view.labels)} blocks: each cell is "
            "the mass a block of query tokens gives (on average) to a block of key tokens." if view.pooled else "")
    if trace.truncated_from:
        note += f" The input had {trace.truncated_from} tokens; only the model's first {trace.seq_len} were used."
    return heatmap, gr.update(value=decomposition, visible=decomposition is not None), \
        gr.update(value=profile, visible=profile is not None), csv, note


@user_errors
@gpu
def show_overview(run, slot, kind):
    trace = _trace(run, slot)
    return figures.overview_grid(analysis.overview(trace, kind, size=24), f"Model {slot} · ")


def _primary_kind(trace) -> str:
    return trace.kinds[0]


ALLOCATION_MEASURES = ("attention to answer", "attention noise", "absolute reading", "normalised reading", "signed reading")
ALLOCATION_NOTE = analysis.measures.markdown(*ALLOCATION_MEASURES)
COMPARISON_NOTE = analysis.measures.markdown("entropy", "top-k mass", "first-token mass", "negative mass", *ALLOCATION_MEASURES,
                                             "attention-logit outliers", "hidden-state outliers", "sink score", "sink share")


def allocation_table(allocations: dict, archs: dict[str, str], per_layer: bool = False) -> dict:
    """Attention to the reference span vs the rest, a row per model and reading (one row for a softmax
    model, whose readings are equal), absolute first: the reading that cannot leave [0, 1]."""
    layers = max((r.answer_mass[analysis.READINGS[0]].shape[0] for r in allocations.values()), default=0) if per_layer else 0
    rows = []
    for slot, result in allocations.items():
        readings = analysis.READINGS if result.kind == "diff" else analysis.READINGS[:1]
        for reading in readings:
            answer, noise = result.means(reading)
            name = reading if result.kind == "diff" else "softmax: all readings equal"
            by_layer = [round(float(v), 4) for v in result.answer_mass[reading].mean(axis=1)] if per_layer else []
            rows.append([f"{slot} ({archs[slot]})", name, round(answer, 4), round(noise, 4)] + by_layer)
    return {"headers": ["model", "reading", "attention to answer ↑", "attention noise ↓"] +
            [f"L{l} answer" for l in range(layers)], "data": rows}


def allocation_label(allocations: dict, reference, text: str) -> str:
    """What the allocation table measured, on which span, and the normalised reading's caveats."""
    if reference is None:
        return "attention to answer vs noise: no reference span (give the gold answer or mark a span)"
    label = (f"attention from the last token to {text[reference.start:reference.end]!r} ({reference.source}) "
             "vs the rest of the input, mean over layers and heads")
    caveats = [f"{slot}: {r.caveat}" for slot, r in allocations.items() if r.caveat]
    return label + "".join(f" — note {c}" for c in caveats)


def sink_table(traces: dict) -> list[list]:
    """Per model and map: the share of heads whose first-token sink score exceeds ε, and the scores' mean."""
    rows = []
    for slot, trace in traces.items():
        sinks = analysis.sink_scores(trace)
        for kind, scores in sinks.scores.items():
            rows.append([f"{slot} ({trace.arch})", kind, round(sinks.share_above(kind), 4), round(float(scores.mean()), 4),
                         round(float(scores.max()), 4)])
    return rows


@user_errors
@gpu
def compare(run, span_text):
    """A vs B: head statistics, attention to a reference span vs the rest (the paper's allocation),
    outliers and attention sinks."""
    traces = {s: run[s] for s in ("A", "B") if run and run.get(s) is not None}
    if not traces:
        raise ValueError("run the tab first: the comparison uses the input of the tab's last run")
    stats = {f"{s}": analysis.head_stats(t, _primary_kind(t)) for s, t in traces.items()}
    rows = []
    for slot, trace in traces.items():
        outliers = analysis.activation_outliers(trace)
        for what, values in (("attention logits", outliers.attention_logits), ("hidden states", outliers.hidden_states)):
            rows.append([f"{slot} ({trace.arch})", what] + [round(values[k], 3) for k in
                                                         ("top-1", "top-2", "top-3", "top-10", "top-100", "median")])
    references = {slot: _span(run, slot, span_text) for slot in traces}
    allocation = {slot: analysis.reference_allocation(traces[slot], reference)
                  for slot, reference in references.items() if reference is not None}
    sinks = sink_table(traces)
    first = next(iter(traces))
    label = allocation_label(allocation, references[first], _text(run, first))
    archs = {s: t.arch for s, t in traces.items()}
    export = export_json("comparison", {"head_stats": {s: plain(r) for s, r in stats.items()},
                                        "span_allocation": {s: plain(r) for s, r in allocation.items()},
                                        "outliers": rows, "sinks": sinks})
    return (figures.head_stats_comparison(stats), gr.update(value=allocation_table(allocation, archs, per_layer=True), label=label),
            rows, export, sinks)


def _text(run, slot: str) -> str:
    return run.get(f"text_{slot}", run.get("text", ""))


def _span(run, slot: str, span_text: str):
    """The reference span to measure in ``slot``'s input: the typed text found there (a marked span),
    else the tab's own reference (QA: the gold answer). Generation inputs differ per model (prompt +
    own continuation), so the typed text is looked up in each."""
    if span_text and span_text.strip():
        return analysis.find_reference(_text(run, slot), span_text, run.get("span_sequence", 0), "marked span")
    return run.get("span")


@user_errors
@gpu
def ablate(run, value):
    trace = _trace(run, "A")
    model = CACHE.get(run["models"]["A"], run["task"])
    result = analysis.lambda_ablation(model, trace, float(value))
    title = "subtraction switched off (λ = 0)" if float(value) == 0 else f"λ set to {float(value):.2f} in every layer"
    changed = [[i, result.tokens[i], result.original[i], result.ablated[i], round(result.kl[i], 4)]
               for i in range(len(result.kl)) if result.changed[i]]
    summary = (f"{sum(result.changed)} of {len(result.changed)} predictions change; mean KL {sum(result.kl) / len(result.kl):.4f}. "
               "The model itself is unchanged: the override applies to this forward pass only.")
    return figures.ablation_kl(result.tokens, result.kl, result.changed, f"Model A, {title}"), changed, summary


@dataclass
class Panel:
    slot: gr.Radio
    layer: gr.Slider
    head: gr.Slider
    kind: gr.Dropdown

    def run_on(self, button: gr.Button, fn, inputs: list, outputs: list, run: gr.State, api_name: str):
        """Wire a tab's main action (an API endpoint, queued with the other model runs); after it,
        fit the panel's sliders to the model."""
        event = button.click(fn, inputs, outputs, api_name=api_name, concurrency_id=MODEL_QUEUE,
                             concurrency_limit=MODEL_CONCURRENCY)
        event.then(self.refresh, [run], [self.layer, self.head, self.kind], api_visibility="private")
        return event

    def refresh(self, run, slot="A"):
        """Slider ranges and kinds for the model now shown."""
        if not run or run.get(slot) is None:
            return gr.update(), gr.update(), gr.update()
        trace = run[slot]
        return (gr.update(maximum=trace.num_layers - 1, value=min(trace.num_layers - 1, trace.num_layers // 2)),
                gr.update(maximum=trace.num_heads - 1, value=0),
                gr.update(choices=list(trace.kinds), value=trace.kinds[0]))


def build(run: gr.State, name: str) -> Panel:
    """The shared attention views, wired to the tab's ``run`` state."""
    limits = dict(concurrency_id=MODEL_QUEUE, concurrency_limit=MODEL_CONCURRENCY)
    with gr.Accordion("Attention: maps, decomposition, λ", open=True):
        with gr.Row():
            slot = gr.Radio(["A", "B"], value="A", label="model")
            # wide until a run narrows them (API callers skip that step; the backend checks ranges)
            layer = gr.Slider(0, MAX_INDEX, value=0, step=1, label="layer")
            head = gr.Slider(0, MAX_INDEX, value=0, step=1, label="head (differential head for DiffLlama)")
            kind = gr.Dropdown(["diff", "a1", "a2"], value="diff", label="map")
            size = gr.Slider(32, 512, value=256, step=16, label="display size (blocks)")
        show = gr.Button("Show attention", variant="secondary")
        note = gr.Markdown()
        heatmap = gr.Plot(label="attention map")
        decomposition = gr.Plot(label="A1 | A2 | A1 − λ·A2", visible=False)
        profile = gr.Plot(label="λ per layer", visible=False)
        csv = gr.File(label="numbers behind the map (CSV)")
        show.click(show_map, [run, slot, layer, head, kind, size], [heatmap, decomposition, profile, csv, note],
                   api_name=f"{name}_attention", **limits)
    panel = Panel(slot, layer, head, kind)
    slot.change(panel.refresh, [run, slot], [layer, head, kind], api_visibility="private")
    with gr.Accordion("Overview: every layer × head", open=False):
        overview_button = gr.Button("Draw overview")
        overview = gr.Plot()
        overview_button.click(show_overview, [run, slot, kind], overview, api_name=f"{name}_overview", **limits)
    with gr.Accordion("A vs B: entropy, sparsity, sink, negative mass, span allocation, outliers", open=False):
        span = gr.Textbox(label="span to measure (text from the input; empty = the tab's own reference, e.g. the gold answer)")
        compare_button = gr.Button("Compare A and B")
        stats = gr.Plot()
        allocation = gr.Dataframe(label="attention from the last token to the span vs the rest of the input", wrap=True)
        outliers = gr.Dataframe(headers=["model", "values", "top-1", "top-2", "top-3", "top-10", "top-100", "median"],
                                label="activation outliers: |pre-softmax attention logits| and |decoder-layer outputs|")
        sinks = gr.Dataframe(headers=["model", "map", f"share of heads with sink score > {analysis.SINK_THRESHOLD}",
                                      "mean sink score", "largest sink score"], label="attention sinks on the first token")
        comparison_file = gr.File(label="numbers behind the comparison (JSON)")
        with gr.Accordion("definitions of these measures", open=False):
            gr.Markdown(COMPARISON_NOTE)
        compare_button.click(compare, [run, span], [stats, allocation, outliers, comparison_file, sinks],
                             api_name=f"{name}_compare", **limits)
    with gr.Accordion("λ ablation (model A, DiffLlama)", open=False):
        value = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="λ in every layer (0 = subtraction off: only A1 drives the output)")
        ablate_button = gr.Button("Run ablation")
        ablation_note = gr.Markdown()
        ablation_plot = gr.Plot()
        ablation_table = gr.Dataframe(headers=["position", "token", "original", "ablated", "KL"], label="predictions that change")
        ablate_button.click(ablate, [run, value], [ablation_plot, ablation_table, ablation_note],
                            api_name=f"{name}_ablation", **limits)
    return panel
