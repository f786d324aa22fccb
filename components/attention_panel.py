"""The attention views every tab shares, for the input of the tab's last run in this session (a
``run_store.Run``, looked up by the tab's key, which each view gets from a ``gr.State`` input).

Every view takes the slot it shows — "A", "B", or "A and B" side by side — and a map kind. A kind is
matched per model (``kind_for``: a DiffLlama's ``diff`` ↔ a standard model's ``softmax``), so one
choice shows comparable maps of both models at the same layer and head."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qsl, urlsplit

import gradio as gr
import numpy as np
from gradio import route_utils

from diffllama import analysis
from diffllama.provenance import Provenance, provenance

from . import figures, links
from .common import (CACHE, export_csv, export_json, gpu, image_file, load_slots, markdown_code, message, model_queue, plain,
                     user_errors)
from .run_store import current

SIDE_BY_SIDE = "A and B"
SLOTS = (SIDE_BY_SIDE, "A", "B")
KINDS = ("diff", "a1", "a2", "softmax")
VALUE_NOTE = "Cells hold what each key adds through the head, not only its weight:\n\n" + analysis.measures.markdown("contribution")
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
# blocks per side of each decomposition map, a third of the page wide (≈ 400 px): ≈ 3 px a block, and
# more would be finer than the screen (and a heavier figure for the browser to parse and draw)
DECOMPOSITION_SIZE = 128


def kind_for(trace, kind: str, value: str = "weight") -> str:
    """``kind`` where the model has it, else the model's own main map: the differential map for a
    DiffLlama asked for ``softmax``, the softmax map for a standard model asked for ``diff``/``a1``/``a2``.
    Contributions (``value``) come only from the main map, the one a head applies to its values."""
    if kind not in KINDS:
        raise ValueError(f"unknown map {kind!r}; choose one of {', '.join(KINDS)}")
    return kind if kind in trace.kinds and value == "weight" else trace.kinds[0]


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


def _slot_notes(run, slot: str, trace, kind: str, asked: str, value: str = "weight") -> list[str]:
    if kind == asked:
        notes = []
    elif asked in trace.kinds:  # a DiffLlama's A1 or A2 with contributions asked for
        notes = [f"contributions come from {kind!r}, the map the head applies to its values: showing those"]
    else:
        notes = [f"{trace.arch} has no {asked!r} map: showing its {kind!r} map"]
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
def show_map(tab: str, slot: str, layer: int, head: int, kind: str, size: int, value: str = "weight",
             request: gr.Request = None):
    """Each shown model's map at the same layer, head and (matched) kind — its weights, or its keys'
    contributions (``value``: "weight", "norm", "projection") — DiffLlama's decomposition
    A1 | A2 | A1 − λ·A2 (weights), and λ per layer."""
    run = current(request, tab)
    layer, head, size = int(layer), int(head), int(size)
    maps, parts, notes = {}, {"A": [None] * 3, "B": [None] * 3}, []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        matched = kind_for(trace, kind, value)
        problem = _fits(trace, s, slot == SIDE_BY_SIDE, layer, head, matched)
        if problem:
            notes.append(problem)
            continue
        notes += _slot_notes(run, s, trace, matched, kind, value)
        segments = run.segments.get(s, ())
        shown = analysis.attention_map(trace, layer, head, matched, size, value)
        maps[s] = figures.attention_heatmap(shown, f"Model {s} ({trace.arch}) · ", segments)
        if trace.lambdas:  # A1 and A2 pooled once (the trace's cache), D from them
            views = {k: analysis.attention_map(trace, layer, head, k, min(size, DECOMPOSITION_SIZE)) for k in ("a1", "a2", "diff")}
            parts[s] = figures.decomposition(views, f"{s} · ", segments)
    lambdas = {s: (t.lambdas, t.lambda_inits) for s, t in run.traces.items() if t.lambdas}
    profile = figures.lambda_profile({f"{s} ({run.models[s]})": v for s, v in lambdas.items()}) if lambdas else None
    notes += [VALUE_NOTE] if value != "weight" and maps else []
    stamp = stamper(request, run, "maps", slot=slot, layer=layer, head=head, kind=kind, size=size, value=value)
    return ("  \n".join(notes), *map(stamp, (maps.get("A"), maps.get("B"), *parts["A"], *parts["B"], profile)))


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


def sink_rows(slot: str, trace, sinks) -> list[list]:
    """Per map of one model: the share of heads whose first-token sink score exceeds ε, and the scores' mean."""
    return [[f"{slot} ({trace.arch})", kind, round(sinks.share_above(kind), 4), round(float(scores.mean()), 4),
             round(float(scores.max()), 4)] for kind, scores in sinks.scores.items()]


