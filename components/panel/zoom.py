"""The zoom: query tokens × key tokens of each shown model's map at full resolution, however long the
input; a region wider than ``analysis.MAX_REGION`` tokens opens pooled to the finest blocks that fit
(and says so). Text typed in "find" becomes the keys of the region, read by the input's last tokens.
Any region exports at full resolution as CSV, with its provenance."""

from __future__ import annotations

import math

import gradio as gr
import numpy as np

from diffllama import analysis

from .. import figures
from ..errors import user_errors
from ..exports import export_csv
from ..model_queue import gpu
from ..run_store import current
from ..safe_text import for_markdown
from .provenance import view_provenance
from .slots import each_shown
from .spec import Action, Shown, ViewSpec

DEFAULT_ZOOM = 48  # tokens per side of the zoom region before the user picks one
FOUND_MARGIN = 8  # key tokens either side of the found text
EXPORT_CELLS = 1 << 20  # cells per model a CSV export holds at most (≈ 50 MB of text)


def _tiles(start: int, end: int) -> list[tuple[int, int]]:
    return [(a, min(a + analysis.MAX_REGION, end)) for a in range(start, end, analysis.MAX_REGION)]


def full_region(trace, layer: int, head: int, kind: str, rows: tuple[int, int], cols: tuple[int, int],
                value: str) -> np.ndarray:
    """The region at full resolution, read in tiles of at most ``analysis.MAX_REGION`` a side."""
    return np.block([[analysis.attention_region(trace, layer, head, kind, r, c, value).values for c in _tiles(*cols)]
                     for r in _tiles(*rows)])


def _edges(start: int, end: int, step: int) -> list[int]:
    return list(range(start, end, step)) + [end]


def block_step(rows: tuple[int, int], cols: tuple[int, int]) -> int:
    """Tokens per block of a region: 1 up to ``analysis.MAX_REGION`` a side, the finest that fits beyond."""
    return math.ceil(max(rows[1] - rows[0], cols[1] - cols[0]) / analysis.MAX_REGION)


def pooled_region(trace, layer: int, head: int, kind: str, rows, cols, value: str, title: str, segments):
    """A region wider than ``MAX_REGION``: the full-resolution cells pooled to blocks of ``step``
    tokens, as the pooled map is (mean over a block's queries, sum over its keys)."""
    step = block_step(rows, cols)
    row_edges, col_edges = _edges(*rows, step), _edges(*cols, step)
    values = full_region(trace, layer, head, kind, rows, cols, value)
    summed = np.add.reduceat(np.add.reduceat(values, np.subtract(row_edges[:-1], rows[0]), axis=0),
                             np.subtract(col_edges[:-1], cols[0]), axis=1)
    values = summed / np.diff(row_edges)[:, None]
    lambda_ = f", λ = {trace.lambdas[layer]:.3f}" if trace.lambdas and kind == "diff" else ""
    title = (f"{title}layer {layer}, head {head}: {figures.KIND_TITLES.get(kind, kind)}{lambda_}<br><sup>queries "
             f"{rows[0]}–{rows[1] - 1} × keys {cols[0]}–{cols[1] - 1} in blocks of {step} tokens (the finest that fits "
             f"{analysis.MAX_REGION} a side)</sup>")
    return figures.attention_figure(values, row_edges, col_edges, analysis.block_labels(trace, row_edges),
                                    analysis.block_labels(trace, col_edges), kind, title, segments, value=value)


def _cut(trace, span: tuple[int, int]) -> tuple[int, int]:
    """A range cut to the model's input (side by side, the two inputs can differ in length)."""
    start = min(max(int(span[0]), 0), trace.seq_len - 1)
    return start, min(max(int(span[1]), start + 1), trace.seq_len)


@user_errors
@gpu
def zoom(tab: str, slot: str, layer: int, head: int, kind: str, query_from: int, query_to: int, key_from: int,
         key_to: int, value: str = "weight", request: gr.Request = None) -> dict:
    """Query tokens [from, to) × key tokens [from, to) of each shown model's map (its weights or its
    keys' contributions, ``value``), recomputed from the trace: at full resolution up to
    ``analysis.MAX_REGION`` a side, pooled to the finest blocks that fit beyond."""
    run = current(request, tab)
    layer, head = int(layer), int(head)
    shown, notes = each_shown(run, slot, layer, head, kind, value)
    results = {"zoom_A": None, "zoom_B": None}
    for s, trace, matched in shown:
        rows, cols = _cut(trace, (query_from, query_to)), _cut(trace, (key_from, key_to))
        prefix, segments = f"Model {s} ({trace.arch}) · ", run.segments.get(s, ())
        step = block_step(rows, cols)
        if step > 1:
            figure = pooled_region(trace, layer, head, matched, rows, cols, value, prefix, segments)
            notes.append(f"**{s}**: the region is wider than {analysis.MAX_REGION} tokens, so it is shown in blocks "
                         "(the finest that fit); narrow it for single tokens, or export it at full resolution")
        else:
            region = analysis.attention_region(trace, layer, head, matched, rows, cols, value)
            figure = figures.region_heatmap(region, prefix, segments)
        results[f"zoom_{s}"] = figure  # its title says what it shows: single tokens, or blocks of them
    ranges = dict(query_from=int(query_from), query_to=int(query_to), key_from=int(key_from), key_to=int(key_to))
    return results | {"zoom_note": "  \n".join(notes)} | ranges


