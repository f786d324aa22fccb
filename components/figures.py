"""Figures for the views: plotly figures, overview thumbnails and colour legends, built from plain
records and arrays (no model, no torch).

Token labels arrive as plain text (``diffllama.tokens``); plotly reads ``<``, ``>`` and ``&`` in
labels and hover text as markup, so they are escaped here, at plotly's edge. Hover text is built by
``hovertemplate`` from the axis categories and the values, never one string per cell, so a 512 × 512
map stays a figure of about 1.5 MB."""

from __future__ import annotations

import functools
import html
import math
from dataclasses import asdict

import numpy as np
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"  # differential maps go negative: blue below 0, red above, white at 0
MASKED = "#c4c4c4"  # a masked (future) key: nothing can attend there, which is not the same as attending 0
KIND_TITLES = {"diff": "A1 − λ·A2 (differential)", "a1": "A1 (first softmax)", "a2": "A2 (second softmax)",
               "softmax": "softmax"}
VALUE_TITLES = {"weight": "weight", "norm": "contribution ‖c‖", "projection": "contribution along the output"}
VALUE_CHOICES = [(title, value) for value, title in VALUE_TITLES.items()]  # the cell-value toggle's (label, value)
MODEL_COLOURS = {"A": "#4c6ef5", "B": "#f76707"}
ALL_LABELS = 64  # up to this many tokens on an axis, every one gets its tick label
THUMBNAIL_PIXELS = 96  # overview thumbnails are upscaled (nearest) to about this many pixels a side
NOISE_KL = 1e-5  # nats; a KL below this is float32 rounding of identical distributions, drawn as no bar


