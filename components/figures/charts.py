"""Per-layer and per-position charts: λ against λ_init, A vs B head statistics, QA start / end
logits along the context, and the KL of a λ ablation. Small figures, built with plotly's own checks
but for the λ profile, which every map view sends (``plain``)."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .labels import MODEL_COLOURS, plotly_text, short
from .plain import plain_figure

NOISE_KL = 1e-5  # nats; a KL below this is float32 rounding of identical distributions, drawn as no bar


def lambda_profile(lambdas: dict[str, tuple[list[float], list[float]]]) -> go.Figure:
    """Learned λ per layer against λ_init, for every model that has one (plain: it comes with every map view)."""
    traces = []
    for name, (learned, init) in lambdas.items():
        layers = list(range(len(learned)))
        traces += [dict(type="scatter", x=layers, y=list(learned), mode="lines+markers", name=f"{name}: learned λ"),
                   dict(type="scatter", x=layers, y=list(init), mode="lines", line=dict(dash="dot"), name=f"{name}: λ_init")]
    return plain_figure(traces, dict(
        title=dict(text="λ per layer (one scalar per layer): learned vs λ_init = 0.8 − 0.6·exp(−0.3·layer)"),
        xaxis=dict(title=dict(text="layer"), dtick=1), yaxis=dict(title=dict(text="λ")), height=360,
        margin=dict(l=10, r=10, t=50, b=10)))


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
                        ticktext=[plotly_text(short(t, 12)) for t in labels[::step]])


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
