"""The attention views every tab shares, one module per view, each declared by one ``ViewSpec``:

- ``maps``: A and B at one layer / head, the decomposition, λ per layer
- ``zoom``: a region at full resolution (pooled past the limit), find text, export a region as CSV
- ``overview``: every layer × head as thumbnails, a measure under each
- ``compare``: A vs B statistics, span allocation, sinks, activation outliers
- ``ablation``: λ switched off or changed
- ``sharing`` and ``provenance``: links that reopen a view, and what a figure was computed from
- ``picking``: a click on a token (a map's axis or cell, the heat) makes it the query
- ``runner``: a tab's run and its views wired together (one runner for every tab)

Views read the tab's last run (a ``run_store.Run``, looked up by the tab's key, a ``gr.State``)."""

from __future__ import annotations

import gradio as gr

from .. import links
from ..model_queue import model_queue
from . import ablation, compare, maps, overview, picking, zoom
from .compare import ALLOCATION_NOTE, allocation_label, allocation_shown
from .runner import Panel, Runs
from .spec import fit, shown_outputs
from .sharing import open_links
from .slots import window_note

__all__ = ["ALLOCATION_NOTE", "Panel", "Runs", "allocation_label", "allocation_shown", "build", "open_links", "window_note"]


def build(run: gr.State, name: str, heat=None) -> Panel:
    """The shared views, wired to the tab's ``run`` key (a ``gr.State`` holding the tab's name in the
    run store); ``name`` prefixes their endpoints; a tab's token ``heat`` view joins what links carry."""
    with gr.Accordion("Attention maps: A and B at the same layer / head", open=True, elem_id=f"{name}-maps"):
        edited = gr.Markdown(elem_classes=["edited-note"])
        picker = picking.build(name, [f"{name}-{view}-{s}" for view in ("map", "zoom") for s in "AB"])
        main = maps.build(name)
        with gr.Row():  # a link recomputes the view from the inputs: nothing is stored
            show = gr.Radio(list(links.VIEWS), value=links.VIEWS[0], label="the link opens (after running the tab)", scale=2)
            with gr.Column(scale=1, min_width=160):  # the button keeps its own height beside the taller choices
                share = gr.Button("Copy link to this view", size="sm")
            box = gr.Textbox(label="link to this view: reopens the tab with these models and inputs, runs it and opens "
                                   "the view", buttons=["copy"], interactive=False, max_lines=1, scale=3, elem_id=f"{name}-link")
    specs = [main, zoom.build(name, main), overview.build(name, main), compare.build(), ablation.build()]
    controls = {n: c for spec in specs if spec.linked for n, c in spec.controls.items()}
    if heat is not None:
        controls |= dict(heat_layer=heat.layer, heat_query=heat.position, heat_shared=heat.shared, heat_value=heat.value)
    for spec in specs:
        spec.wire(run, name, **model_queue())
    # the shown models' change fits the views (nothing before a run), outside the queue
    main.controls["slot"].change(fit(specs), [run, main.controls["slot"]], shown_outputs(specs), queue=False,
                                 api_visibility="private")
    opened_head(name, run, main, specs[2])
    picking.wire(picker, run, specs[3], heat)
    # the run key is the tab's task, which is also its tab's id
    return Panel(specs, run, run.value, name, controls, (share, show, box), edited)


def opened_head(name: str, run: gr.State, main, gallery_view) -> None:
    """A clicked thumbnail opens its head in the maps view, scrolled into sight."""
    for s in "AB":
        clicked = gallery_view.outputs[f"gallery_{s}"].select(overview.open_head, gallery_view.outputs[f"order_{s}"],
                                                                [main.controls["layer"], main.controls["head"]],
                                                                api_visibility="private")
        main.run_after(clicked, run, **model_queue()) \
            .then(None, js=f"() => document.getElementById('{name}-maps').scrollIntoView()", api_visibility="private")
