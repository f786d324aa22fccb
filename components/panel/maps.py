"""The maps view: each shown model's map at one layer, head and (matched) kind — its weights or its
keys' contributions — DiffLlama's decomposition A1 | A2 | A1 − λ·A2, and λ per layer."""

from __future__ import annotations

import gradio as gr
import numpy as np

from diffllama import analysis

from .. import figures
from ..errors import user_errors
from ..exports import export_csv
from ..model_queue import gpu
from ..run_store import current
from .provenance import view_provenance
from .slots import KINDS, SIDE_BY_SIDE, SLOTS, each_shown
from .spec import Action, Shown, ViewSpec

VALUE_NOTE = "Cells hold what each key adds through the head, not only its weight:\n\n" + analysis.measures.markdown("contribution")
MAX_INDEX = 127  # slider bound until the models are loaded (links are checked against the models themselves)
# blocks per side of each decomposition map, a third of the page wide (≈ 400 px): ≈ 3 px a block, and
# more would be finer than the screen (and a heavier figure for the browser to parse and draw)
DECOMPOSITION_SIZE = 128
PARTS = ("a1", "a2", "diff")


@user_errors
@gpu
def show_map(tab: str, slot: str, layer: int, head: int, kind: str, size: int, value: str = "weight",
             request: gr.Request = None) -> dict:
    """Each shown model's map at the same layer, head and (matched) kind — its weights, or its keys'
    contributions (``value``: "weight", "norm", "projection") — DiffLlama's decomposition
    A1 | A2 | A1 − λ·A2 (weights), and λ per layer."""
    run = current(request, tab)
    layer, head, size = int(layer), int(head), int(size)
    shown, notes = each_shown(run, slot, layer, head, kind, value)
    results = {f"map_{s}": None for s in "AB"} | {f"{k}_{s}": None for s in "AB" for k in PARTS}
    for s, trace, matched in shown:
        segments = run.segments.get(s, ())
        view = analysis.attention_map(trace, layer, head, matched, size, value)
        results[f"map_{s}"] = figures.attention_heatmap(view, f"Model {s} ({trace.arch}) · ", segments)
        if trace.lambdas:  # A1 and A2 pooled once (the trace's cache), D from them
            views = {k: analysis.attention_map(trace, layer, head, k, min(size, DECOMPOSITION_SIZE)) for k in PARTS}
            results.update(zip((f"{k}_{s}" for k in PARTS), figures.decomposition(views, f"{s} · ", segments)))
    lambdas = {f"{s} ({run.models[s]})": (t.lambdas, t.lambda_inits) for s, t in run.traces.items() if t.lambdas}
    notes += [VALUE_NOTE] if value != "weight" and shown else []
    return results | {"note": "  \n".join(notes), "profile": figures.lambda_profile(lambdas) if lambdas else None}


@user_errors
@gpu
def export_map(tab: str, slot: str, layer: int, head: int, kind: str, size: int, value: str = "weight",
               request: gr.Request = None) -> dict:
    """The numbers of the shown (pooled) maps as CSV (model, map, cell value, query, key, value; future
    cells left out), after their provenance; the zoom exports any region at full resolution."""
    run = current(request, tab)
    shown, _ = each_shown(run, slot, int(layer), int(head), kind, value)
    rows = []
    for s, trace, matched in shown:
        view = analysis.attention_map(trace, int(layer), int(head), matched, int(size), value)
        future = figures.future_mask(view.edges, view.edges)
        rows += [[s, view.kind, value, view.labels[i], view.labels[j], float(view.values[i, j])]
                 for i, j in zip(*np.nonzero(~future))]
    controls = dict(slot=slot, layer=int(layer), head=int(head), kind=kind, size=int(size), value=value)
    return {"csv": export_csv(f"attention-{slot.replace(' ', '')}-L{int(layer)}-H{int(head)}-{kind}-{value}",
                              ["model", "map", "cell value", "query", "key", "value"], rows,
                              view_provenance(request, run, "maps", **controls))}


def build(name: str) -> ViewSpec:
    """The maps' controls (shared by the other views) and outputs; ``name`` prefixes their element ids."""
    with gr.Row():
        slot = gr.Radio(list(SLOTS), value=SIDE_BY_SIDE, label="models")
        layer = gr.Slider(0, MAX_INDEX, value=0, step=1, label="layer")
        head = gr.Slider(0, MAX_INDEX, value=0, step=1, label="head (differential head for DiffLlama)")
        kind = gr.Dropdown(list(KINDS), value="diff", label="map (diff ↔ softmax matched per model)")
        size = gr.Slider(32, 512, value=256, step=16, label="display size (blocks)")
        value = gr.Radio(figures.VALUE_CHOICES, value="weight", label="cells: weight, or what each key adds (contribution)")
    with gr.Row():
        button = gr.Button("Show attention", variant="secondary")
        export = gr.Button("Export the shown maps' numbers (CSV)", size="sm")
    note = gr.Markdown()
    outputs = {"note": note}
    with gr.Row(equal_height=True):
        outputs |= {f"map_{s}": gr.Plot(label=f"model {s}", elem_id=f"{name}-map-{s}") for s in "AB"}
    with gr.Accordion("DiffLlama decomposition: A1 | A2 | A1 − λ·A2", open=True):
        for s in "AB":
            with gr.Row():
                outputs |= {f"{k}_{s}": gr.Plot(label=f"{s}: {figures.KIND_TITLES[k]}", visible=False) for k in PARTS}
    outputs["profile"] = gr.Plot(label="λ per layer", visible=False)
    csv = gr.File(label="numbers behind the shown maps (CSV; the zoom exports a region at full resolution)", height=90,
                  elem_classes=["export-file"])
    shown = {f"map_{s}": Shown(s) for s in "AB"} | {f"{k}_{s}": Shown(s, differential=True) for s in "AB" for k in PARTS}
    controls = dict(slot=slot, layer=layer, head=head, kind=kind, size=size, value=value)
    return ViewSpec("maps", show_map, controls, outputs, button, "attention", shown=shown | {"profile": Shown(differential=True)},
                    actions=[Action(export, export_map, list(controls.values()), {"csv": csv}, "export")])
