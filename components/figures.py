"""Plotly figure builders: plain records and arrays in, figures out (no model, no torch)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"  # differential maps go negative: blue below 0, red above, white at 0
KIND_TITLES = {"diff": "A1 − λ·A2 (differential)", "a1": "A1 (first softmax)", "a2": "A2 (second softmax)",
               "softmax": "softmax"}
MODEL_COLOURS = {"A": "#4c6ef5", "B": "#f76707"}


def _short(label: str, width: int = 18) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _heatmap_trace(values: np.ndarray, labels: list[str], kind: str, showscale: bool = True, zmax: float | None = None) -> go.Heatmap:
    diverging = kind == "diff"
    limit = zmax if zmax is not None else float(np.abs(values).max() or 1.0)
    hover = [[f"query {labels[i]}<br>key {labels[j]}" for j in range(len(labels))] for i in range(len(labels))]
    return go.Heatmap(
        z=values, x=list(range(len(labels))), y=list(range(len(labels))), text=hover,
        hovertemplate="%{text}<br>value %{z:.4f}<extra></extra>",
        colorscale=DIVERGING if diverging else SEQUENTIAL, zmid=0 if diverging else None,
        zmin=-limit if diverging else 0, zmax=limit, showscale=showscale)


def _token_axes(figure: go.Figure, labels: list[str], row=None, col=None, most: int = 30, y_labels: bool = True) -> None:
    step = max(1, -(-len(labels) // most))  # at most `most` tick labels stay readable; hover names every cell
    ticks = list(range(0, len(labels), step))
    names = [_short(labels[i]) for i in ticks]
    font = dict(size=9 if len(ticks) > 15 else 11)
    figure.update_xaxes(tickvals=ticks, ticktext=names, tickangle=-60, tickfont=font, title_text="key", row=row, col=col)
    figure.update_yaxes(tickvals=ticks, ticktext=names if y_labels else [""] * len(ticks), tickfont=font,
                        autorange="reversed", title_text="query" if y_labels else None, row=row, col=col)


def attention_heatmap(view, title_prefix: str = "") -> go.Figure:
    """One head's map (an ``AttentionMap`` record) with token labels and query → key hover."""
    figure = go.Figure(_heatmap_trace(view.values, view.labels, view.kind))
    lam = f", λ = {view.lambda_:.3f}" if view.lambda_ is not None else ""
    pooled = f" — pooled to {len(view.labels)}×{len(view.labels)} blocks of {view.edges[-1]} tokens" if view.pooled else ""
    figure.update_layout(title=f"{title_prefix}layer {view.layer}, head {view.head}: {KIND_TITLES[view.kind]}{lam}{pooled}",
                         height=560, margin=dict(l=10, r=10, t=50, b=10))
    _token_axes(figure, view.labels)
    return figure


def decomposition(a1, a2, diff, title_prefix: str = "") -> go.Figure:
    """DiffLlama's two softmax maps and their difference side by side, one shared token axis."""
    figure = make_subplots(rows=1, cols=3, subplot_titles=(KIND_TITLES["a1"], KIND_TITLES["a2"],
                                                           f"A1 − λ·A2, λ = {diff.lambda_:.3f}"),
                           horizontal_spacing=0.06)
    softmax_max = float(max(a1.values.max(), a2.values.max()) or 1.0)
    for col, view in enumerate((a1, a2, diff), start=1):
        figure.add_trace(_heatmap_trace(view.values, view.labels, view.kind, showscale=col == 3,
                                        zmax=None if view.kind == "diff" else softmax_max), row=1, col=col)
        _token_axes(figure, view.labels, row=1, col=col, most=12, y_labels=col == 1)
    figure.update_layout(title=f"{title_prefix}layer {diff.layer}, differential head {diff.head}", height=470,
                         margin=dict(l=10, r=10, t=70, b=10))
    return figure


def overview_grid(overview, title_prefix: str = "") -> go.Figure:
    """Small multiples: one thumbnail per layer (rows) × head (columns)."""
    layers, heads = len(overview.maps), len(overview.maps[0])
    figure = make_subplots(rows=layers, cols=heads, horizontal_spacing=0.01, vertical_spacing=0.01,
                           row_titles=[f"L{l}" for l in range(layers)], column_titles=[f"H{h}" for h in range(heads)])
    limit = float(max(np.abs(m).max() for row in overview.maps for m in row) or 1.0)
    for layer, row in enumerate(overview.maps):
        for head, values in enumerate(row):
            figure.add_trace(go.Heatmap(z=values, colorscale=DIVERGING if overview.kind == "diff" else SEQUENTIAL,
                                        zmid=0 if overview.kind == "diff" else None, zmin=-limit if overview.kind == "diff" else 0,
                                        zmax=limit, showscale=False,
                                        hovertemplate=f"layer {layer} head {head}<br>%{{z:.3f}}<extra></extra>"),
                             row=layer + 1, col=head + 1)
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False, autorange="reversed")
    note = (f" — each pooled to {len(overview.edges) - 1}×{len(overview.edges) - 1} blocks of {overview.seq_len} tokens"
            if overview.pooled else "")
    figure.update_layout(title=f"{title_prefix}all layers × heads, {KIND_TITLES[overview.kind]}{note}",
                         height=max(260, 95 * layers), margin=dict(l=30, r=10, t=60, b=10))
    return figure


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


def per_layer_bars(series: dict[str, np.ndarray], title: str, yaxis: str) -> go.Figure:
    """Grouped bars per layer (values averaged over heads), one colour per model."""
    figure = go.Figure()
    for name, values in series.items():
        figure.add_trace(go.Bar(x=[f"L{l}" for l in range(len(values))], y=values, name=name,
                                marker_color=MODEL_COLOURS.get(name[:1])))
    figure.update_layout(title=title, yaxis_title=yaxis, barmode="group", height=320, margin=dict(l=10, r=10, t=50, b=10))
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


def qa_logits(tokens: list[str], start: list[float], end: list[float], title: str) -> go.Figure:
    positions = list(range(len(tokens)))
    figure = go.Figure([go.Scatter(x=positions, y=start, mode="lines+markers", name="start logit", text=tokens),
                        go.Scatter(x=positions, y=end, mode="lines+markers", name="end logit", text=tokens)])
    figure.update_traces(hovertemplate="%{text}<br>%{y:.3f}<extra></extra>")
    step = max(1, len(tokens) // 40)
    figure.update_xaxes(tickvals=positions[::step], ticktext=[_short(t, 12) for t in tokens[::step]], tickangle=-60)
    figure.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=50, b=10))
    return figure


def ablation_kl(tokens: list[str], kl: list[float], changed: list[bool], title: str) -> go.Figure:
    colours = ["#e03131" if c else "#868e96" for c in changed]
    figure = go.Figure(go.Bar(x=list(range(len(kl))), y=kl, marker_color=colours, text=tokens,
                              hovertemplate="%{text}<br>KL %{y:.4f}<extra></extra>"))
    step = max(1, len(tokens) // 40)
    figure.update_xaxes(tickvals=list(range(0, len(tokens), step)), ticktext=[_short(t, 12) for t in tokens[::step]], tickangle=-60)
    figure.update_layout(title=title + " (red: prediction changed)", yaxis_title="KL(original ‖ ablated)", height=320,
                         margin=dict(l=10, r=10, t=50, b=10))
    return figure
