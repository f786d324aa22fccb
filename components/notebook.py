"""The app's figures in a notebook: a ``diffllama`` trace drawn by the same ``figures`` builders the
app uses, without starting the app (nothing here imports gradio). Each function returns a plotly
``go.Figure`` (or a list of them), which Jupyter shows as it is::

    import diffllama
    from components import notebook

    trace = diffllama.load("assets/models/diffllama-lm").trace("The magic number of Lyon is 4821. ...")
    notebook.attention_map(trace, layer=2, head=1)

``kind`` is a map of the trace (``trace.kinds``: "diff", "a1", "a2" for DiffLlama, "softmax" otherwise);
None picks the model's own (the differential map, or the softmax map). ``value`` is what the cells hold,
as the app's "weight | contribution" toggle: "weight", or each key's contribution through the head,
"norm" (‖c‖) or "projection" (along the head's output), which come from the model's own map only."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from diffllama import Trace, analysis

from . import figures


def attention_map(trace: Trace, layer: int, head: int, kind: str | None = None, size: int = 512,
                  value: str = "weight", title: str = "", segments=()) -> go.Figure:
    """One head's map as the app's map view draws it: square cells, masked future keys grey, long
    inputs pooled to at most ``size`` blocks a side; ``segments`` are ``(token position, name)``
    where a dashed line marks a new part of the input."""
    view = analysis.attention_map(trace, layer, head, kind or trace.kinds[0], size, value)
    return figures.attention_heatmap(view, title, segments)


def region(trace: Trace, layer: int, head: int, rows: tuple[int, int], cols: tuple[int, int], kind: str | None = None,
           value: str = "weight", title: str = "", segments=()) -> go.Figure:
    """Query tokens ``rows`` × key tokens ``cols`` (``[start, end)``, at most 256 a side) of one head's
    map at full resolution, as the app's zoom draws it."""
    view = analysis.attention_region(trace, layer, head, kind or trace.kinds[0], rows, cols, value)
    return figures.region_heatmap(view, title, segments)


def decomposition(trace: Trace, layer: int, head: int, size: int = 512, title: str = "", segments=()) -> list[go.Figure]:
    """A DiffLlama head's ``A1``, ``A2`` and ``A1 − λ·A2`` (weights), the two softmax maps on one colour scale."""
    if trace.lambdas is None:
        raise ValueError(f"a {trace.arch} head is one softmax map, with no A1 − λ·A2 decomposition: use attention_map")
    views = {kind: analysis.attention_map(trace, layer, head, kind, size) for kind in ("a1", "a2", "diff")}
    return figures.decomposition(views, title, segments)


def lambda_profile(traces: dict[str, Trace]) -> go.Figure:
    """Learned λ per layer against λ_init for every DiffLlama among ``traces`` (by name)."""
    lambdas = {name: (trace.lambdas, trace.lambda_inits) for name, trace in traces.items() if trace.lambdas}
    if not lambdas:
        raise ValueError("none of these traces is a DiffLlama's: only DiffLlama learns λ")
    return figures.lambda_profile(lambdas)


def head_stats(traces: dict[str, Trace]) -> go.Figure:
    """Entropy, top-k mass, first-token mass and negative mass per layer (mean over heads) of each
    trace's own map, models side by side; names starting with "A" / "B" get the app's colours."""
    return figures.head_stats_comparison({name: analysis.head_stats(trace) for name, trace in traces.items()})


def overview(trace: Trace, kind: str | None = None, size: int = 24, value: str = "weight", title: str = "") -> go.Figure:
    """Every layer × head pooled to at most ``size`` × ``size`` blocks, on one colour scale (the
    largest |value| of any head, as in the app's overview): layers down, heads across, one figure;
    hovering names the layer, head and the tokens a cell covers."""
    kind = kind or trace.kinds[0]
    view = analysis.overview(trace, kind, size, value)
    layers, heads, blocks = trace.num_layers, trace.num_heads, len(view.edges) - 1
    maps = np.array(view.maps)  # [L, H, b, b]
    maps[:, :, figures.future_mask(view.edges, view.edges)] = np.nan  # drawn as masked, as in the map view
    tiles = maps.transpose(0, 2, 1, 3).reshape(layers * blocks, heads * blocks)  # [L·b, H·b]: layer rows, head columns
    spans = [f"{a}–{b - 1}" if b - a > 1 else f"{a}" for a, b in zip(view.edges, view.edges[1:])]
    rows = [f"layer {layer}, queries {span}" for layer in range(layers) for span in spans]
    cols = [f"head {head}, keys {span}" for head in range(heads) for span in spans]
    figure = go.Figure(go.Heatmap(
        z=tiles, x=cols, y=rows, hoverongaps=False, **figures.colour_range(kind, figures.overview_limit(view.maps), value),
        hovertemplate=f"%{{y}}<br>%{{x}}<br>{figures.VALUE_TITLES[value]} %{{z:.4f}}<extra></extra>",
        colorbar=dict(title=dict(text=figures.colour_bar_title(kind, value), side="right"), thickness=12)))
    for head in range(1, heads):  # white lines between thumbnails (cells sit at integer positions)
        figure.add_vline(x=head * blocks - 0.5, line=dict(color="white", width=3))
    for layer in range(1, layers):
        figure.add_hline(y=layer * blocks - 0.5, line=dict(color="white", width=3))
    middle = blocks // 2  # ticks name the layer or head at each thumbnail's middle
    sampled = f", {len(view.query_rows)} sampled query rows" if view.query_rows else ""
    what = figures.KIND_TITLES[kind] if value == "weight" else f"{figures.VALUE_TITLES[value]} through {kind}"
    heading = title or f"{trace.arch}: every layer × head, {what}"
    figure.update_layout(
        title=dict(text=f"{heading}<br><sup>{view.seq_len} tokens in {blocks}×{blocks} blocks{sampled}; "
                        "one colour scale for every head</sup>", font=dict(size=13)),
        plot_bgcolor=figures.MASKED, height=160 + 60 * layers, margin=dict(l=10, r=10, t=70, b=10),
        xaxis=dict(type="category", tickvals=cols[middle::blocks], ticktext=[f"H{h}" for h in range(heads)],
                   constrain="domain", showgrid=False, title_text="head"),
        yaxis=dict(type="category", tickvals=rows[middle::blocks], ticktext=[f"L{l}" for l in range(layers)],
                   autorange="reversed", scaleanchor="x", scaleratio=1, constrain="domain", showgrid=False,
                   title_text="layer"))
    return figure