def found_region(run, text: str) -> dict:
    """The zoom ranges for text typed in "find": its tokens (and a few either side) as keys, read by
    the last queries of model A's input (or the first model's), where a question is asked."""
    if not text or not text.strip():
        raise ValueError("type text that occurs in the input to find it")
    slot = "A" if "A" in run.traces else next(iter(run.traces))
    trace = run.traces[slot]
    span = analysis.find_reference(run.texts[slot], text, run.span_sequence, "text to find")
    start, end = analysis.token_spans(trace, span.start, span.end, run.span_sequence if run.question is not None else None)
    last = trace.seq_len
    return dict(query_from=max(end, last - DEFAULT_ZOOM), query_to=last, key_from=max(0, start - FOUND_MARGIN),
                key_to=min(last, end + FOUND_MARGIN), found=start)


@user_errors
def find(tab: str, text: str, request: gr.Request = None) -> dict:
    """Where ``text`` is in the input: the zoom's ranges set around it (then the zoom is drawn)."""
    region = found_region(current(request, tab), text)
    found = region.pop("found")
    return region | {"found_note": f"found {for_markdown(text.strip())} at token {found}: keys around it, read by the "
                                  "input's last tokens"}


@user_errors
@gpu
def export_region(tab: str, slot: str, layer: int, head: int, kind: str, query_from: int, query_to: int,
                  key_from: int, key_to: int, value: str = "weight", request: gr.Request = None) -> dict:
    """The zoom's region of each shown model at full resolution as CSV (model, map, cell value, query,
    key, value; future cells left out), after its provenance."""
    run = current(request, tab)
    shown, _ = each_shown(run, slot, int(layer), int(head), kind, value)
    rows = []
    for s, trace, matched in shown:
        queries, keys = _cut(trace, (query_from, query_to)), _cut(trace, (key_from, key_to))
        if (queries[1] - queries[0]) * (keys[1] - keys[0]) > EXPORT_CELLS:
            raise ValueError(f"the region (query_from…query_to × key_from…key_to) holds more than {EXPORT_CELLS:,} "
                             "cells; export a narrower one")
        values = full_region(trace, int(layer), int(head), matched, queries, keys, value)
        labels = analysis.block_labels(trace, list(range(trace.seq_len + 1)))
        rows += [[s, matched, value, labels[queries[0] + i], labels[keys[0] + j], float(values[i, j])]
                 for i, j in zip(*np.nonzero(~figures.future_mask(_edges(*queries, 1), _edges(*keys, 1))))]
    controls = dict(slot=slot, layer=int(layer), head=int(head), kind=kind, value=value, query_from=int(query_from),
                    query_to=int(query_to), key_from=int(key_from), key_to=int(key_to))
    return {"csv": export_csv(f"region-{slot.replace(' ', '')}-L{int(layer)}-H{int(head)}-{kind}-{value}",
                      ["model", "map", "cell value", "query", "key", "value"], rows,
                      view_provenance(request, run, "zoom", **controls))}


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


def build(name: str, maps: ViewSpec) -> ViewSpec:
    """The zoom's ranges, buttons and plots, on the maps' controls, with "find" and the export."""
    with gr.Accordion("Zoom: a region token by token (in blocks when wider than the limit)", open=False) as box:
        gr.Markdown("Drag a box on a map above (plotly's zoom), then press **Recompute the region** — or type token "
                    "ranges, or find text. The region is recomputed from the trace token by token, however long the input.")
        with gr.Row():
            ranges = dict(query_from=gr.Number(0, precision=0, label="query tokens from"),
                          query_to=gr.Number(DEFAULT_ZOOM, precision=0, label="to (exclusive)"),
                          key_from=gr.Number(0, precision=0, label="key tokens from"),
                          key_to=gr.Number(DEFAULT_ZOOM, precision=0, label="to (exclusive)"))
        with gr.Row():
            wanted = gr.Textbox(label="find text in the input (keys around it, read by the last tokens)", scale=3)
            find_button = gr.Button("Find and zoom", size="sm", scale=1)
        with gr.Row():
            button = gr.Button("Recompute the region", variant="secondary")
            export_button = gr.Button("Export the region at full resolution (CSV)", size="sm")
        found, note = gr.Markdown(), gr.Markdown()
        with gr.Row(equal_height=True):
            # labelled by model only: each figure's title says whether it is token by token or in blocks
            plots = {f"zoom_{s}": gr.Plot(label=f"model {s}", elem_id=f"{name}-zoom-{s}") for s in "AB"}
        csv = gr.File(label="the region's numbers at full resolution (CSV)", height=90, elem_classes=["export-file"])
    shared = {k: maps.controls[k] for k in ("slot", "layer", "head", "kind")}
    controls = shared | ranges | {"value": maps.controls["value"]}
    ids = [f"{name}-map-A", f"{name}-map-B", f"{name}-zoom-A", f"{name}-zoom-B"]
    actions = [Action(find_button, find, [wanted], {"found_note": found} | ranges, "find", redraw=True),
               Action(export_button, export_region, list(controls.values()), {"csv": csv}, "region_export")]
    return ViewSpec("zoom", zoom, controls, plots | {"zoom_note": note} | ranges, button, "zoom", box,
                    shown={k: Shown(k[-1]) for k in plots}, js=ZOOM_SCRIPT.replace("PLOTS", str(ids)), actions=actions)