@user_errors
@gpu
def zoom(tab: str, slot: str, layer: int, head: int, kind: str, query_from: int, query_to: int, key_from: int,
         key_to: int, value: str = "weight", request: gr.Request = None):
    """Query tokens [from, to) × key tokens [from, to) of each shown model's map (its weights or its
    keys' contributions, ``value``), recomputed at full resolution from the trace (at most
    ``analysis.MAX_REGION`` a side)."""
    run = current(request, tab)
    rows, cols = (int(query_from), int(query_to)), (int(key_from), int(key_to))
    figures_by_slot, notes = {}, []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        matched = kind_for(trace, kind, value)
        problem = _fits(trace, s, slot == SIDE_BY_SIDE, int(layer), int(head), matched)
        if problem:
            notes.append(problem)
            continue
        # side by side, the two inputs can differ in length (generation): each is cut to its own
        fit = lambda r: (min(r[0], trace.seq_len - 1), min(r[1], trace.seq_len))  # noqa: E731
        region = analysis.attention_region(trace, int(layer), int(head), matched, fit(rows), fit(cols), value)
        figures_by_slot[s] = figures.region_heatmap(region, f"Model {s} ({trace.arch}) · ", run.segments.get(s, ()))
    stamp = stamper(request, run, "zoom", slot=slot, layer=int(layer), head=int(head), kind=kind, value=value,
                    query_from=rows[0], query_to=rows[1], key_from=cols[0], key_to=cols[1])
    return stamp(figures_by_slot.get("A")), stamp(figures_by_slot.get("B")), "  \n".join(notes), *rows, *cols


@user_errors
@gpu
def export_map(tab: str, slot: str, layer: int, head: int, kind: str, size: int, value: str = "weight",
               request: gr.Request = None) -> str:
    """The numbers behind the shown maps as CSV (model, map, cell value, query, key, value; future
    cells left out), written only when asked for."""
    run = current(request, tab)
    rows = []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        view = analysis.attention_map(trace, int(layer), int(head), kind_for(trace, kind, value), int(size), value)
        future = figures.future_mask(view.edges, view.edges)
        rows += [[s, view.kind, value, view.labels[i], view.labels[j], float(view.values[i, j])]
                 for i, j in zip(*np.nonzero(~future))]
    return export_csv(f"attention-{slot.replace(' ', '')}-L{int(layer)}-H{int(head)}-{kind}-{value}",
                      ["model", "map", "cell value", "query", "key", "value"], rows,
                      view_provenance(request, run, "maps", slot=slot, layer=int(layer), head=int(head), kind=kind,
                                      size=int(size), value=value))


