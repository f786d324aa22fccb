"""One head's attention map as a heatmap: pooled maps, full-resolution regions and DiffLlama's
``A1 | A2 | A1 − λ·A2`` decomposition.

Hover text is built by ``hovertemplate`` from the axis categories and the values, never one string
per cell, so a 512 × 512 map stays a figure of about 1.5 MB. The figures are plain dictionaries
(``plain``): plotly's validation was most of a map's building time."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go

from .labels import KIND_TITLES, VALUE_TITLES, colour_bar_title, plotly_text, short, signed
from .plain import plain_figure
from .scales import MASKED, as_limit, colour_bar, colour_range, robust_limit

ALL_LABELS = 64  # up to this many tokens on the axis of a full-height map, every one gets its tick label
SPREAD_LABELS = 40  # beyond, this many evenly spaced ones (hover names every cell)
FULL_HEIGHT = 600  # a map half the page wide; narrower panels pass their height and get fewer labels
AXIS_SPACE = 210  # pixels of a map's height taken by its title, colour-scale note and key labels


def future_mask(row_edges: list[int], col_edges: list[int]) -> np.ndarray:
    """[rows, cols] True where every key of the column block comes after every query of the row block."""
    last_query = np.asarray(row_edges[1:]) - 1
    first_key = np.asarray(col_edges[:-1])
    return first_key[None, :] > last_query[:, None]


def masked(values: np.ndarray, row_edges: list[int], col_edges: list[int]) -> np.ndarray:
    """``values`` as float32 with future cells (``future_mask``) NaN: drawn as ``MASKED``, left out of scales."""
    return np.where(future_mask(row_edges, col_edges), np.nan, values).astype(np.float32)


def axis_position(edges: list[int], position: int) -> float:
    """Where the boundary before token ``position`` falls on a category axis whose cell i holds the
    tokens ``edges[i]:edges[i+1]`` (cells are centred on integers)."""
    block = int(np.searchsorted(edges, position, side="right")) - 1
    block = min(max(block, 0), len(edges) - 2)
    return block + (position - edges[block]) / (edges[block + 1] - edges[block]) - 0.5


def _token_axis(labels: list[str], categories: list[str], height: int = FULL_HEIGHT) -> dict:
    """Tick labels that fit the map's side (about ``height`` − ``AXIS_SPACE`` pixels): every token
    when few, evenly spaced ones otherwise, in a font no taller than their spacing. The axis keeps
    plotly from measuring its labels to grow the margins (``automargin``: a second layout pass per
    figure, most of a map's drawing time): ``label_room`` sets margins that fit them."""
    fit = max(height - 200, 120) / (FULL_HEIGHT - 200)
    step = 1 if len(labels) <= ALL_LABELS * fit else math.ceil(len(labels) / (SPREAD_LABELS * fit))
    ticks = list(range(0, len(labels), step))
    spacing = (height - AXIS_SPACE) / max(len(ticks), 1)
    size = int(min(11, max(7, spacing * 0.75)))
    return dict(type="category", tickvals=[categories[i] for i in ticks], automargin=False,
                ticktext=[plotly_text(short(labels[i])) for i in ticks], tickfont=dict(size=size))


def label_room(axis: dict, angle: float = 0) -> int:
    """Pixels from the plot's edge that ``axis``'s tick labels (``_token_axis``) and its title need,
    labels written at ``angle`` degrees from horizontal (a character is at most ≈ 0.65 of the font size wide)."""
    size = axis["tickfont"]["size"]
    width = 0.65 * size * max((len(html.unescape(t)) for t in axis["ticktext"]), default=0)
    return math.ceil(width * abs(math.sin(math.radians(angle))) + size * abs(math.cos(math.radians(angle))) + 28) if angle \
        else math.ceil(width + 28)


def _segment_marks(segments, row_edges: list[int], col_edges: list[int]) -> tuple[list[dict], list[dict]]:
    """Dashed lines where a new segment of the input starts, on both axes, each named above the map.
    plotly widens an autoranged axis to fit what is drawn on it, which painted a band of masked grey
    beside the map: each line spans the other axis by its domain, and each name sits above the plot
    by its domain and inside the keys' range (right of its line in the left half, left of it in the
    right half)."""
    shapes, names = [], []
    cols = len(col_edges) - 1
    for position, name in segments:
        if col_edges[0] < position < col_edges[-1]:
            at = axis_position(col_edges, position)
            shapes.append(dict(type="line", x0=at, x1=at, yref="y domain", y0=0, y1=1))
            left = at < (cols - 1) / 2
            names.append(dict(x=at, xref="x", y=1, yref="y domain", showarrow=False, yanchor="bottom",
                              xanchor="left" if left else "right", font=dict(size=10),
                              text=f"▸ {plotly_text(name)}" if left else f"{plotly_text(name)} ▸"))
        if row_edges[0] < position < row_edges[-1]:
            at = axis_position(row_edges, position)
            shapes.append(dict(type="line", y0=at, y1=at, xref="x domain", x0=0, x1=1))
    for shape in shapes:
        shape["line"] = dict(color="black", width=1.5, dash="dash")
    return shapes, names


def attention_figure(values: np.ndarray, row_edges: list[int], col_edges: list[int], row_labels: list[str],
                     col_labels: list[str], kind: str, title: str, segments=(), zmax: float | None = None,
                     height: int = FULL_HEIGHT, value: str = "weight", scale_with: str | None = None) -> go.Figure:
    """A (block of a) map with square cells, a colour bar, masked future cells in grey and lines
    where a new segment of the input starts (``segments``: ``(token position, name)``). Full colour
    sits at ``zmax`` (a ``ScaleLimit`` shared with the panels ``scale_with`` names), or else at this
    map's own ``robust_limit`` (off the diagonal when rows and columns are the same tokens); a line
    under the title says which. ``height`` suits a map half the
    page wide: the square fills it without leaving the colour bar far taller."""
    shown = masked(values, row_edges, col_edges)
    limit = robust_limit(shown, off_diagonal=row_edges == col_edges) if zmax is None else as_limit(zmax)
    whose = f"scale shared with {scale_with}" if scale_with else "own colour scale"
    title = f"{title}<br><sup>{whose}: {limit.describe(signed(kind, value), '<br>')}</sup>"
    rows, cols = [plotly_text(label) for label in row_labels], [plotly_text(label) for label in col_labels]
    shapes, names = _segment_marks(segments, row_edges, col_edges)
    heatmap = dict(type="heatmap", z=shown, x=cols, y=rows, hoverongaps=False, **colour_range(kind, limit, value),
                   hovertemplate=f"query %{{y}}<br>key %{{x}}<br>{VALUE_TITLES[value]} %{{z:.4f}}<extra></extra>",
                   colorbar=colour_bar(kind, limit, colour_bar_title(kind, value), value))
    xaxis, yaxis = _token_axis(col_labels, cols, height), _token_axis(row_labels, rows, height)
    lines = title.count("<br>") + 1
    layout = dict(
        title=dict(text=title, font=dict(size=13)), plot_bgcolor=MASKED, **({"shapes": shapes, "annotations": names} if shapes else {}),
        height=height if max(len(rows), len(cols)) > 24 else height - 100,
        margin=dict(l=label_room(yaxis), r=10, t=20 + 17 * lines + (18 if names else 0), b=label_room(xaxis, angle=60)),
        xaxis=dict(**xaxis, tickangle=-60, title=dict(text="key"), constrain="domain", showgrid=False),
        yaxis=dict(**yaxis, autorange="reversed", title=dict(text="query"), scaleanchor="x",
                   scaleratio=1, constrain="domain", showgrid=False),
        meta=dict(row_edges=list(row_edges), col_edges=list(col_edges), kind=kind))  # edges: read by the zoom button's script
    return plain_figure([heatmap], layout)


def _map_title(prefix: str, layer: int, head: int, kind: str, lambda_: float | None, value: str = "weight") -> str:
    lam = f", λ = {lambda_:.3f}" if lambda_ is not None else ""
    if value == "weight":
        return f"{prefix}layer {layer}, head {head}: {KIND_TITLES[kind]}{lam}"
    return f"{prefix}layer {layer}, head {head}: {VALUE_TITLES[value]}<br><sup>through {KIND_TITLES[kind]}{lam}</sup>"


def attention_heatmap(view, title_prefix: str = "", segments=(), zmax: float | None = None, height: int = FULL_HEIGHT,
                      scale_with: str | None = None) -> go.Figure:
    """One head's map (an ``AttentionMap`` record), pooled to blocks for long inputs; ``zmax`` and
    ``scale_with`` as ``attention_figure``'s."""
    title = _map_title(title_prefix, view.layer, view.head, view.kind, view.lambda_, view.value)
    if view.pooled:
        title += f"<br><sup>{view.edges[-1]} tokens pooled to {len(view.labels)}×{len(view.labels)} blocks; zoom for full resolution</sup>"
    return attention_figure(view.values, view.edges, view.edges, view.labels, view.labels, view.kind, title, segments,
                            zmax, height, view.value, scale_with)


def region_heatmap(region, title_prefix: str = "", segments=(), zmax: float | None = None,
                   scale_with: str | None = None) -> go.Figure:
    """A full-resolution rectangle of one head's map (an ``AttentionRegion`` record), on its own
    colour scale, or on ``zmax`` shared with ``scale_with`` (``region_limit`` of both regions)."""
    (r0, r1), (c0, c1) = region.rows, region.cols
    title = (_map_title(title_prefix, region.layer, region.head, region.kind, region.lambda_, region.value)
             + f"<br><sup>full resolution: queries {r0}–{r1 - 1} × keys {c0}–{c1 - 1}</sup>")
    return attention_figure(region.values, list(range(r0, r1 + 1)), list(range(c0, c1 + 1)), region.row_labels,
                            region.col_labels, region.kind, title, segments, zmax, value=region.value, scale_with=scale_with)


def region_limit(*regions):
    """One ``ScaleLimit`` for several ``AttentionRegion`` records (e.g. A's and B's zoom), their future cells left out."""
    return robust_limit(*(masked(r.values, list(range(r.rows[0], r.rows[1] + 1)), list(range(r.cols[0], r.cols[1] + 1)))
                          for r in regions), off_diagonal=all(tuple(r.rows) == tuple(r.cols) for r in regions))


def decomposition(views: dict, title_prefix: str = "", segments=(), height: int = 440) -> list[go.Figure]:
    """DiffLlama's ``A1 | A2 | A1 − λ·A2`` at one head (``views`` by kind: ``AttentionMap`` records),
    A1 and A2 on one colour scale so their sizes compare; ``height`` suits a third of the page."""
    softmax = robust_limit(*(masked(views[k].values, views[k].edges, views[k].edges) for k in ("a1", "a2")), off_diagonal=True)
    return [attention_heatmap(views["a1"], title_prefix, segments, softmax, height, "A2"),
            attention_heatmap(views["a2"], title_prefix, segments, softmax, height, "A1"),
            attention_heatmap(views["diff"], title_prefix, segments, height=height)]
