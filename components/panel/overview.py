"""The overview: every layer × head of each shown model as square thumbnails on one colour scale per
model, with a per-head measure of its weights under each (its definition is ``analysis.measures``'),
in the chosen order; a click opens that head in the maps view. Each model's thumbnails are one piece of
HTML (``figures.overview_html``), a click on one firing the HTML's select event with its index."""

from __future__ import annotations

import gradio as gr

from diffllama.analysis import derived, measures

from .. import figures
from ..errors import user_errors
from ..model_queue import gpu
from ..run_store import current
from .slots import kind_for, shown_slots
from .spec import Shown, ViewSpec

OVERVIEW_SIZE = 24  # blocks per side of an overview thumbnail
MEASURES = {  # the choice under each thumbnail -> (its name in ``analysis.measures``, its ``HeadStats`` field)
    "entropy": ("entropy", "entropy"), "sink mass": ("first-token mass", "sink_mass"),
    "negative mass": ("negative mass", "negative_mass")}
ORDERS = ("layer × head", "measure, low first", "measure, high first")


def _gallery(slot: str, trace, view, kind: str, measure: str, order: str, value: str) -> tuple[str, list, str]:
    """One model's thumbnails with their captions (HTML), their (layer, head) in click order, and the legend."""
    values = getattr(view.stats, MEASURES[measure][1])  # [L, H], over the rows the thumbnails average
    heads = [(l, h) for l in range(trace.num_layers) for h in range(trace.num_heads)]
    if order != ORDERS[0]:
        heads.sort(key=lambda lh: values[lh], reverse=order == ORDERS[2])
    limit = figures.overview_limit(view.maps)
    tiles = [(figures.thumbnail(view.maps[l][h], kind, limit, value), f"L{l} H{h} · {values[l, h]:.3f}")
             for l, h in heads]
    what = kind if value == "weight" else f"{figures.VALUE_TITLES[value]} through {kind}"
    return figures.overview_html(tiles, f"Model {slot} ({trace.arch}), {what}", trace.num_heads), heads, figures.scale_legend(kind, limit, f"<b>{slot}</b> ({trace.arch}, {what}), every head:", value)


@user_errors
@gpu
def show_overview(tab: str, slot: str, kind: str, measure: str, order: str, value: str = "weight",
                  request: gr.Request = None) -> dict:
    """Every layer × head of each shown model as thumbnails (weights, or keys' contributions:
    ``value``), the chosen measure of the weights under each, in the chosen order."""
    run = current(request, tab)
    if measure not in MEASURES or order not in ORDERS:
        raise ValueError(f"choose a measure of {', '.join(MEASURES)} and an order of {', '.join(ORDERS)}")
    results, legends, samples = {"gallery_A": None, "gallery_B": None, "order_A": [], "order_B": []}, [], []
    for s in shown_slots(run, slot):
        trace = run.traces[s]
        matched = kind_for(trace, kind, value)
        view = derived.overview(trace, matched, OVERVIEW_SIZE, value)
        results[f"gallery_{s}"], results[f"order_{s}"], legend = _gallery(s, trace, view, matched, measure, order, value)
        legends.append(legend)
        if view.query_rows is not None:  # a long input: the view says which rows it read
            samples.append(f"{s}: {len(view.query_rows)} evenly spaced query rows of {trace.seq_len}")
    cells = "map" if value == "weight" else f"{figures.VALUE_TITLES[value]} map (what each key adds through the head)"
    pooled = f"pooled to {len(view.edges) - 1}×{len(view.edges) - 1} blocks" if view.pooled else "token by token"
    note = (f"Each thumbnail is one head's {cells}, {pooled}; the number under it is its {measure} (of its weights). "
            f"Click a thumbnail to open that head above.\n\n{measures.markdown(MEASURES[measure][0])}"
            + (f"\n\nLong input: thumbnails and numbers average a sample of query rows, not all ({'; '.join(samples)}); "
               "the map view above reads every row." if samples else ""))
    return results | {"legend": "".join(legends), "overview_note": note}


def open_head(order: list, event: gr.SelectData):
    """A thumbnail's click: its layer and head go to the main view's sliders."""
    layer, head = order[event.index]
    return layer, head


def build(name: str, maps: ViewSpec) -> ViewSpec:
    with gr.Accordion("Overview: every layer × head — click one to open it", open=False) as box:
        with gr.Row():
            measure = gr.Radio(list(MEASURES), value="entropy", label="number under each head")
            order = gr.Radio(list(ORDERS), value=ORDERS[0], label="order")
        button = gr.Button("Draw overview")
        note, legend = gr.Markdown(), gr.HTML()
        # no label over the thumbnails: each model's HTML names it in its own title
        galleries = {f"gallery_{s}": gr.HTML(js_on_load=figures.CLICK_SELECT_JS, elem_id=f"{name}-overview-{s}")
                     for s in "AB"}
        orders = {f"order_{s}": gr.State([]) for s in "AB"}  # (layer, head) of each thumbnail, in click order
    controls = dict(slot=maps.controls["slot"], kind=maps.controls["kind"], measure=measure, order=order,
                    value=maps.controls["value"])
    return ViewSpec("overview", show_overview, controls, galleries | {"legend": legend, "overview_note": note} | orders,
                    button, "overview", box, shown={k: Shown(k[-1]) for k in galleries})
