"""The attention views every tab shares, for the input of the tab's last run in this session (a
``run_store.Run``, looked up by the tab's key, which each view gets from a ``gr.State`` input).

Every view takes the slot it shows — "A", "B", or "A and B" side by side — and a map kind. A kind is
matched per model (``kind_for``: a DiffLlama's ``diff`` ↔ a standard model's ``softmax``), so one
choice shows comparable maps of both models at the same layer and head."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gradio as gr
import numpy as np

from diffllama import analysis

from . import figures
from .common import CACHE, image_file, load_slots, model_queue, export_csv, export_json, gpu, markdown_code, plain, user_errors
from .run_store import current

SIDE_BY_SIDE = "A and B"
SLOTS = (SIDE_BY_SIDE, "A", "B")
KINDS = ("diff", "a1", "a2", "softmax")
MAX_INDEX = 127  # slider bound until the models are loaded (API callers never see it; the backend checks ranges)
OVERVIEW_SIZE = 24  # blocks per side of an overview thumbnail
MEASURES = {  # per-head number under each thumbnail: HeadStats field, and its definition as the UI shows it
    "entropy": ("entropy", "entropy (nats) of each query row read as the distribution |row| / Σ|row|, mean over "
                           "query rows 1…N−1; low = focused"),
    "sink mass": ("sink_mass", "share of |row| on the first token, mean over query rows 1…N−1 (attention sink)"),
    "negative mass": ("negative_mass", "share of |row| that is negative, mean over query rows 1…N−1 "
                                       "(0 for softmax maps)"),
}
ORDERS = ("layer × head", "measure, low first", "measure, high first")
DEFAULT_ZOOM = 48  # tokens per side of the zoom region before the user picks one


def kind_for(trace, kind: str) -> str:
    """``kind`` where the model has it, else the model's own main map: the differential map for a
    DiffLlama asked for ``softmax``, the softmax map for a standard model asked for ``diff``/``a1``/``a2``."""
    if kind not in KINDS:
        raise ValueError(f"unknown map {kind!r}; choose one of {', '.join(KINDS)}")
    return kind if kind in trace.kinds else trace.kinds[0]


def shown_slots(run, slot: str) -> list[str]:
    if slot == SIDE_BY_SIDE:
        return [s for s in ("A", "B") if s in run.traces]
    if slot not in run.traces:
        raise ValueError(f"there is no model {slot!r}; choose one of {', '.join(SLOTS)}")
    return [slot]


def window_note(run, slot: str, trace) -> str:
    """Which part of a long input the trace holds (QA window, or the first tokens of a cut input)."""
    notes = []
    if run.windows.get(slot, (0, 1))[1] > 1:
        shown, total = run.windows[slot]
        chars = [o for o, s in zip(trace.offsets, trace.sequence_ids) if s == 1]
        notes.append(f"QA window {shown + 1} of {total} (context characters {chars[0][0]}–{chars[-1][1]})")
    if trace.truncated_from:
        notes.append(f"the input had {trace.truncated_from} tokens; the model read its first {trace.seq_len} "
                     "(its trained length)")
    return "; ".join(notes)


def _slot_notes(run, slot: str, trace, kind: str, asked: str) -> list[str]:
    notes = [f"{trace.arch} has no {asked!r} map: showing its {kind!r} map"] if kind != asked else []
    where = window_note(run, slot, trace)
    return [f"**{slot}** ({trace.arch}): {n}" for n in notes + ([where] if where else [])]


def _fits(trace, slot: str, side_by_side: bool, layer: int, head: int, kind: str) -> str | None:
    """None when ``trace`` has this layer and head; otherwise, for one of two models side by side, why
    it shows nothing (a single model's view raises instead)."""
    try:
        trace.check(layer, head, kind)
    except ValueError as error:
        if not side_by_side:
            raise
        return f"**{slot}** ({trace.arch}): {error}"
    return None


@user_errors
@gpu
def show_map(tab: str, slot: str, layer: int, head: int, kind: str, size: int, request: gr.Request = None):
    """Each shown model's map at the same layer, head and (matched) kind, DiffLlama's decomposition
    A1 | A2 | A1 − λ·A2, and λ per layer."""
    run = current(request, tab)
    layer, head, size = int(layer), int(head), int(size)
    maps, parts, notes = {}, {"A": [None] * 3, "B": [None] * 3}, []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        matched = kind_for(trace, kind)
        problem = _fits(trace, s, slot == SIDE_BY_SIDE, layer, head, matched)
        if problem:
            notes.append(problem)
            continue
        notes += _slot_notes(run, s, trace, matched, kind)
        segments = run.segments.get(s, ())
        views = {k: analysis.attention_map(trace, layer, head, k, size)
                 for k in ({matched} | ({"a1", "a2", "diff"} if trace.lambdas else set()))}
        maps[s] = figures.attention_heatmap(views[matched], f"Model {s} ({trace.arch}) · ", segments)
        if trace.lambdas:
            softmax_max = float(max(views["a1"].values.max(), views["a2"].values.max()))
            parts[s] = [figures.attention_heatmap(views[k], f"{s} · ", segments, zmax=None if k == "diff" else softmax_max,
                                                  height=440) for k in ("a1", "a2", "diff")]  # a third of the page wide
    lambdas = {s: (t.lambdas, t.lambda_inits) for s, t in run.traces.items() if t.lambdas}
    profile = figures.lambda_profile({f"{s} ({run.models[s]})": v for s, v in lambdas.items()}) if lambdas else None
    return ("  \n".join(notes), maps.get("A"), maps.get("B"), *parts["A"], *parts["B"], profile)


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
def zoom(tab: str, slot: str, layer: int, head: int, kind: str, query_from: int, query_to: int, key_from: int,
         key_to: int, request: gr.Request = None):
    """Query tokens [from, to) × key tokens [from, to) of each shown model's map, recomputed at full
    resolution from the trace (at most ``analysis.MAX_REGION`` a side)."""
    run = current(request, tab)
    rows, cols = (int(query_from), int(query_to)), (int(key_from), int(key_to))
    figures_by_slot, notes = {}, []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        matched = kind_for(trace, kind)
        problem = _fits(trace, s, slot == SIDE_BY_SIDE, int(layer), int(head), matched)
        if problem:
            notes.append(problem)
            continue
        # side by side, the two inputs can differ in length (generation): each is cut to its own
        fit = lambda r: (min(r[0], trace.seq_len - 1), min(r[1], trace.seq_len))  # noqa: E731
        region = analysis.attention_region(trace, int(layer), int(head), matched, fit(rows), fit(cols))
        figures_by_slot[s] = figures.region_heatmap(region, f"Model {s} ({trace.arch}) · ", run.segments.get(s, ()))
    return figures_by_slot.get("A"), figures_by_slot.get("B"), "  \n".join(notes), *rows, *cols


@user_errors
@gpu
def export_map(tab: str, slot: str, layer: int, head: int, kind: str, size: int, request: gr.Request = None) -> str:
    """The numbers behind the shown maps as CSV (model, query, key, value; future cells left out),
    written only when asked for."""
    run = current(request, tab)
    rows = []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        view = analysis.attention_map(trace, int(layer), int(head), kind_for(trace, kind), int(size))
        future = figures.future_mask(view.edges, view.edges)
        rows += [[s, view.kind, view.labels[i], view.labels[j], float(view.values[i, j])]
                 for i, j in zip(*np.nonzero(~future))]
    return export_csv(f"attention-{slot.replace(' ', '')}-L{int(layer)}-H{int(head)}-{kind}",
                      ["model", "map", "query", "key", "value"], rows)


@user_errors
@gpu
def show_overview(tab: str, slot: str, kind: str, measure: str, order: str, request: gr.Request = None):
    """Every layer × head of each shown model as square thumbnails on one colour scale per model,
    with the chosen per-head measure under each, in the chosen order."""
    run = current(request, tab)
    if measure not in MEASURES or order not in ORDERS:
        raise ValueError(f"choose a measure of {', '.join(MEASURES)} and an order of {', '.join(ORDERS)}")
    galleries, orders, legends = {}, {"A": [], "B": []}, []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        matched = kind_for(trace, kind)
        view = analysis.overview(trace, matched, size=OVERVIEW_SIZE)
        values = getattr(analysis.head_stats(trace, matched), MEASURES[measure][0])  # [L, H]
        heads = [(l, h) for l in range(trace.num_layers) for h in range(trace.num_heads)]
        if order != ORDERS[0]:
            heads.sort(key=lambda lh: values[lh], reverse=order == ORDERS[2])
        limit = figures.overview_limit(view.maps)
        galleries[s] = [(image_file(figures.thumbnail(view.maps[l][h], matched, limit), f"{s}-L{l}-H{h}"),
                         f"L{l} H{h} · {values[l, h]:.3f}")
                        for l, h in heads]
        orders[s] = heads
        legends.append(figures.scale_legend(matched, limit, f"<b>{s}</b> ({trace.arch}, {matched}), every head:"))
        blocks = len(view.edges) - 1
    note = (f"Each thumbnail is one head's map, {'pooled to ' + str(blocks) + '×' + str(blocks) + ' blocks' if view.pooled else 'token by token'}; "
            f"the number under it is its {measure}: {MEASURES[measure][1]}. Click a thumbnail to open that head above.")
    return galleries.get("A"), galleries.get("B"), "".join(legends), note, orders["A"], orders["B"]


def layout(tab: str, slot: str, request: gr.Request = None) -> list:
    """What the views of ``slot`` need visible (``LAYOUT_OUTPUTS``): each shown model's map, zoom and
    overview (as many thumbnail columns as it has heads); the decomposition and λ only for a DiffLlama."""
    try:
        run = current(request, tab)
        shown = shown_slots(run, slot)
    except ValueError:  # no run yet: nothing to fit
        return [gr.update()] * 11
    differential = [s for s in shown if run.traces[s].lambdas is not None]
    return ([gr.update(visible=s in shown) for s in ("A", "B")]
            + [gr.update(visible=s in differential) for s in ("A", "B") for _ in range(3)]
            + [gr.update(visible=any(t.lambdas for t in run.traces.values()))]
            + [gr.update(visible=s in shown) for s in ("A", "B")]
            + [gr.update(visible=s in shown, columns=run.traces[s].num_heads if s in shown else 4) for s in ("A", "B")])


def open_head(order: list, event: gr.SelectData):
    """A thumbnail's click: its layer and head go to the main view's sliders."""
    layer, head = order[event.index]
    return layer, head


@user_errors
@gpu
def compare(tab: str, span_text, request: gr.Request = None):
    """A vs B: head statistics, attention to a reference span vs the rest (the paper's allocation, in
    every reading), outliers and attention sinks."""
    stats, _, rows, sinks, table, label = _comparison(current(request, tab), span_text)
    return figures.head_stats_comparison(stats), gr.update(value=table, label=label), rows, sinks


@user_errors
@gpu
def export_comparison(tab: str, span_text, request: gr.Request = None) -> str:
    """The numbers behind the comparison as JSON, written only when asked for."""
    stats, allocation, rows, sinks, _, _ = _comparison(current(request, tab), span_text)
    return export_json("comparison", {"head_stats": {s: plain(r) for s, r in stats.items()},
                                      "span_allocation": {s: plain(r) for s, r in allocation.items()},
                                      "outliers": rows, "sinks": sinks})


def _comparison(run, span_text):
    """Head statistics, reference-span allocation, outlier rows and sink rows of both models, and the
    allocation table with its label (which reference, which readings). Each model's measures run in a
    thread of their own: they are independent, and a server thread's element-wise torch work keeps to
    one core, so A and B take one each. They are kept with the trace (its cache), so another span or
    the export does not compute them again."""
    traces = run.traces

    def measured(slot: str, trace):
        return trace.cache.get(("comparison", slot), lambda: measure(slot, trace), lambda _: 0)  # a few kB

    def measure(slot: str, trace):
        logits = analysis.logit_summary(trace)
        stats = analysis.head_stats(trace, trace.kinds[0], logits=logits)  # one pass over the logits for both
        outliers = analysis.activation_outliers(trace, logits)
        rows = [[f"{slot} ({trace.arch})", what] + [round(values[k], 3) for k in ("top-1", "top-2", "top-3", "top-10", "top-100", "median")]
                for what, values in (("attention logits", outliers.attention_logits), ("hidden states", outliers.hidden_states))]
        return stats, rows, sink_table({slot: trace})

    with ThreadPoolExecutor(len(traces)) as pool:  # each with the request's context: its time limit holds there too
        futures = {slot: pool.submit(contextvars.copy_context().run, measured, slot, trace) for slot, trace in traces.items()}
        results = {slot: future.result() for slot, future in futures.items()}
    references = {slot: _span(run, slot, span_text) for slot in traces}
    allocation = {slot: analysis.reference_allocation(traces[slot], reference)
                  for slot, reference in references.items() if reference is not None}
    first = next(iter(traces))
    label = allocation_label(allocation, references[first], run.texts[first])
    table = allocation_table(allocation, {s: t.arch for s, t in traces.items()}, per_layer=True)
    stats = {slot: result[0] for slot, result in results.items()}
    rows, sinks = ([row for result in results.values() for row in result[i]] for i in (1, 2))
    return stats, allocation, rows, sinks, table, label


def _span(run, slot: str, span_text: str):
    """The reference span to measure in ``slot``'s input: the typed text found there (a marked span),
    else the tab's own reference (QA: the gold answer). Generation inputs differ per model (prompt +
    own continuation), so the typed text is looked up in each."""
    if span_text and span_text.strip():
        return analysis.find_reference(run.texts[slot], span_text, run.span_sequence, "marked span")
    return run.reference


def ablation_summary(result, task: str, context: str) -> str:
    """What the ablation changed, in words: the label (classification), the answer (QA), or how many
    next-token / tag predictions change."""
    if task == "classification":
        before, after = result.original[0], result.ablated[0]
        return (f"Label {markdown_code(before)} {result.original_prob[0]:.3f} → {markdown_code(after)} "
                f"{result.ablated_prob[0]:.3f}; P({before}) {result.original_prob[0]:.3f} → {result.original_prob_after[0]:.3f} "
                f"(KL {result.kl[0]:.2e}).")
    if task == "qa":
        said = lambda a: f"{markdown_code(context[a[0]:a[1]])} (score {a[2]:.3f})" if a else "no span"  # noqa: E731
        return f"Answer {said(result.answers[0])} → {said(result.answers[1])}."
    changed = sum(result.changed)
    worst = int(np.argmax(result.kl))
    return (f"{changed} of {len(result.changed)} top predictions change; the largest KL, {result.kl[worst]:.2e} nats, "
            f"is at position {worst} {markdown_code(result.tokens[worst])}.")


@user_errors
@gpu
def ablate(tab: str, slot: str, value: float, request: gr.Request = None):
    """Rerun model ``slot`` (a DiffLlama) with λ replaced in every layer; what changes, before → after."""
    run = current(request, tab)
    if slot not in run.traces:
        raise ValueError(f"there is no model {slot!r}; choose A or B")
    trace = run.traces[slot]
    model = CACHE.get(run.models[slot], run.task)
    result = analysis.lambda_ablation(model, trace, float(value))
    title = "subtraction switched off (λ = 0)" if float(value) == 0 else f"λ set to {float(value):.2f} in every layer"
    ranked = [i for i in np.argsort(result.kl)[::-1] if result.changed[i]] or list(np.argsort(result.kl)[::-1][:10])
    table = [[int(i), result.tokens[i], f"{result.original[i]} ({result.original_prob[i]:.3f})",
              f"{result.ablated[i]} ({result.ablated_prob[i]:.3f})", round(result.original_prob_after[i], 4),
              float(f"{result.kl[i]:.3g}")] for i in ranked]
    summary = (ablation_summary(result, run.task, run.texts[slot]) + " The model itself is unchanged: the override "
               "applies to this forward pass only. Table: the positions whose top prediction changes (else the 10 "
               "largest KL).")
    return figures.ablation_kl(result, f"Model {slot}, {title}"), table, summary


@dataclass
class Panel:
    """The controls of the shared views, and every output a new run makes stale."""

    slot: gr.Radio
    layer: gr.Slider
    head: gr.Slider
    kind: gr.Dropdown
    stale: list

    def run_on(self, button: gr.Button, fn, inputs: list, outputs: list, run_key: gr.State, api_name: str):
        """Wire a tab's main action (an API endpoint, queued with the other model runs); once it
        succeeds, clear the views of the previous run (and any error badge they carry)."""
        load_slots(button, inputs)
        event = button.click(fn, inputs, outputs, api_name=api_name, **model_queue())
        self.clear_on(event)
        return event

    def clear_on(self, event) -> None:
        """Once ``event`` (a new run, or another part of the input) succeeds, the views still show the
        old one: clear them, and any error badge they carry."""
        event.success(lambda: [None] * len(self.stale), None, self.stale, api_visibility="private")

    def fit_to_models(self, task: str, sources: list, infos: list, layer_sliders: list = ()) -> None:
        """Size the layer and head sliders (and the tab's other ``layer_sliders``) to the models as
        soon as a slot's model is loaded (its info line changes)."""
        outputs = [self.layer, self.head, *layer_sliders]
        for info in infos:
            info.change(lambda *chosen: slider_sizes(task, len(layer_sliders), *chosen), sources, outputs,
                        api_visibility="private")


def slider_sizes(task: str, extra_layer_sliders: int, *sources: str) -> list:
    """Updates of the layer slider (at the middle layer), the head slider and ``extra_layer_sliders``
    more layer sliders, sized to the larger of the loaded models ``sources``."""
    try:
        infos = [CACHE.get(source, task).info for source in sources if source]
    except Exception:  # noqa: BLE001 - the slot reports its own load error; keep the sliders
        return [gr.update()] * (2 + extra_layer_sliders)
    layers, heads = max(i.num_layers for i in infos), max(i.num_heads for i in infos)
    layer = lambda: gr.update(maximum=layers - 1, value=layers // 2)  # noqa: E731 - gradio consumes each update
    return [layer(), gr.update(maximum=heads - 1, value=0)] + [layer() for _ in range(extra_layer_sliders)]


def build(run: gr.State, name: str) -> Panel:
    """The shared attention views, wired to the tab's ``run`` key (a ``gr.State`` holding the tab's
    name in the run store); ``name`` prefixes their API endpoints."""
    limits = model_queue()
    private = dict(api_visibility="private")
    with gr.Accordion("Attention maps: A and B at the same layer / head", open=True, elem_id=f"{name}-maps"):
        with gr.Row():
            slot = gr.Radio(list(SLOTS), value=SIDE_BY_SIDE, label="models")
            layer = gr.Slider(0, MAX_INDEX, value=0, step=1, label="layer")
            head = gr.Slider(0, MAX_INDEX, value=0, step=1, label="head (differential head for DiffLlama)")
            kind = gr.Dropdown(list(KINDS), value="diff", label="map (diff ↔ softmax matched per model)")
            size = gr.Slider(32, 512, value=256, step=16, label="display size (blocks)")
        with gr.Row():
            show = gr.Button("Show attention", variant="secondary")
            export = gr.Button("Export the maps' numbers (CSV)", size="sm")
        note = gr.Markdown()
        with gr.Row(equal_height=True):
            map_a = gr.Plot(label="model A", elem_id=f"{name}-map-A")
            map_b = gr.Plot(label="model B", elem_id=f"{name}-map-B")
        with gr.Accordion("DiffLlama decomposition: A1 | A2 | A1 − λ·A2", open=True):
            parts = []
            for s in ("A", "B"):
                with gr.Row():
                    parts += [gr.Plot(label=f"{s}: {figures.KIND_TITLES[k]}", visible=False) for k in ("a1", "a2", "diff")]
        profile = gr.Plot(label="λ per layer", visible=False)
        csv = gr.File(label="numbers behind the maps (CSV)", height=90)
        map_outputs = [note, map_a, map_b, *parts, profile]
        map_inputs = [run, slot, layer, head, kind, size]
        shown = show.click(show_map, map_inputs, map_outputs, api_name=f"{name}_attention", **limits)
        export.click(export_map, map_inputs, csv, api_name=f"{name}_export", **limits)
    with gr.Accordion("Zoom: a region at full resolution", open=False):
        gr.Markdown("Drag a box on a map above (plotly's zoom), then press **Recompute the region** — or type token ranges. "
                    "The region is recomputed from the trace token by token, however long the input.")
        with gr.Row():
            query_from = gr.Number(0, precision=0, label="query tokens from")
            query_to = gr.Number(DEFAULT_ZOOM, precision=0, label="to (exclusive)")
            key_from = gr.Number(0, precision=0, label="key tokens from")
            key_to = gr.Number(DEFAULT_ZOOM, precision=0, label="to (exclusive)")
        zoom_button = gr.Button("Recompute the region", variant="secondary")
        zoom_note = gr.Markdown()
        with gr.Row(equal_height=True):
            zoom_a = gr.Plot(label="model A, full resolution", elem_id=f"{name}-zoom-A")
            zoom_b = gr.Plot(label="model B, full resolution", elem_id=f"{name}-zoom-B")
        ranges = [query_from, query_to, key_from, key_to]
        plots = [f"{name}-map-A", f"{name}-map-B", f"{name}-zoom-A", f"{name}-zoom-B"]
        zoomed = zoom_button.click(zoom, [run, slot, layer, head, kind, *ranges], [zoom_a, zoom_b, zoom_note, *ranges],
                                   js=ZOOM_SCRIPT.replace("PLOTS", str(plots)), api_name=f"{name}_zoom", **limits)
    with gr.Accordion("Overview: every layer × head — click one to open it", open=False):
        with gr.Row():
            measure = gr.Radio(list(MEASURES), value="entropy", label="number under each head")
            order = gr.Radio(list(ORDERS), value=ORDERS[0], label="order")
        overview_button = gr.Button("Draw overview")
        overview_note = gr.Markdown()
        overview_legend = gr.HTML()
        gallery_a, gallery_b = [gr.Gallery(label=f"model {s}", columns=4, allow_preview=False, object_fit="contain",
                                           height="auto", elem_id=f"{name}-overview-{s}", elem_classes=["overview"])
                                for s in ("A", "B")]
        order_a, order_b = gr.State([]), gr.State([])  # (layer, head) of each thumbnail, in gallery order
        drawn = overview_button.click(show_overview, [run, slot, kind, measure, order],
                                      [gallery_a, gallery_b, overview_legend, overview_note, order_a, order_b],
                                      api_name=f"{name}_overview", **limits)
        opened = [gallery.select(open_head, heads, [layer, head], **private).then(
            show_map, map_inputs, map_outputs, **private, **limits) for gallery, heads in ((gallery_a, order_a), (gallery_b, order_b))]
    with gr.Accordion("A vs B: entropy, sparsity, sink, negative mass, span allocation, outliers", open=False):
        span = gr.Textbox(label="span to measure (text from the input; empty = the tab's own reference, e.g. the gold answer)")
        with gr.Row():
            compare_button = gr.Button("Compare A and B")
            export_button = gr.Button("Export the comparison's numbers (JSON)", size="sm")
        stats = gr.Plot()
        allocation = gr.Dataframe(label="attention from the last token to the span vs the rest of the input", wrap=True)
        outliers = gr.Dataframe(headers=["model", "values", "top-1", "top-2", "top-3", "top-10", "top-100", "median"],
                                label="activation outliers: |pre-softmax attention logits| and |decoder-layer outputs|")
        sinks = gr.Dataframe(headers=["model", "map", f"share of heads with sink score > {analysis.SINK_THRESHOLD}",
                                      "mean sink score", "largest sink score"], label="attention sinks on the first token")
        comparison_file = gr.File(label="numbers behind the comparison (JSON)")
        with gr.Accordion("definitions of these measures", open=False):
            gr.Markdown(COMPARISON_NOTE)
        compare_button.click(compare, [run, span], [stats, allocation, outliers, sinks], api_name=f"{name}_compare", **limits)
        export_button.click(export_comparison, [run, span], comparison_file, api_name=f"{name}_compare_export", **limits)
    with gr.Accordion("λ ablation (a DiffLlama): what changes when the subtraction is switched off", open=False):
        with gr.Row():
            ablated = gr.Radio(["A", "B"], value="A", label="model (must be a DiffLlama)")
            value = gr.Slider(0.0, 1.5, value=0.0, step=0.05,
                              label="λ in every layer (0 = subtraction off: only A1 drives the output)")
        ablate_button = gr.Button("Run ablation")
        ablation_note = gr.Markdown()
        ablation_plot = gr.Plot()
        ablation_table = gr.Dataframe(headers=["position", "token", "before (P)", "after (P)", "P(before) after", "KL"],
                                      label="top prediction before → after ablation", wrap=True)
        ablate_button.click(ablate, [run, ablated, value], [ablation_plot, ablation_table, ablation_note],
                            api_name=f"{name}_ablation", **limits)
    fitted = [map_a, map_b, *parts, profile, zoom_a, zoom_b, gallery_a, gallery_b]  # what layout() updates
    slot.change(layout, [run, slot], fitted, **private)
    for event in (shown, zoomed, drawn):
        event.then(layout, [run, slot], fitted, **private)
    for event in opened:  # a clicked thumbnail opens its head in the main view, scrolled into sight
        event.then(layout, [run, slot], fitted, **private).then(
            None, js=f"() => document.getElementById('{name}-maps').scrollIntoView()", **private)
    stale = [*map_outputs, csv, zoom_a, zoom_b, zoom_note, gallery_a, gallery_b, overview_legend, overview_note,
             stats, allocation, outliers, sinks, comparison_file, ablation_plot, ablation_table, ablation_note]
    return Panel(slot, layer, head, kind, stale)


# The box a user dragged on a map (plotly's zoom) becomes the token ranges to recompute: each map
# carries its blocks' token edges in layout.meta, and its axes count cells (centred on integers).
ZOOM_SCRIPT = """(...args) => {
  for (const id of PLOTS) {
    const plot = document.querySelector(`#${id} .js-plotly-plot`);
    const layout = plot && plot.layout, meta = layout && layout.meta;
    if (!meta || !layout.xaxis || layout.xaxis.autorange !== false) continue;
    const tokens = (range, edges) => {
      const last = edges.length - 2, cell = v => Math.max(0, Math.min(last, Math.round(v)));
      return [edges[cell(Math.min(...range))], edges[cell(Math.max(...range)) + 1]];
    };
    return [...args.slice(0, args.length - 4), ...tokens(layout.yaxis.range, meta.row_edges),
            ...tokens(layout.xaxis.range, meta.col_edges)];
  }
  return args;
}"""
