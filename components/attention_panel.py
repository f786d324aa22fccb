"""The attention views every tab shares, for the input of the tab's last run in this session (a
``run_store.Run``, looked up by the tab's key, which each view gets from a ``gr.State`` input)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from diffllama import analysis

from . import figures
from .run_store import current
from .common import CACHE, MODEL_CONCURRENCY, MODEL_QUEUE, export_csv, export_json, gpu, plain, user_errors

MAX_INDEX = 127  # slider bound before a run sets the model's own


def _trace(run, slot: str):
    if slot not in run.traces:
        raise ValueError(f"there is no model {slot!r}; choose A or B")
    return run.traces[slot]


@user_errors
@gpu
def show_map(tab: str, slot, layer, head, kind, size, request: gr.Request = None):
    """Heatmap, DiffLlama decomposition, λ per layer, and the map's numbers as CSV."""
    run = current(request, tab)
    trace = _trace(run, slot)
    layer, head, size = int(layer), int(head), int(size)
    view = analysis.attention_map(trace, layer, head, kind, size)
    heatmap = figures.attention_heatmap(view, f"Model {slot} · ")
    decomposition = None
    if trace.lambdas is not None:
        views = {k: analysis.attention_map(trace, layer, head, k, size) for k in ("a1", "a2", "diff")}
        decomposition = figures.decomposition(views["a1"], views["a2"], views["diff"], f"Model {slot} · ")
    lambdas = {s: (t.lambdas, t.lambda_inits) for s, t in run.traces.items() if t.lambdas}
    profile = figures.lambda_profile({f"{s} ({run.models[s]})": v for s, v in lambdas.items()}) if lambdas else None
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
def show_overview(tab: str, slot, kind, request: gr.Request = None):
    trace = _trace(current(request, tab), slot)
    return figures.overview_grid(analysis.overview(trace, kind, size=24), f"Model {slot} · ")


def _primary_kind(trace) -> str:
    return trace.kinds[0]


@user_errors
@gpu
def compare(tab: str, span_text, request: gr.Request = None):
    """A vs B: head statistics, attention to a span vs the rest (the paper's allocation) and outliers."""
    run = current(request, tab)
    traces = run.traces
    stats = {f"{s}": analysis.head_stats(t, _primary_kind(t)) for s, t in traces.items()}
    rows, allocation = [], {}
    for slot, trace in traces.items():
        span = _span(run, slot, span_text)
        outliers = analysis.activation_outliers(trace)
        for what, values in (("attention logits", outliers.attention_logits), ("hidden states", outliers.hidden_states)):
            rows.append([f"{slot} ({trace.arch})", what] + [round(values[k], 3) for k in
                                                         ("top-1", "top-2", "top-3", "top-10", "top-100", "median")])
        if span is not None:
            start, end, sequence = span
            answer = _span_tokens(trace, slot, start, end, sequence)
            context_tokens = [i for i, s in enumerate(trace.sequence_ids) if s == sequence]
            result = analysis.span_allocation(trace, [trace.seq_len - 1], answer, (context_tokens[0], context_tokens[-1] + 1))
            allocation[slot] = result
    allocation_rows = [[f"{s} ({traces[s].arch})", round(r.mean_answer, 4), round(r.mean_noise, 4)] +
                       [round(float(v), 4) for v in r.answer_mass.mean(axis=1)] for s, r in allocation.items()]
    layers = max(t.num_layers for t in traces.values())
    allocation_table = {"headers": ["model", "attention to span", "attention noise"] + [f"L{l} span" for l in range(layers)],
                        "data": allocation_rows}
    export = export_json("comparison", {"head_stats": {s: plain(r) for s, r in stats.items()},
                                        "span_allocation": {s: plain(r) for s, r in allocation.items()},
                                        "outliers": rows})
    return figures.head_stats_comparison(stats), allocation_table, rows, export


def _span(run, slot: str, span_text: str):
    """The character span to measure in ``slot``'s input: the typed text found there, else the tab's
    own span (e.g. each model's own QA answer). Generation inputs differ per model (prompt + own continuation)."""
    text, sequence = run.texts[slot], run.span_sequence
    if span_text and span_text.strip():
        where = text.find(span_text.strip())
        if where < 0:
            raise ValueError(f"{span_text.strip()!r} does not occur in the input")
        return where, where + len(span_text.strip()), sequence
    return (*run.spans[slot], sequence) if slot in run.spans else None


def _span_tokens(trace, slot: str, start: int, end: int, sequence: int) -> tuple[int, int]:
    """The span's tokens in the part of the input model ``slot`` read (a QA window, or the first
    tokens of an input longer than the model's positions)."""
    try:
        return analysis.token_spans(trace, start, end, sequence)
    except ValueError:
        raise ValueError(f"characters {start}..{end} lie outside the part of the input model {slot} read "
                         "(a long input is cut to the model's positions, or read in windows); "
                         "pick a span inside it") from None


@user_errors
@gpu
def ablate(tab: str, value, request: gr.Request = None):
    run = current(request, tab)
    trace = _trace(run, "A")
    model = CACHE.get(run.models["A"], run.task)
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

    def run_on(self, button: gr.Button, fn, inputs: list, outputs: list, run_key: gr.State, api_name: str):
        """Wire a tab's main action (an API endpoint, queued with the other model runs); after it,
        fit the panel's sliders to the model."""
        event = button.click(fn, inputs, outputs, api_name=api_name, concurrency_id=MODEL_QUEUE,
                             concurrency_limit=MODEL_CONCURRENCY)
        event.then(self.refresh, [run_key, self.slot], [self.layer, self.head, self.kind], api_visibility="private")
        return event

    def refresh(self, tab: str, slot: str, request: gr.Request = None):
        """Slider ranges and kinds for the model now shown."""
        try:
            trace = _trace(current(request, tab), slot)
        except ValueError:  # no run (or it failed): leave the sliders as they are
            return gr.update(), gr.update(), gr.update()
        return (gr.update(maximum=trace.num_layers - 1, value=min(trace.num_layers - 1, trace.num_layers // 2)),
                gr.update(maximum=trace.num_heads - 1, value=0),
                gr.update(choices=list(trace.kinds), value=trace.kinds[0]))


def build(run: gr.State, name: str) -> Panel:
    """The shared attention views, wired to the tab's ``run`` key (a ``gr.State`` holding the tab's
    name in the run store)."""
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
        span = gr.Textbox(label="span to measure (text from the input; empty = the tab's own span, e.g. the answer)")
        compare_button = gr.Button("Compare A and B")
        stats = gr.Plot()
        allocation = gr.Dataframe(label="attention from the last token to the span vs the rest of the input "
                                        "(DiffLlama rows divided by 1 − λ), mean over heads", wrap=True)
        outliers = gr.Dataframe(headers=["model", "values", "top-1", "top-2", "top-3", "top-10", "top-100", "median"],
                                label="activation outliers: |pre-softmax attention logits| and |hidden states|")
        comparison_file = gr.File(label="numbers behind the comparison (JSON)")
        compare_button.click(compare, [run, span], [stats, allocation, outliers, comparison_file],
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