def plotly_text(text: str) -> str:
    """Plain text as plotly shows it literally (its labels and hover text read <, > and & as markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _short(label: str, width: int = 18) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def signed(kind: str, value: str = "weight") -> bool:
    """Whether cells of this map can be negative: differential weights, and contributions along the
    head output (a key can push against it); softmax weights and contribution norms cannot."""
    return value == "projection" or (value == "weight" and kind == "diff")


def colour_range(kind: str, limit: float, value: str = "weight") -> dict:
    """Heatmap colour settings: signed cells (``signed``) on a diverging scale centred at 0, the others
    (never negative) on a sequential one from 0."""
    limit = float(limit) or 1.0
    if signed(kind, value):
        return dict(colorscale=DIVERGING, zmid=0, zmin=-limit, zmax=limit)
    return dict(colorscale=SEQUENTIAL, zmin=0, zmax=limit)


def future_mask(row_edges: list[int], col_edges: list[int]) -> np.ndarray:
    """[rows, cols] True where every key of the column block comes after every query of the row block."""
    last_query = np.asarray(row_edges[1:]) - 1
    first_key = np.asarray(col_edges[:-1])
    return first_key[None, :] > last_query[:, None]


def axis_position(edges: list[int], position: int) -> float:
    """Where the boundary before token ``position`` falls on a category axis whose cell i holds the
    tokens ``edges[i]:edges[i+1]`` (cells are centred on integers)."""
    block = int(np.searchsorted(edges, position, side="right")) - 1
    block = min(max(block, 0), len(edges) - 2)
    return block + (position - edges[block]) / (edges[block + 1] - edges[block]) - 0.5


def _token_axis(labels: list[str], categories: list[str]) -> dict:
    """Tick labels: every token up to ``ALL_LABELS`` of them, evenly spaced ones beyond (hover names every cell).
    The axis keeps plotly from measuring its labels to grow the margins (``automargin``: a second layout
    pass per figure, most of a map's drawing time): ``label_room`` sets margins that fit them."""
    step = 1 if len(labels) <= ALL_LABELS else math.ceil(len(labels) / 40)
    ticks = list(range(0, len(labels), step))
    size = 11 if len(ticks) <= 24 else 9 if len(ticks) <= 40 else 7
    return dict(type="category", tickvals=[categories[i] for i in ticks], automargin=False,
                ticktext=[plotly_text(_short(labels[i])) for i in ticks], tickfont=dict(size=size))


def label_room(axis: dict, angle: float = 0) -> int:
    """Pixels from the plot's edge that ``axis``'s tick labels (``_token_axis``) and its title need,
    labels written at ``angle`` degrees from horizontal (a character is at most ≈ 0.65 of the font size wide)."""
    size = axis["tickfont"]["size"]
    width = 0.65 * size * max((len(html.unescape(t)) for t in axis["ticktext"]), default=0)
    return math.ceil(width * abs(math.sin(math.radians(angle))) + size * abs(math.cos(math.radians(angle))) + 28) if angle \
        else math.ceil(width + 28)


def colour_bar_title(kind: str, value: str = "weight") -> str:
    """Short enough to fit beside a map half the page wide."""
    if value != "weight":
        return {"norm": "‖c‖", "projection": "c · o / ‖o‖"}[value]
    return "A1 − λ·A2" if kind == "diff" else "attention"


def attention_figure(values: np.ndarray, row_edges: list[int], col_edges: list[int], row_labels: list[str],
                     col_labels: list[str], kind: str, title: str, segments=(), zmax: float | None = None,
                     height: int = 600, value: str = "weight") -> go.Figure:
    """A (block of a) map with square cells, a colour bar, masked future cells in grey and lines
    where a new segment of the input starts (``segments``: ``(token position, name)``). ``height``
    suits a map half the page wide: the square fills it without leaving the colour bar far taller."""
    shown = np.where(future_mask(row_edges, col_edges), np.nan, values).astype(np.float32)  # NaN: drawn as MASKED
    limit = zmax if zmax is not None else float(np.nanmax(np.abs(shown), initial=0.0))
    rows = [plotly_text(label) for label in row_labels]
    cols = [plotly_text(label) for label in col_labels]
    figure = go.Figure(go.Heatmap(
        z=shown, x=cols, y=rows, hoverongaps=False, **colour_range(kind, limit, value),
        hovertemplate=f"query %{{y}}<br>key %{{x}}<br>{VALUE_TITLES[value]} %{{z:.4f}}<extra></extra>",
        colorbar=dict(title=dict(text=colour_bar_title(kind, value), side="right"), thickness=12)))
    for position, name in segments:
        for axis, edges in (("x", col_edges), ("y", row_edges)):
            if edges[0] < position < edges[-1]:
                at = axis_position(edges, position)
                line = dict(x0=at, x1=at, y0=-0.5, y1=len(rows) - 0.5) if axis == "x" else dict(
                    y0=at, y1=at, x0=-0.5, x1=len(cols) - 0.5)
                figure.add_shape(type="line", line=dict(color="black", width=1.5, dash="dash"), **line)
                if axis == "x":  # named just above the map's top edge (the y axis runs downwards)
                    figure.add_annotation(x=at, y=-0.5, text=f"▸ {plotly_text(name)}", showarrow=False,
                                          xanchor="left", yanchor="bottom", font=dict(size=10))
    n = max(len(rows), len(cols))
    xaxis, yaxis = _token_axis(col_labels, cols), _token_axis(row_labels, rows)
    figure.update_layout(
        title=dict(text=title, font=dict(size=13)), plot_bgcolor=MASKED, height=height if n > 24 else height - 100,
        margin=dict(l=label_room(yaxis), r=10, t=80 if segments else 60, b=label_room(xaxis, angle=60)),
        xaxis=dict(**xaxis, tickangle=-60, title_text="key", constrain="domain", showgrid=False),
        yaxis=dict(**yaxis, autorange="reversed", title_text="query", scaleanchor="x",
                   scaleratio=1, constrain="domain", showgrid=False),
        meta=dict(row_edges=list(row_edges), col_edges=list(col_edges)))  # read by the zoom button's script
    return figure


def _map_title(prefix: str, layer: int, head: int, kind: str, lambda_: float | None, value: str = "weight") -> str:
    lam = f", λ = {lambda_:.3f}" if lambda_ is not None else ""
    if value == "weight":
        return f"{prefix}layer {layer}, head {head}: {KIND_TITLES[kind]}{lam}"
    return f"{prefix}layer {layer}, head {head}: {VALUE_TITLES[value]}<br><sup>through {KIND_TITLES[kind]}{lam}</sup>"


def attention_heatmap(view, title_prefix: str = "", segments=(), zmax: float | None = None, height: int = 600) -> go.Figure:
    """One head's map (an ``AttentionMap`` record), pooled to blocks for long inputs."""
    title = _map_title(title_prefix, view.layer, view.head, view.kind, view.lambda_, view.value)
    if view.pooled:
        title += f"<br><sup>{view.edges[-1]} tokens pooled to {len(view.labels)}×{len(view.labels)} blocks; zoom for full resolution</sup>"
    return attention_figure(view.values, view.edges, view.edges, view.labels, view.labels, view.kind, title, segments,
                            zmax, height, view.value)


def region_heatmap(region, title_prefix: str = "", segments=()) -> go.Figure:
    """A full-resolution rectangle of one head's map (an ``AttentionRegion`` record)."""
    (r0, r1), (c0, c1) = region.rows, region.cols
    title = (_map_title(title_prefix, region.layer, region.head, region.kind, region.lambda_, region.value)
             + f"<br><sup>full resolution: queries {r0}–{r1 - 1} × keys {c0}–{c1 - 1}</sup>")
    return attention_figure(region.values, list(range(r0, r1 + 1)), list(range(c0, c1 + 1)), region.row_labels,
                            region.col_labels, region.kind, title, segments, value=region.value)


def decomposition(views: dict, title_prefix: str = "", segments=(), height: int = 440) -> list[go.Figure]:
    """DiffLlama's ``A1 | A2 | A1 − λ·A2`` at one head (``views`` by kind: ``AttentionMap`` records),
    A1 and A2 on one colour scale so their sizes compare; ``height`` suits a third of the page."""
    softmax_max = float(max(views["a1"].values.max(), views["a2"].values.max()))
    return [attention_heatmap(views[kind], title_prefix, segments, zmax=None if kind == "diff" else softmax_max,
                              height=height) for kind in ("a1", "a2", "diff")]


# --- overview: thumbnails, one colour scale -----------------------------------------------------------
@functools.lru_cache(maxsize=None)  # a few scales, each sampled once (sampling a plotly scale is slow)
def _colour_table(kind: str, value: str = "weight") -> np.ndarray:
    """[256, 3] uint8 colours of the map's colour scale (``colour_range``), low to high."""
    samples = plotly.colors.sample_colorscale(colour_range(kind, 1.0, value)["colorscale"], np.linspace(0, 1, 256))
    return np.array([plotly.colors.unlabel_rgb(c) for c in samples]).round().astype(np.uint8)


def thumbnail(values: np.ndarray, kind: str, limit: float, value: str = "weight") -> np.ndarray:
    """A pooled map [b, b] as a square RGB image on the shared scale (``colour_range``), future cells grey."""
    scale = colour_range(kind, limit, value)
    index = np.clip((values - scale["zmin"]) / (scale["zmax"] - scale["zmin"]) * 255, 0, 255).round().astype(int)
    image = _colour_table(kind, value)[index]  # [b, b, 3]
    edges = list(range(values.shape[0] + 1))
    image[future_mask(edges, edges)] = plotly.colors.hex_to_rgb(MASKED)
    factor = max(1, math.ceil(THUMBNAIL_PIXELS / values.shape[0]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def overview_limit(maps) -> float:
    """The one colour-scale limit shared by every thumbnail: the largest |value| of any head."""
    return float(max(np.abs(m).max() for row in maps for m in row) or 1.0)


def colour_legend(colours: list[str], low: float, high: float, title: str, masked: bool = False) -> str:
    """A horizontal colour bar as HTML (numbers only, no user text): ``colours`` from ``low`` to ``high``."""
    swatch = (f'<span style="display:inline-block;width:14px;height:12px;background:{MASKED};margin:0 4px 0 14px;'
              'vertical-align:middle"></span>masked (future)' if masked else "")
    return (f'<div class="lens-legend" style="font-size:0.85em;display:flex;align-items:center;gap:6px;flex-wrap:wrap">'
            f'<span>{title}</span><span>{low:.3g}</span>'
            f'<span style="display:inline-block;width:220px;height:12px;border:1px solid #999;'
            f'background:linear-gradient(to right, {", ".join(colours)})"></span>'
            f'<span>{high:.3g}</span>{swatch}</div>')


def scale_legend(kind: str, limit: float, title: str, value: str = "weight") -> str:
    """The legend of ``colour_range(kind, limit, value)``."""
    scale = colour_range(kind, limit, value)
    colours = plotly.colors.sample_colorscale(scale["colorscale"], np.linspace(0, 1, 9))
    return colour_legend(colours, scale["zmin"], scale["zmax"], title, masked=True)


# --- comparisons and per-layer values ---------------------------------------------------------------
def lambda_profile(lambdas: dict[str, tuple[list[float], list[float]]]) -> go.Figure:
    """Learned λ per layer against λ_init, for every model that has one."""
    figure = go.Figure()
    for name, (learned, init) in lambdas.items():
        layers = list(range(len(learned)))
        figure.add_trace(go.Scatter(x=layers, y=learned, mode="lines+markers", name=f"{name}: learned λ"))
        figure.add_trace(go.Scatter(x=layers, y=init, mode="lines", line=dict(dash="dot"), name=f"{name}: λ_init"))
    figure.update_layout(title="λ per layer (one scalar per layer): learned vs λ_init = 0.8 − 0.6·exp(−0.3·layer)",
                         xaxis=dict(title="layer", dtick=1), yaxis_title="λ", height=360, margin=dict(l=10, r=10, t=50, b=10))
    return figure


def head_stats_comparison(stats: dict[str, object]) -> go.Figure:
    """Entropy, top-k mass, sink mass and negative mass per layer for each model (mean over heads)."""
    names = [("entropy", "entropy (nats)"), ("top_k_mass", "top-k mass"), ("sink_mass", "first-token mass"),
             ("negative_mass", "negative mass")]
    figure = make_subplots(rows=1, cols=4, subplot_titles=[t for _, t in names], horizontal_spacing=0.06)
    for col, (field, _) in enumerate(names, start=1):
        for model, record in stats.items():
            values = getattr(record, field).mean(axis=1)
            figure.add_trace(go.Bar(x=[f"L{l}" for l in range(len(values))], y=values, name=model,
                                    marker_color=MODEL_COLOURS.get(model[:1]), showlegend=col == 1), row=1, col=col)
    figure.update_layout(barmode="group", height=330, title="A vs B per layer (mean over heads)",
                         margin=dict(l=10, r=10, t=70, b=10))
    return figure


def _position_axis(figure: go.Figure, labels: list[str]) -> None:
    """Token positions on x, labelled with (some of) their tokens."""
    step = max(1, math.ceil(len(labels) / 40))
    figure.update_xaxes(tickvals=list(range(0, len(labels), step)), tickangle=-60,
                        ticktext=[plotly_text(_short(t, 12)) for t in labels[::step]])


def qa_logits(tokens: list[str], start: list[float], end: list[float], title: str) -> go.Figure:
    """Start and end logits along the context; ``tokens`` are display labels."""
    positions = list(range(len(tokens)))
    text = [plotly_text(t) for t in tokens]
    figure = go.Figure([go.Scatter(x=positions, y=start, mode="lines+markers", name="start logit", text=text),
                        go.Scatter(x=positions, y=end, mode="lines+markers", name="end logit", text=text)])
    figure.update_traces(hovertemplate="%{text}<br>%{y:.3f}<extra></extra>")
    _position_axis(figure, tokens)
    figure.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=50, b=10))
    return figure


def ablation_kl(result, title: str) -> go.Figure:
    """KL(original ‖ ablated) per position of an ``AblationResult``: red where the top prediction
    changed; a KL below ``NOISE_KL`` is rounding, drawn as no bar, and the axis never stretches
    a tiny KL to full height."""
    kl = np.where(np.asarray(result.kl) < NOISE_KL, 0.0, result.kl)
    labels = [plotly_text(t) for t in result.tokens]
    hover = [plotly_text(f"{b} ({p:.3f}) → {a} ({q:.3f})") for b, p, a, q in
             zip(result.original, result.original_prob, result.ablated, result.ablated_prob)]
    figure = go.Figure(go.Bar(x=list(range(len(kl))), y=kl, marker_color=["#e03131" if c else "#868e96" for c in result.changed],
                              customdata=np.array([labels, hover], dtype=object).T,
                              hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>KL %{y:.2e}<extra></extra>"))
    _position_axis(figure, list(result.tokens))
    figure.update_layout(title=f"{title}<br><sup>red: top prediction changed · KL below {NOISE_KL:g} nats (float32 rounding) "
                               "drawn as no bar</sup>", yaxis=dict(title="KL(original ‖ ablated), nats",
                                                                    range=[0, max(0.05, float(kl.max()) * 1.1)]),
                         height=340, margin=dict(l=10, r=10, t=70, b=10))
    return figure


# --- provenance ---------------------------------------------------------------------------------------------
PROVENANCE_FONT = 8  # px: small enough to stay out of the way, legible in a saved PNG
PROVENANCE_LINE = 64  # characters: fits a figure a third of the page wide


def provenance_note(figure: go.Figure | None, provenance) -> go.Figure | None:
    """``figure`` stamped with where it came from (a ``diffllama.provenance.Provenance``): small grey
    lines at its top right, which plotly's PNG export keeps, with the title moved below them; and the
    whole record, link included, in ``layout.meta["provenance"]`` of the figure's JSON. The top is
    the one margin whose height is known (tick labels grow the bottom one), and its left corner is
    under gradio's label. None passes through (a view not shown)."""
    if figure is None:
        return None
    pieces = [f"{slot}: {_short(source, 40)}" for slot, source in provenance.models.items()]  # meta has them whole
    pieces += [f"input sha256 {provenance.input_sha256}"] + [
        f"{name} {value}" for name, value in (("layer", provenance.layer), ("head", provenance.head),
                                              ("map", provenance.kind)) if value is not None]
    pieces += [provenance.created] + [f"{name} {version}" for name, version in provenance.versions.items()]
    lines = [pieces[0]]
    for piece in pieces[1:]:
        if len(lines[-1]) + 3 + len(piece) > PROVENANCE_LINE:
            lines.append(piece)
        else:
            lines[-1] += f" · {piece}"
    height = round(len(lines) * PROVENANCE_FONT * 1.4) + 6  # plotly sets a line of text at about 1.3× its font size
    top = (figure.layout.margin.t if figure.layout.margin.t is not None else 100) + height
    figure.add_annotation(text="<br>".join(map(plotly_text, lines)), xref="paper", yref="paper", x=1, y=1,
                          xanchor="right", yanchor="top", yshift=top - 2, align="right", showarrow=False,
                          font=dict(size=PROVENANCE_FONT, color="#868e96"))
    figure.update_layout(margin=dict(t=top), title=dict(yref="container", y=1, yanchor="top", pad=dict(t=height + 2)),
                         meta={**(figure.layout.meta or {}), "provenance": asdict(provenance)})
    return figure