@user_errors
@gpu
def show_overview(tab: str, slot: str, kind: str, measure: str, order: str, value: str = "weight",
                  request: gr.Request = None):
    """Every layer × head of each shown model as square thumbnails on one colour scale per model
    (their weights, or their keys' contributions: ``value``), with the chosen per-head measure of the
    weights under each, in the chosen order."""
    run = current(request, tab)
    if measure not in MEASURES or order not in ORDERS:
        raise ValueError(f"choose a measure of {', '.join(MEASURES)} and an order of {', '.join(ORDERS)}")
    galleries, orders, legends, samples = {}, {"A": [], "B": []}, [], []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        matched = kind_for(trace, kind, value)
        # kept with the trace (counted against its cache's bound): another measure or order redraws at once
        view = trace.cache.get(("overview", matched, OVERVIEW_SIZE, value),
                               lambda: analysis.overview(trace, matched, size=OVERVIEW_SIZE, value=value),
                               lambda kept: sum(m.nbytes for row in kept.maps for m in row))
        # the number under each head reads the rows the thumbnails average over (all, or the view's sample)
        values = getattr(view.stats, MEASURES[measure][0])  # [L, H]
        heads = [(l, h) for l in range(trace.num_layers) for h in range(trace.num_heads)]
        if order != ORDERS[0]:
            heads.sort(key=lambda lh: values[lh], reverse=order == ORDERS[2])
        limit = figures.overview_limit(view.maps)
        galleries[s] = [(image_file(figures.thumbnail(view.maps[l][h], matched, limit, value), f"{s}-L{l}-H{h}"),
                         f"L{l} H{h} · {values[l, h]:.3f}")
                        for l, h in heads]
        orders[s] = heads
        what = matched if value == "weight" else f"{figures.VALUE_TITLES[value]} through {matched}"
        legends.append(figures.scale_legend(matched, limit, f"<b>{s}</b> ({trace.arch}, {what}), every head:", value))
        blocks = len(view.edges) - 1
        if view.query_rows is not None:  # a long input: the view says which rows it read
            samples.append(f"{s}: {len(view.query_rows)} evenly spaced query rows of {trace.seq_len} "
                           f"({len(view.query_rows) // blocks} per block)")
    cells = "map" if value == "weight" else f"{figures.VALUE_TITLES[value]} map (what each key adds through the head)"
    note = (f"Each thumbnail is one head's {cells}, {'pooled to ' + str(blocks) + '×' + str(blocks) + ' blocks' if view.pooled else 'token by token'}; "
            f"the number under it is its {measure} (of its weights): {MEASURES[measure][1]}. Click a thumbnail to open that head above."
            + (f" Long input: thumbnails and numbers average a sample of query rows, not all ({'; '.join(samples)}); "
               "the map view above reads every row." if samples else ""))
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
    every reading) and attention sinks."""
    run = current(request, tab)
    stats, _, sinks, table, label = _comparison(run, span_text)
    stamp = stamper(request, run, "compare", span_text=span_text or "")
    return stamp(figures.head_stats_comparison(stats)), gr.update(value=table, label=label), sinks


@user_errors
@gpu
def outliers(tab: str, request: gr.Request = None) -> list[list]:
    """Activation outliers (the paper's Table 5) of both models: their own pass over every logit."""
    return _outlier_rows(current(request, tab))


@user_errors
@gpu
def export_comparison(tab: str, span_text, request: gr.Request = None) -> str:
    """The numbers behind the comparison, the outliers included, as JSON, written only when asked for."""
    run = current(request, tab)
    stats, allocation, sinks, _, _ = _comparison(run, span_text)
    return export_json("comparison", {"head_stats": {s: plain(r) for s, r in stats.items()},
                                      "span_allocation": {s: plain(r) for s, r in allocation.items()},
                                      "outliers": _outlier_rows(run), "sinks": sinks},
                       view_provenance(request, run, "compare", span_text=span_text or ""))


def _comparison(run, span_text):
    """Head statistics, reference-span allocation and sink rows of both models, and the allocation
    table with its label (which reference, which readings). Each model's statistics and sink scores
    come from one pass over its maps (``analysis.scan``: the layers in worker threads), kept with the
    trace (its cache), so another span or the export does not compute them again."""
    traces = run.traces

    def measured(slot: str, trace):
        def measure():
            sinks = analysis.SinkTotals(trace)
            stats = analysis.head_stats(trace, trace.kinds[0], sinks=sinks)  # one pass: statistics and sink scores
            return stats, sink_rows(slot, trace, sinks.result())
        return trace.cache.get(("comparison", slot), measure, lambda _: 0)  # a few kB

    results = {slot: measured(slot, trace) for slot, trace in traces.items()}
    references = {slot: _span(run, slot, span_text) for slot in traces}
    allocation = {slot: analysis.reference_allocation(traces[slot], reference)
                  for slot, reference in references.items() if reference is not None}
    first = next(iter(traces))
    label = allocation_label(allocation, references[first], run.texts[first])
    table = allocation_table(allocation, {s: t.arch for s, t in traces.items()}, per_layer=True)
    stats = {slot: result[0] for slot, result in results.items()}
    sinks = [row for result in results.values() for row in result[1]]
    return stats, allocation, sinks, table, label


def _outlier_rows(run) -> list[list]:
    """The outlier table's rows of each model, kept with its trace once computed."""
    def measure(slot: str, trace):
        outliers = analysis.activation_outliers(trace)
        return [[f"{slot} ({trace.arch})", what] + [round(values[k], 3) for k in ("top-1", "top-2", "top-3", "top-10", "top-100", "median")]
                for what, values in (("attention logits", outliers.attention_logits), ("hidden states", outliers.hidden_states))]
    return [row for slot, trace in run.traces.items()
            for row in trace.cache.get(("outliers", slot), lambda: measure(slot, trace), lambda _: 0)]


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
    return stamper(request, run, "maps")(figures.ablation_kl(result, f"Model {slot}, {title}")), table, summary


# --- links to a view, and the provenance of what a view exports ---------------------------------------------
LINKED_CONTROLS = {  # the controls a link to each view carries: the maps' (always shown first), then the view's
    "maps": ("slot", "layer", "head", "kind", "size", "value"),
    "zoom": ("slot", "layer", "head", "kind", "size", "value", "query_from", "query_to", "key_from", "key_to"),
    "overview": ("slot", "layer", "head", "kind", "size", "value", "measure", "order"),
    "compare": ("slot", "layer", "head", "kind", "size", "value", "span_text"),
}
COPY_SCRIPT = "(link) => { if (link && navigator.clipboard) navigator.clipboard.writeText(link).catch(() => {}); }"


def page_root(request) -> str:
    """The app's public address (behind a proxy too, as gradio works it out for file URLs), for links;
    "" (links relative to the page) when called without a request."""
    inner = getattr(request, "request", None)
    if inner is None:
        return ""
    return route_utils.get_root_url(inner, route_utils.get_api_call_path(inner), getattr(inner.app, "root_path", None))


def view_provenance(request, run, show: str, **controls) -> Provenance:
    """What a view of ``run`` is computed from: its models, inputs, layer / head / map when the view
    has them, and the link that reopens it (``show`` with ``controls``)."""
    # every tab's main action names its models source_a and source_b
    inputs = {**run.inputs, **{f"source_{slot.lower()}": source for slot, source in run.models.items()}}
    try:
        link = links.url(page_root(request), links.ViewLink(run.task, inputs, controls, show))
    except ValueError as error:  # inputs too long for a URL: the provenance says so instead of a link
        link = f"none: {error}"
    return provenance(run.models, run.inputs, controls.get("layer"), controls.get("head"), controls.get("kind"), link)


def stamper(request, run, show: str, **controls):
    """Stamps a figure of a view (``figures.provenance_note``) with ``view_provenance``."""
    record = view_provenance(request, run, show, **controls)
    return lambda figure: figures.provenance_note(figure, record)


def link_field(component) -> links.Field:
    """What a link may set ``component`` to: its type, and its range or choices."""
    if isinstance(component, gr.Checkbox):
        return links.Field(bool)
    if isinstance(component, (gr.Radio, gr.Dropdown)) and not getattr(component, "allow_custom_value", False):
        return links.Field(str, choices=tuple(value for _, value in component.choices))
    if isinstance(component, (gr.Slider, gr.Number)):
        whole = getattr(component, "precision", None) == 0 or isinstance(component, gr.Slider) and all(
            float(bound).is_integer() for bound in (component.minimum, component.step))
        return links.Field(int if whole else float, component.minimum, component.maximum)
    return links.Field(str)  # text, and a model slot (any source)


def link_maker(spec: links.LinkSpec):
    """The ``/<tab>_link`` endpoint of a tab whose links ``spec`` describes."""

    @user_errors
    def view_link(request: gr.Request, *values):
        """The link that reopens this tab with these inputs (its main action's, in order), runs it and
        opens the view ``show`` (the last value: maps, zoom, overview or compare) with these controls
        (the panel's, in order); refused when the link would be too long (gradio's inputs check each
        value's range and choices, as ``links.read`` does when the link is opened)."""
        *values, show = values
        inputs = dict(zip(spec.inputs, values))
        controls = dict(zip(spec.controls, values[len(spec.inputs):]))
        link = links.ViewLink(spec.tab, inputs, {name: controls[name] for name in LINKED_CONTROLS[show]}, show)
        return links.url(page_root(request), link)

    # the endpoint's parameters named as the link's (text, source_a, …, layer, …, show), not param_0, param_1, …
    Parameter = inspect.Parameter
    view_link.__signature__ = inspect.Signature(
        [Parameter("request", Parameter.POSITIONAL_ONLY, annotation=gr.Request)]
        + [Parameter(name, Parameter.POSITIONAL_OR_KEYWORD) for name in (*spec.inputs, *spec.controls, "show")])
    return view_link


def _hidden_stop(why: str) -> gr.Error:
    """Ends a chain of events quietly: the ``.success`` steps after it do not run, and nothing is shown."""
    return gr.Error(why, visible=False, print_exception=False)


def _has_link(link) -> None:
    """Goes on only when the page was opened with a link to this tab."""
    if link is None:
        raise _hidden_stop("the page was opened without a link to this tab")


@dataclass(frozen=True)
class Runs:
    """A tab's run events (its button's, and a link's on page load): what follows a run follows each."""

    events: tuple

    def success(self, fn, inputs=None, outputs=None, **settings) -> "Runs":
        return Runs(tuple(event.success(fn, inputs, outputs, **settings) for event in self.events))


def _showing(view: str):
    """Goes on only when the page's link opens ``view``."""
    def check(link):
        if link.show != view:
            raise _hidden_stop(f"the link opens {link.show}, not {view}")
    return check


@dataclass
class Panel:
    """The controls of the shared views, and every output a new run makes stale."""

    slot: gr.Radio
    layer: gr.Slider
    head: gr.Slider
    kind: gr.Dropdown
    value: gr.Radio
    stale: list
    tab: str  # the tab's id (its task), which links name
    name: str  # the prefix of the views' API endpoints
    controls: dict  # every control of the views by the views' parameter names (what links carry)
    views: dict  # view (links.VIEWS) -> (fn, inputs, outputs, its accordion or None)
    relayout: tuple  # (inputs, outputs) of ``layout``, run when a run's views are cleared
    share: tuple  # (button, "the link opens" choice, link box) of "Copy link to this view"
    link: gr.State  # the ViewLink the page was opened with, when it is this tab's (set once, at page load)
    opened: gr.State  # True once that link's view is open (later runs leave the views to the user)
    inputs: dict = field(default_factory=dict)  # the main action's inputs by parameter name (``run_on``)
    spec: links.LinkSpec | None = None  # what links to this tab may hold (``run_on``)

    def run_on(self, button: gr.Button, fn, inputs: list, outputs: list, run_key: gr.State, api_name: str):
        """Wire a tab's main action (an API endpoint, queued with the other model runs) to its button
        and to a page opened with a link to the tab; once it succeeds, clear the views of the previous
        run (and any error badge they carry), then open the link's view if it started the run."""
        load_slots(button, inputs)
        clicked = button.click(fn, inputs, outputs, api_name=api_name, **model_queue())
        # a page load sets every tab's link state (gradio may report it changed with no link): the check
        # runs outside the queue, so a page opened without a link to this tab sends no model-queue job
        linked = self.link.change(_has_link, self.link, None, queue=False, api_visibility="private") \
            .success(fn, inputs, outputs, api_visibility="private", **model_queue())
        self.open_linked_view(self.clear_on(linked))
        self.clear_on(clicked)
        self.share_links(fn, inputs)
        return Runs((clicked, linked))

    def clear_on(self, event):
        """Once ``event`` (a new run, or another part of the input) succeeds, the views still show the
        old one: clear them, and any error badge they carry, and fit them to the run's models (``layout``)."""
        inputs, fitted = self.relayout

        def cleared(tab: str, slot: str, request: gr.Request):
            fits = {id(component): update for component, update in zip(fitted, layout(tab, slot, request))}
            return [{**fits[id(c)], "value": None} if id(c) in fits else None for c in self.stale]
        return event.success(cleared, inputs, self.stale, api_visibility="private")

    def share_links(self, fn, inputs: list) -> None:
        """"Copy link to this view" and its endpoint ``/<name>_link``: the tab's inputs (named as
        ``fn``'s parameters) and the views' controls as a link."""
        self.inputs = dict(zip(inspect.signature(fn).parameters, inputs))
        self.spec = links.LinkSpec(self.tab, {n: link_field(c) for n, c in self.inputs.items()},
                                   {n: link_field(c) for n, c in self.controls.items()})
        button, show, box = self.share
        button.click(link_maker(self.spec), [*inputs, *self.controls.values(), show], box, api_name=f"{self.name}_link") \
            .success(None, box, None, js=COPY_SCRIPT, api_visibility="private")

    def open_linked_view(self, ran) -> None:
        """After ``ran`` (the run the page's link started): the link's controls, then the maps and the
        link's view, as their buttons would draw them."""
        private = dict(api_visibility="private")
        boxes = [box for *_, box in self.views.values() if box is not None]

        def pending(link, opened):
            if link is None or opened:  # an ordinary run: the views are the user's
                raise _hidden_stop("no link to open")

        def apply(link):
            return ([gr.update(value=link.controls[n]) if n in link.controls else gr.update() for n in self.controls]
                    + [gr.update(open=True) if box is self.views[link.show][3] else gr.update() for box in boxes] + [True])

        applied = ran.success(pending, [self.link, self.opened], None, **private) \
            .success(apply, self.link, [*self.controls.values(), *boxes, self.opened], **private)
        for view, (fn, inputs, outputs, _) in self.views.items():
            chosen = applied if view == "maps" else applied.success(_showing(view), self.link, None, **private)
            chosen.success(fn, inputs, outputs, api_visibility="private", **model_queue())

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
            value = gr.Radio(figures.VALUE_CHOICES, value="weight", label="cells: weight, or what each key adds (contribution)")
        with gr.Row():
            show = gr.Button("Show attention", variant="secondary")
            export = gr.Button("Export the maps' numbers (CSV)", size="sm")
        with gr.Row():  # a link recomputes the view from the inputs: nothing is stored
            share_view = gr.Radio(list(links.VIEWS), value=links.VIEWS[0], label="the link opens (after running the tab)",
                                  scale=2)
            with gr.Column(scale=1, min_width=160):  # the button keeps its own height beside the taller choices
                share = gr.Button("Copy link to this view", size="sm")
            link_box = gr.Textbox(label="link to this view: reopens the tab with these models and inputs, runs it "
                                        "and opens the view", buttons=["copy"], interactive=False, max_lines=1, scale=3,
                                  elem_id=f"{name}-link")
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
        map_inputs = [run, slot, layer, head, kind, size, value]
        show.click(show_map, map_inputs, map_outputs, api_name=f"{name}_attention", **limits)
        export.click(export_map, map_inputs, csv, api_name=f"{name}_export", **limits)
    with gr.Accordion("Zoom: a region at full resolution", open=False) as zoom_box:
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
        zoom_inputs, zoom_outputs = [run, slot, layer, head, kind, *ranges, value], [zoom_a, zoom_b, zoom_note, *ranges]
        zoom_button.click(zoom, zoom_inputs, zoom_outputs, js=ZOOM_SCRIPT.replace("PLOTS", str(plots)),
                                   api_name=f"{name}_zoom", **limits)
    with gr.Accordion("Overview: every layer × head — click one to open it", open=False) as overview_box:
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
        overview_inputs = [run, slot, kind, measure, order, value]
        overview_outputs = [gallery_a, gallery_b, overview_legend, overview_note, order_a, order_b]
        overview_button.click(show_overview, overview_inputs, overview_outputs, api_name=f"{name}_overview", **limits)
        opened = [gallery.select(open_head, heads, [layer, head], **private).then(
            show_map, map_inputs, map_outputs, **private, **limits) for gallery, heads in ((gallery_a, order_a), (gallery_b, order_b))]
    with gr.Accordion("A vs B: entropy, sparsity, sink, negative mass, span allocation, outliers", open=False) as compare_box:
        span = gr.Textbox(label="span to measure (text from the input; empty = the tab's own reference, e.g. the gold answer)")
        with gr.Row():
            compare_button = gr.Button("Compare A and B")
            export_button = gr.Button("Export the comparison's numbers (JSON)", size="sm")
        stats = gr.Plot()
        allocation = gr.Dataframe(label="attention from the last token to the span vs the rest of the input", wrap=True)
        sinks = gr.Dataframe(headers=["model", "map", f"share of heads with sink score > {analysis.SINK_THRESHOLD}",
                                      "mean sink score", "largest sink score"], label="attention sinks on the first token")
        # exact top-k and median of every logit: a pass of its own, so only when asked for
        outliers_button = gr.Button("Activation outliers (exact, one more pass over every logit)", size="sm")
        outlier_table = gr.Dataframe(headers=["model", "values", "top-1", "top-2", "top-3", "top-10", "top-100", "median"],
                                     label="activation outliers: |pre-softmax attention logits| and |decoder-layer outputs|")
        comparison_file = gr.File(label="numbers behind the comparison (JSON)")
        with gr.Accordion("definitions of these measures", open=False):
            gr.Markdown(COMPARISON_NOTE)
        compare_inputs, compare_outputs = [run, span], [stats, allocation, sinks]
        compare_button.click(compare, compare_inputs, compare_outputs, api_name=f"{name}_compare", **limits)
        outliers_button.click(outliers, run, outlier_table, api_name=f"{name}_outliers", **limits)
        export_button.click(export_comparison, compare_inputs, comparison_file, api_name=f"{name}_compare_export", **limits)
    with gr.Accordion("λ ablation (a DiffLlama): what changes when the subtraction is switched off", open=False):
        with gr.Row():
            ablated = gr.Radio(["A", "B"], value="A", label="model (must be a DiffLlama)")
            lambda_value = gr.Slider(0.0, 1.5, value=0.0, step=0.05,
                              label="λ in every layer (0 = subtraction off: only A1 drives the output)")
        ablate_button = gr.Button("Run ablation")
        ablation_note = gr.Markdown()
        ablation_plot = gr.Plot()
        ablation_table = gr.Dataframe(headers=["position", "token", "before (P)", "after (P)", "P(before) after", "KL"],
                                      label="top prediction before → after ablation", wrap=True)
        ablate_button.click(ablate, [run, ablated, lambda_value], [ablation_plot, ablation_table, ablation_note],
                            api_name=f"{name}_ablation", **limits)
    fitted = [map_a, map_b, *parts, profile, zoom_a, zoom_b, gallery_a, gallery_b]  # what layout() updates
    # fitted when the slot changes and when a run's views are cleared (``clear_on``), not after each view:
    # every event costs the page a pass over every output's value, which made up most of a view's time
    slot.change(layout, [run, slot], fitted, **private)
    for event in opened:  # a clicked thumbnail opens its head in the main view, scrolled into sight
        event.then(None, js=f"() => document.getElementById('{name}-maps').scrollIntoView()", **private)
    stale = [*map_outputs, csv, zoom_a, zoom_b, zoom_note, gallery_a, gallery_b, overview_legend, overview_note,
             stats, allocation, sinks, outlier_table, comparison_file, ablation_plot, ablation_table, ablation_note]
    controls = dict(slot=slot, layer=layer, head=head, kind=kind, size=size, value=value, query_from=query_from, query_to=query_to,
                    key_from=key_from, key_to=key_to, measure=measure, order=order, span_text=span)
    views = {"maps": (show_map, map_inputs, map_outputs, None), "zoom": (zoom, zoom_inputs, zoom_outputs, zoom_box),
             "overview": (show_overview, overview_inputs, overview_outputs, overview_box),
             "compare": (compare, compare_inputs, compare_outputs, compare_box)}
    # the run key is the tab's task, which is also its tab's id
    return Panel(slot, layer, head, kind, value, stale, tab=run.value, name=name, controls=controls, views=views,
                 relayout=([run, slot], fitted), share=(share, share_view, link_box), link=gr.State(None),
                 opened=gr.State(False))


def open_links(demo: gr.Blocks, tabs: gr.Tabs, panels: list[Panel]):
    """A page opened with a link (``?tab=…``, ``links``): select the tab and fill its inputs; the
    tab's panel then runs it and opens the view (``Panel.open_linked_view``). A bad link is refused
    with a message, and the page works as usual. Also ``/read_link``: what a link holds, as the
    arguments of the calls that reproduce it. Returns the page-load event."""
    specs = {panel.tab: panel.spec for panel in panels}
    inputs = [(panel, name, component) for panel in panels for name, component in panel.inputs.items()]

    def open_link(request: gr.Request):
        try:
            link = links.read(request.query_params.multi_items(), specs)
        except ValueError as error:  # a warning, not an error: the page's inputs carry no error badge
            gr.Warning(f"This link cannot be opened: {message(error, 'open_link')}. The app works as usual.", duration=None)
            link = None
        mine = lambda panel: link is not None and panel.tab == link.tab  # noqa: E731
        return ([gr.Tabs(selected=link.tab) if link else gr.update()]
                + [gr.update(value=link.inputs[name]) if mine(panel) and name in link.inputs else gr.update()
                   for panel, name, _ in inputs]
                + [link if mine(panel) else None for panel in panels])

    @user_errors
    def view_of_link(link: str) -> dict:
        """What a link to a view holds: ``tab``, ``inputs`` (the tab's main action's arguments by
        name, e.g. ``/classify``'s), ``show`` (the view) and ``controls`` (that view's arguments by
        name, e.g. ``/classify_attention``'s layer, head, kind, size), every value checked."""
        query = urlsplit(link).query if "?" in link else link  # a whole link, or its query alone
        view = links.read(parse_qsl(query, keep_blank_values=True), specs)
        if view is None:
            raise ValueError("this address holds no link to a view: a link has ?tab=… and the tab's inputs")
        return asdict(view)

    gr.api(view_of_link, api_name="read_link")
    return demo.load(open_link, None, [tabs, *(component for *_, component in inputs), *(p.link for p in panels)],
                     api_visibility="private")


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
    return [...args.slice(0, args.length - 5), ...tokens(layout.yaxis.range, meta.row_edges),
            ...tokens(layout.xaxis.range, meta.col_edges), args[args.length - 1]];  // the cell value comes last
  }
  return args;
}"""
